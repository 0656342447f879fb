"""Metric logs without wall times -> tmon runs: Lightning's and Keras' ``CSVLogger`` files and
Hugging Face's ``trainer_state.json``.

* Lightning ``CSVLogger`` (``metrics.csv`` with a ``step`` column, blank cells where a key was not
  logged): every non-blank cell is a point at its row's step, ``epoch`` included; the
  ``hparams.yaml`` beside it becomes the run's ``hparams``.
* Keras ``CSVLogger`` (an ``epoch`` column, no ``step``): one point per epoch at step = epoch;
  ``learning_rate`` is stored as ``lr``, the name tmon's Keras callback records it under.
* HF ``trainer_state.json``: each ``log_history`` entry's numbers at its ``step``;
  ``learning_rate`` is ``lr`` as tmon's HF callback records it; the state's settings
  (``max_steps``, ``train_batch_size``, ``logging_steps``...) become ``hparams``.

None of these files holds wall times: every point gets the file's modification time, and the
run's config says so (``imported_from.wall_times = "file mtime"``).
"""

from __future__ import annotations

import csv
import json
import os

from ._common import Imported, RunWriter, clean_hparams, file_digest, find_imported

LIGHTNING, KERAS, HF = "lightning-csv", "keras-csv", "hf-trainer-state"
_RENAME = {KERAS: {"learning_rate": "lr"}, HF: {"learning_rate": "lr"}}


def _num(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return None  # a text cell (Keras writes lists of values as text): not a scalar


def _name(path: str) -> str:
    d = os.path.dirname(os.path.abspath(path))
    return os.path.join(os.path.basename(os.path.dirname(d)), os.path.basename(d))


def detect(path: str) -> str:
    """Which of the three formats ``path`` is (``ValueError`` when none)."""
    if path.endswith(".json"):
        return HF
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    if "step" in header:
        return LIGHTNING
    if "epoch" in header:
        return KERAS
    raise ValueError(
        f"{path}: neither a Lightning CSVLogger file (a 'step' column) nor a Keras one (an 'epoch' "
        f"column); its columns: {', '.join(header[:20]) or 'none'}"
    )


def _rows_csv(path: str, fmt: str):
    """(step, {key: value}) per row."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for row in reader:
            if fmt == LIGHTNING:
                step = _num(row.pop("step", "") or "")
            else:
                step = _num(row.get("epoch", "") or "")
                row.pop("epoch", None)
            if step is None:
                continue
            vals = {}
            for k, v in row.items():
                if k is None:
                    continue  # cells beyond the header
                x = _num(v or "")
                if x is not None:
                    vals[k] = x
            yield int(step), vals


def _rows_hf(state: dict):
    for entry in state.get("log_history") or ():
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
            continue
        vals = {
            k: float(v)
            for k, v in entry.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        yield entry["step"], vals


def import_csv(
    path: str | os.PathLike, store=None, *, name: str | None = None, fmt: str | None = None
) -> list[Imported]:
    """Import a Lightning/Keras ``CSVLogger`` file or a ``trainer_state.json`` (a directory: its
    ``metrics.csv`` or ``trainer_state.json``) into ``store`` as one run."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for candidate in ("metrics.csv", "trainer_state.json"):
            if os.path.isfile(os.path.join(path, candidate)):
                path = os.path.join(path, candidate)
                break
        else:
            raise FileNotFoundError(f"no metrics.csv or trainer_state.json in {path!r}")
    path = os.path.abspath(path)
    fmt = fmt or detect(path)
    fp = file_digest([path])
    existing = find_imported(store, fp)
    if existing is not None:
        return [Imported(existing, path, False)]
    wall = os.path.getmtime(path)
    rename = _RENAME.get(fmt, {})
    if fmt == HF:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        rows = _rows_hf(state)
        hparams = {k: v for k, v in state.items() if k not in ("log_history",)}
    else:
        rows = _rows_csv(path, fmt)
        hp_path = os.path.join(os.path.dirname(path), "hparams.yaml")
        hparams = None
        if os.path.isfile(hp_path):
            from .tensorboard import _hparams

            hparams = _hparams(os.path.dirname(path))
    w = RunWriter(
        store,
        name=name or _name(path),
        framework=fmt,
        fp=fp,
        source=path,
        fmt=fmt,
        hparams=clean_hparams(hparams),
        extra={"wall_times": "file mtime"},
    )
    n, max_step, keys = 0, None, set()
    for step, vals in rows:
        if rename:
            vals = {rename.get(k, k): v for k, v in vals.items()}
        if not vals:
            continue
        w.log(vals, step, wall_time=wall)
        n += len(vals)
        keys.update(vals)
        max_step = step if max_step is None else max(max_step, step)
    w.checkpoints(os.path.dirname(path))
    w.points, w.keys = n, keys
    w.close(first_wall=wall, last_wall=wall, last_step=max_step)
    return [w.result(path)]
