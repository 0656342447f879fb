"""Is what tmon recorded exactly what happened? Compare a run with the framework's own file log.

Framework-free: both sides are *tables*, ``{key: [(step, value), ...]}`` in the order written,
read from tmon's store (``read_run``) and from the framework's own logger (``read_csv`` for
Lightning's ``CSVLogger`` or Keras' ``CSVLogger``, ``from_records`` for HF's
``trainer.state.log_history``). ``compare`` checks every key the framework logged, at every step,
value by value; each deliberate difference between the two is a rule object, stated in the test
with the reason it exists::

    result = compare(read_run(store_url, run_id), read_csv(csv_path), rules=[
        AtReferenceSteps(why="tmon keeps every step; Lightning throttles to log_every_n_steps"),
        Rename("loss", "train_loss_step", why="the loss training_step returned, logged by the model"),
    ])
    result.check()  # AssertionError naming each mismatch: key, step, tmon's value, the framework's

A key the framework logged and tmon lacks is a mismatch (tmon must not lose what the user
logged); keys only tmon has (``lr``, ``step_time``...) are not compared unless a rule pairs them.
At one step the values are compared in the order written, and a different number of values at
a step is a mismatch of its own (one value per optimizer step, not one per micro-batch).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Table = dict  # key -> list[(step, value)]


# ---------------------------------------------------------------------------- reading both sides
def read_run(store: str, run_id: str, keys: Iterable[str] | None = None) -> Table:
    """tmon's record of run ``run_id``: every metric (or ``keys``), each point (step, value) in
    step order, several values at one step in the order they were written."""
    from tmon_core import open_store

    run = open_store(store).run(run_id)
    table: Table = {}
    for key in run.metric_keys() if keys is None else keys:
        df = run.metrics(key)
        df = df.sort_values(["step", "wall_time"], kind="stable")
        table[key] = [(int(s), float(v)) for s, v in zip(df.step, df.value)]
    return table


def from_records(records: Iterable[Mapping], step_key: str = "step", skip: Iterable[str] = ()) -> Table:
    """A table from logged dicts, each holding its step under ``step_key`` (HF's
    ``trainer.state.log_history``). Values that are not numbers (strings, lists) are left out,
    as are the keys in ``skip``."""
    skip = set(skip) | {step_key}
    table: Table = {}
    for rec in records:
        if rec.get(step_key) is None:
            continue
        step = int(rec[step_key])
        for k, v in rec.items():
            if k in skip or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            table.setdefault(k, []).append((step, float(v)))
    return table


def read_csv(path, step_column: str = "step", skip: Iterable[str] = ()) -> Table:
    """A framework's CSV log: Lightning's ``CSVLogger`` ``metrics.csv`` (a row per ``log_metrics``
    call, an empty cell where that call had no such key) or Keras' ``CSVLogger`` (a row per epoch:
    ``step_column="epoch"``)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    records = []
    for row in rows:
        rec = {}
        for k, v in row.items():
            if v is None or v == "":
                continue
            try:
                rec[k] = float(v)
            except ValueError:
                continue
        if step_column in rec:
            records.append(rec)
    return from_records(records, step_key=step_column, skip=skip)


# ---------------------------------------------------------------------------- the deliberate differences
@dataclass
class Rule:
    """One deliberate difference between tmon and the framework's log. ``keys``: the framework's
    keys it applies to (None: all). ``why`` says why the difference exists; the report prints it."""

    why: str = ""
    keys: tuple | None = None

    def covers(self, key: str) -> bool:
        return self.keys is None or key in self.keys

    def pairs(self, pairs: list, tmon: Table, ref: Table) -> None:
        """Adjust which tmon key each framework key is compared with (``pairs``: a list of
        (ref key, tmon key), at first each framework key with its own name)."""

    def points(self, key: str, tmon_pts: list, ref_pts: list) -> tuple[list, list]:
        return tmon_pts, ref_pts

    def tolerance(self, key: str) -> tuple[float, float] | None:
        return None


@dataclass
class Rename(Rule):
    """tmon's ``tmon_key`` is compared with the framework's ``ref_key`` in place of tmon's own
    ``ref_key`` (a value tmon stores under its cross-framework name only, e.g. HF's
    ``learning_rate`` as ``lr``)."""

    tmon_key: str = ""
    ref_key: str = ""

    def __init__(self, tmon_key: str, ref_key: str, why: str = ""):
        super().__init__(why=why, keys=(ref_key,))
        self.tmon_key, self.ref_key = tmon_key, ref_key

    def pairs(self, pairs, tmon, ref):
        if self.ref_key in ref:
            pairs[:] = [p for p in pairs if p[0] != self.ref_key]
            pairs.append((self.ref_key, self.tmon_key))


class Also(Rename):
    """tmon's ``tmon_key`` is compared with the framework's ``ref_key`` as well as tmon's own
    ``ref_key`` (e.g. tmon's ``loss`` with the loss the user logs under a name of their own, which
    tmon records as is too)."""

    def pairs(self, pairs, tmon, ref):
        if self.ref_key in ref:
            pairs.append((self.ref_key, self.tmon_key))


@dataclass
class Ignore(Rule):
    """The framework's ``keys`` are not compared (e.g. a value the framework computes that tmon
    does not record by design)."""

    def __init__(self, *keys: str, why: str = ""):
        super().__init__(why=why, keys=tuple(keys))

    def pairs(self, pairs, tmon, ref):
        pairs[:] = [p for p in pairs if p[0] not in self.keys]


@dataclass
class AtReferenceSteps(Rule):
    """tmon has per-step values the framework throttles (``log_every_n_steps``, ``logging_steps``):
    compare at the framework's steps only."""

    def points(self, key, tmon_pts, ref_pts):
        if not self.covers(key):
            return tmon_pts, ref_pts
        steps = {s for s, _ in ref_pts}
        return [p for p in tmon_pts if p[0] in steps], ref_pts


@dataclass
class RepeatedInEveryRow(Rule):
    """The framework writes ``keys`` into every row it logs, whatever the row is about (Lightning's
    ``epoch``: in validation, epoch-end and evaluation rows too), so one step can hold several
    values, or a value at a step with no training record: at each step tmon has, tmon's value must
    be one of the framework's there; the framework's other rows are not compared."""

    def points(self, key, tmon_pts, ref_pts):
        if not self.covers(key):
            return tmon_pts, ref_pts
        theirs = _by_step(ref_pts)
        keep_tmon, keep_ref = [], []
        for s, vs in _by_step(tmon_pts).items():
            if s not in theirs:
                continue
            # one framework value per step: tmon's several values at one step stay a mismatch
            keep_tmon += [(s, v) for v in vs]
            keep_ref.append((s, next((w for w in theirs[s] if _same(vs[0], w, 1e-9, 0.0)), theirs[s][0])))
        return keep_tmon, keep_ref


@dataclass
class StepOffset(Rule):
    """The framework counts steps from another origin (e.g. HF's steps start at 1): ``offset`` is
    added to the framework's steps before comparing."""

    offset: int = 0

    def __init__(self, offset: int, keys: tuple | None = None, why: str = ""):
        super().__init__(why=why, keys=keys)
        self.offset = offset

    def points(self, key, tmon_pts, ref_pts):
        if not self.covers(key):
            return tmon_pts, ref_pts
        return tmon_pts, [(s + self.offset, v) for s, v in ref_pts]


@dataclass
class Tolerance(Rule):
    """Values compared within ``rel``/``abs_tol`` instead of the default (e.g. a value the framework
    rounds when it writes its file)."""

    rel: float = 1e-6
    abs_tol: float = 0.0

    def __init__(self, rel: float, abs_tol: float = 0.0, keys: tuple | None = None, why: str = ""):
        super().__init__(why=why, keys=keys)
        self.rel, self.abs_tol = rel, abs_tol

    def tolerance(self, key):
        return (self.rel, self.abs_tol) if self.covers(key) else None


# ---------------------------------------------------------------------------- comparing
@dataclass
class Mismatch:
    key: str
    step: int | None
    tmon: object
    reference: object
    what: str

    def __str__(self) -> str:
        at = "" if self.step is None else f" at step {self.step}"
        return f"{self.key}{at}: tmon {self.tmon!r}, framework {self.reference!r} ({self.what})"


@dataclass
class Result:
    mismatches: list[Mismatch] = field(default_factory=list)
    compared: dict = field(default_factory=dict)  # (ref key, tmon key) -> points compared
    rules: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def __str__(self) -> str:
        lines = [f"{len(self.mismatches)} mismatch(es) over {len(self.compared)} key(s) compared"]
        by_key: dict[str, int] = {}
        for m in self.mismatches:
            by_key[m.key] = by_key.get(m.key, 0) + 1
        if by_key:
            lines.append("per key: " + ", ".join(f"{k}: {n}" for k, n in sorted(by_key.items())))
        lines += [f"  {m}" for m in self.mismatches[:60]]
        if len(self.mismatches) > 60:
            lines.append(f"  ... {len(self.mismatches) - 60} more")
        if self.rules:
            lines.append("rules: " + "; ".join(f"{type(r).__name__}: {r.why}" for r in self.rules if r.why))
        return "\n".join(lines)

    def check(self) -> Result:
        if self.mismatches:
            raise AssertionError("tmon differs from the framework's own log:\n" + str(self))
        return self


def _same(a: float, b: float, rel: float, abs_tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)


def _by_step(points: list) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for s, v in points:
        out.setdefault(s, []).append(v)
    return out


def compare(
    tmon: Table,
    ref: Table,
    rules: Iterable[Rule] = (),
    *,
    rel: float = 1e-6,
    abs_tol: float = 1e-12,
    require: Iterable[str] = (),
) -> Result:
    """Compare every key of ``ref`` (the framework's log) with tmon's, at every step.

    ``rel``/``abs_tol``: the default tolerance (a CSV file holds ~15 significant digits; tmon stores
    float64 bit for bit). ``require``: framework keys that must be among those compared, so a
    configuration cannot pass by comparing nothing."""
    rules = list(rules)
    result = Result(rules=rules)
    pairs: list[tuple[str, str]] = [(k, k) for k in ref]
    for r in rules:
        r.pairs(pairs, tmon, ref)
    for rkey, tkey in sorted(set(pairs)):
        ref_pts = ref.get(rkey, [])
        if tkey not in tmon:
            result.mismatches.append(
                Mismatch(rkey, None, None, f"{len(ref_pts)} point(s)", f"tmon has no {tkey!r}")
            )
            continue
        tmon_pts = tmon[tkey]
        tol = None
        for r in rules:
            tmon_pts, ref_pts = r.points(rkey, tmon_pts, ref_pts)
            tol = r.tolerance(rkey) or tol
        r_rel, r_abs = tol or (rel, abs_tol)
        result.compared[(rkey, tkey)] = len(ref_pts)
        got, want = _by_step(tmon_pts), _by_step(ref_pts)
        name = rkey if tkey == rkey else f"{rkey} (tmon {tkey})"
        for step in sorted(got.keys() | want.keys()):
            g, w = got.get(step, []), want.get(step, [])
            if len(g) != len(w):
                what = (
                    "tmon has no value at this step"
                    if not g
                    else "only tmon has a value at this step"
                    if not w
                    else f"{len(g)} value(s) in tmon, {len(w)} in the framework"
                )
                result.mismatches.append(
                    Mismatch(
                        name,
                        step,
                        g[0] if len(g) == 1 else g or None,
                        w[0] if len(w) == 1 else w or None,
                        what,
                    )
                )
                continue
            for a, b in zip(g, w):
                if not _same(a, b, r_rel, r_abs):
                    result.mismatches.append(Mismatch(name, step, a, b, "values differ"))
    compared_keys = {k for k, _ in result.compared}
    for k in require:
        if k not in compared_keys:
            result.mismatches.append(
                Mismatch(
                    k,
                    None,
                    None,
                    None,
                    "required key was not compared: "
                    "the framework's log has no such key, or a rule left it out",
                )
            )
    if not result.compared:
        result.mismatches.append(Mismatch("*", None, None, None, "no key was compared"))
    return result
