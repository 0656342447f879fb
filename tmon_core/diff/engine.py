"""``diff(a, b)``: what changed between two checkpoints, tensor by tensor, plus their parameters
and metrics.

Each side is a recorded checkpoint id (a row of ``tmon_checkpoints``) or a path. Tensors are
matched by name (after removing wrapper prefixes such as ``module.`` or ``_orig_mod.`` when that is
what makes the names meet) and compared one pair at a time, a slice at a time (``compare.py``), so
memory stays at a few slices whatever the checkpoints' size.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checkpoints import Checkpoint, CheckpointError, TensorInfo, open_checkpoint
from ..checkpoints.base import flatten
from . import compare
from .result import CheckpointDiff

#: prefixes wrappers put in front of every name: DDP/DataParallel, torch.compile, a LightningModule's self.model
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")

_ITEMSIZE = {"bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1}


@dataclass
class Side:
    ref: Any
    ck: Checkpoint
    row: dict | None = None
    metrics: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def describe(self) -> dict:
        row = self.row or {}
        step = self.ck.step if self.ck.step is not None else row.get("step")
        epoch = self.ck.epoch if self.ck.epoch is not None else row.get("epoch")
        return {
            "ref": self.ref if isinstance(self.ref, int) else os.fspath(self.ref),
            "path": self.ck.path,
            "format": self.ck.format,
            "id": row.get("id"),
            "run_id": row.get("run_id"),
            "step": None if step is None else int(step),
            "epoch": None if epoch is None else float(epoch),
            "tensors": len(self.ck.tensors),
        }


def diff(a, b, *, store=None) -> CheckpointDiff:
    """Compare checkpoint ``a`` (before) with ``b`` (after).

    ``a`` and ``b``: a recorded checkpoint id (``int``, the ``id`` column of ``Run.checkpoints()``)
    or a path to a checkpoint file or directory. ``store``: the store ids are looked up in (a URL,
    a SQLite path or an open ``Store``; default ``$TMON_STORE`` or ``sqlite:///tmon.db``). When
    ``store`` is given, a path recorded in it also gets the run's metrics.

    >>> d = diff("ckpts/epoch=0-step=12.ckpt", "ckpts/epoch=1-step=24.ckpt")   # doctest: +SKIP
    >>> d.summary["changed"], d.top(5), d.params, d.metrics                   # doctest: +SKIP

    Raises ``CheckpointError`` (a ``ValueError``) naming the file and the reason for a missing,
    truncated, corrupt or unsupported file, a pickle ``weights_only`` refuses, an unknown id, or two
    checkpoints without a tensor name in common.
    """
    t0 = time.perf_counter()
    stores: dict = {}
    sides: list[Side] = []
    try:
        for ref in (a, b):
            sides.append(_open_side(ref, store, stores))
        sa, sb = sides
        pairs, mapping = match_names(list(sa.ck.tensors), list(sb.ck.tensors))
        if not any(na is not None and nb is not None for na, nb, _ in pairs):
            raise CheckpointError(
                None,
                f"{sa.ck.path} and {sb.ck.path} have no tensor names in common: unrelated "
                f"models? (a: {_sample(sa.ck.tensors)}; b: {_sample(sb.ck.tensors)})",
            )
        with ThreadPoolExecutor(1, thread_name_prefix="tmon-diff-read") as pool:
            rows, totals = _compare_all(sa.ck, sb.ck, pairs, pool)
        notes = [f"a: {n}" for n in sa.ck.notes] + [f"b: {n}" for n in sb.ck.notes] + totals.pop("notes")
        summary = {"a": sa.describe(), "b": sb.describe(), **totals, "name_mapping": mapping}
        result = CheckpointDiff(
            summary,
            rows,
            _params(sa.params, sb.params),
            _metrics(sa.metrics, sb.metrics),
            notes,
            _changes_between(sa, sb, stores),
        )
        result.summary["params_changed"] = int(len(result.params))
        result.summary["seconds"] = time.perf_counter() - t0
        return result
    finally:
        for s in sides:
            s.ck.close()
        for st, owned in stores.values():
            if owned:
                st.close()


# ------------------------------------------------------------------ sides
def _open_side(ref, store, stores: dict) -> Side:
    from . import recorded

    def get_store():
        if "s" not in stores:
            stores["s"] = recorded.open_store_for(store)
        return stores["s"][0]

    if isinstance(ref, bool) or not isinstance(ref, (int, np.integer, str, os.PathLike)):
        raise CheckpointError(
            None, f"a checkpoint is a recorded checkpoint id (int) or a path, received {ref!r}"
        )
    row = None
    if isinstance(ref, (int, np.integer)):
        ref = int(ref)
        row = recorded.checkpoint_row(get_store(), ref)
        recorded.check_current(get_store(), row)
        ck = open_checkpoint(row["path"])
    else:
        ck = open_checkpoint(ref)
        if store is not None:
            row = recorded.row_for_path(get_store(), ck.path)
    if not ck.tensors:
        ck.close()
        raise CheckpointError(ck.path, "holds no tensors")
    side = Side(ref, ck, row, params=dict(ck.params))
    if row is not None:
        try:
            _recorded_context(side, get_store())
        except BaseException:
            ck.close()
            raise
    side.metrics.update({k: v for k, v in ck.metrics.items() if k not in side.metrics})
    return side


def _recorded_context(side: Side, store) -> None:
    from ..store import Run
    from . import recorded

    row = side.row
    run = Run(store, row["run_id"])
    side.metrics.update(recorded.metrics_at(run, row["step"], row["wall_time"]))
    if row.get("monitor") and row["monitor"] not in side.metrics and row.get("monitor_value") is not None:
        side.metrics[row["monitor"]] = (float(row["monitor_value"]), row["step"])
    try:
        config = run.info().get("config") or {}
    except KeyError:
        config = {}
    flatten("run", config, side.params)
    side.params["run.id"] = row["run_id"]


def _changes_between(sa: Side, sb: Side, stores: dict) -> list[dict]:
    """Parameter changes tmon's controller applied between two checkpoints of one run (schedules,
    requests from the widget, API or CLI), from the run's ``param_change`` events."""
    ra, rb = sa.row, sb.row
    if not ra or not rb or ra["run_id"] != rb["run_id"] or ra["step"] is None or rb["step"] is None:
        return []
    from ..store import Run

    try:
        from ..control import PARAM_CHANGE
    except ImportError:  # a build without the control feature records no changes
        return []
    lo, hi = sorted((ra["step"], rb["step"]))
    ev = Run(stores["s"][0], ra["run_id"]).events(PARAM_CHANGE)
    ev = ev[ev.step.notna() & (ev.step >= lo) & (ev.step < hi)]  # applied at step s: batch s ran with it
    out = []
    for step, message, data in zip(ev.step, ev.message, ev.data, strict=True):
        data = data if isinstance(data, dict) else {}
        out.append(
            {
                "step": int(step),
                "change": message,
                "source": data.get("source"),
                "request_id": data.get("request_id"),
                "old": data.get("old"),
                "new": data.get("new"),
            }
        )
    return out


def _sample(tensors: dict, n: int = 3) -> str:
    names = list(tensors)
    return ", ".join(names[:n]) + (f" ... ({len(names)} tensors)" if len(names) > n else "")


# ------------------------------------------------------------------ names
def _strip_options(names: list[str]) -> list[str]:
    """Prefixes every name of one side starts with, that removing might make them meet the other side."""
    options = [""]
    prefix = ""
    while True:
        nxt = next(
            (p for p in WRAPPER_PREFIXES if names and all(n.startswith(prefix + p) for n in names)), None
        )
        if nxt is None:
            break
        prefix += nxt
        options.append(prefix)
    return options


def match_names(names_a: list[str], names_b: list[str]) -> tuple[list[tuple], str | None]:
    """Pairs ``(name_a or None, name_b or None, shown name)``: a's order, then names only b has."""
    best = None
    for pa in _strip_options(names_a):
        for pb in _strip_options(names_b):
            ka = {n[len(pa) :]: n for n in names_a}
            kb = {n[len(pb) :]: n for n in names_b}
            common = len(ka.keys() & kb.keys())
            if best is None or common > best[0]:
                best = (common, pa, pb, ka, kb)
    _, pa, pb, ka, kb = best
    pairs = [(na, kb.get(k), k) for k, na in ka.items()]
    pairs += [(None, nb, k) for k, nb in kb.items() if k not in ka]
    mapping = None
    if pa or pb:
        mapping = f"names matched after removing {pa!r} from a and {pb!r} from b".replace(
            "'' from a and ", ""
        ).replace(" and '' from b", "")
    return pairs, mapping


# ------------------------------------------------------------------ tensors
def _itemsize(dtype: str) -> int:
    if dtype in _ITEMSIZE:
        return _ITEMSIZE[dtype]
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 0


def _reader(ck: Checkpoint, name: str):
    return lambda start, stop: ck.read(name, start, stop)


def _compare_all(ca: Checkpoint, cb: Checkpoint, pairs, pool) -> tuple[list[dict], dict]:
    rows = []
    tot = compare.TensorStats()
    counts = dict.fromkeys(("changed", "unchanged", "added", "removed", "shape_changed", "skipped"), 0)
    notes: list[str] = []
    bytes_read = 0
    for na, nb, name in pairs:
        ia: TensorInfo | None = ca.tensors.get(na) if na is not None else None
        ib: TensorInfo | None = cb.tensors.get(nb) if nb is not None else None
        info = ib or ia
        row = {
            "name": name,
            "status": None,
            "shape": info.shape,
            "dtype": info.dtype,
            "shape_a": ia.shape if ia else None,
            "dtype_a": ia.dtype if ia else None,
            "numel": info.numel,
            "norm_a": math.nan,
            "norm_b": math.nan,
            "norm_diff": math.nan,
            "rel_change": math.nan,
            "cosine": math.nan,
            "max_abs_diff": math.nan,
            "frac_changed": math.nan,
        }
        why = (ca.unreadable.get(na) if na is not None else None) or (
            cb.unreadable.get(nb) if nb is not None else None
        )
        if why:
            row["status"] = "skipped"
            notes.append(f"{name}: not compared, {why}")
        else:
            try:
                bytes_read += _compare_pair(row, ca, cb, na, nb, ia, ib, tot, pool)
            except (OSError, MemoryError, RuntimeError) as exc:  # CheckpointError passes: it names its file
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                raise CheckpointError(
                    None,
                    f"reading tensor {name!r} of {ca.path} / {cb.path} failed "
                    f"({type(exc).__name__}: {first})",
                ) from None
        counts[row["status"]] += 1
        rows.append(row)
    compared = counts["changed"] + counts["unchanged"]
    totals = {
        "tensors": len(rows),
        "compared": compared,
        **counts,
        "numel_compared": tot.numel,
        "elements_changed": tot.n_changed,
        "frac_changed": tot.frac_changed,
        "rel_change": tot.rel_change,
        "cosine": tot.cosine,
        "norm_a": tot.norm_a,
        "norm_b": tot.norm_b,
        "bytes_read": bytes_read,
        "notes": notes,
    }
    return rows, totals


def _compare_pair(
    row: dict,
    ca: Checkpoint,
    cb: Checkpoint,
    na,
    nb,
    ia: TensorInfo | None,
    ib: TensorInfo | None,
    tot: compare.TensorStats,
    pool,
) -> int:
    """Fill ``row`` with the numbers of one pair (or one side); the bytes read."""
    bytes_read = 0
    if ia is None or ib is None:
        row["status"] = "added" if ia is None else "removed"
        ck, n, i = (cb, nb, ib) if ia is None else (ca, na, ia)
        norm = math.sqrt(compare.norm_sq(_reader(ck, n), i.shape, pool))
        row["norm_b" if ia is None else "norm_a"] = norm
        bytes_read += i.numel * _itemsize(i.dtype)
    elif ia.shape != ib.shape:
        row["status"] = "shape_changed"
        row["norm_a"] = math.sqrt(compare.norm_sq(_reader(ca, na), ia.shape, pool))
        row["norm_b"] = math.sqrt(compare.norm_sq(_reader(cb, nb), ib.shape, pool))
        bytes_read += ia.numel * _itemsize(ia.dtype) + ib.numel * _itemsize(ib.dtype)
    else:
        st = compare.compare(_reader(ca, na), _reader(cb, nb), ia.shape, pool)
        bytes_read += ia.numel * (_itemsize(ia.dtype) + _itemsize(ib.dtype))
        row.update(
            norm_a=st.norm_a,
            norm_b=st.norm_b,
            norm_diff=st.norm_diff,
            rel_change=st.rel_change,
            cosine=st.cosine,
            max_abs_diff=st.max_abs_diff,
            frac_changed=st.frac_changed,
        )
        row["status"] = "changed" if st.n_changed else "unchanged"
        for k in ("numel", "sq_a", "sq_b", "sq_diff", "dot", "n_changed"):
            setattr(tot, k, getattr(tot, k) + getattr(st, k))
    return bytes_read


# ------------------------------------------------------------------ params and metrics
def _same(x, y) -> bool:
    if isinstance(x, float) and isinstance(y, float) and x != x and y != y:
        return True
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_same(p, q) for p, q in zip(x, y, strict=True))
    return (
        type(x) is type(y)
        and x == y
        or (
            isinstance(x, (int, float))
            and isinstance(y, (int, float))
            and not isinstance(x, bool)
            and not isinstance(y, bool)
            and x == y
        )
    )


_MISSING = object()


def _params(pa: dict, pb: dict) -> list[dict]:
    rows = []
    for key in list(pa) + [k for k in pb if k not in pa]:
        x, y = pa.get(key, _MISSING), pb.get(key, _MISSING)
        status = (
            "added" if x is _MISSING else "removed" if y is _MISSING else "same" if _same(x, y) else "changed"
        )
        rows.append(
            {
                "key": key,
                "a": None if x is _MISSING else x,
                "b": None if y is _MISSING else y,
                "status": status,
            }
        )
    return rows


def _metrics(ma: dict, mb: dict) -> list[dict]:
    rows = []
    for key in sorted(ma.keys() | mb.keys()):
        (va, sa), (vb, sb) = ma.get(key, (math.nan, None)), mb.get(key, (math.nan, None))
        rows.append({"key": key, "a": va, "b": vb, "change": vb - va, "step_a": sa, "step_b": sb})
    return rows
