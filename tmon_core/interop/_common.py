"""What every importer shares: the source fingerprint that keeps a re-import from duplicating a
run, and writing one imported run through the public ``Recorder``.

An imported run is an ordinary tmon run: its ``framework`` names the source format
(``tensorboard``, ``mlflow``, ``lightning-csv``, ``keras-csv``, ``hf-trainer-state``), its config
holds the source's parameters under ``hparams`` (``RunConfig``'s field) and where it came from
under ``imported_from``, and it carries the tag ``import:<fingerprint>``, by which a second import
of the same source finds it through ``Store.runs()`` instead of writing it again.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import events as ev
from ..recorder import Recorder
from ..store import open_store

TAG_PREFIX = "import:"


@dataclass
class Imported:
    """One source run and what the import did with it: ``created`` False when the store already
    had it (``run_id`` is then the existing run)."""

    run_id: str
    source: str
    created: bool
    points: int = 0
    keys: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        what = (
            f"imported {self.points} points of {len(self.keys)} keys as"
            if self.created
            else "already in the store as"
        )
        return f"{self.source}: {what} run {self.run_id}"


def fingerprint(*parts: Any) -> str:
    """A short stable hash of ``parts`` (str/bytes): the identity of an imported source."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:24]


def file_digest(paths: Iterable[str | os.PathLike]) -> str:
    """The fingerprint of the files' contents (names left out: a moved log is the same source)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        h.update(b"\0file\0")
    return h.hexdigest()[:24]


def find_imported(store: str | os.PathLike | None, fp: str) -> str | None:
    """The id of the run imported from the source with fingerprint ``fp``, or None."""
    tag = TAG_PREFIX + fp
    with open_store(store) as s:
        runs = s.runs()
    for rid, tags in zip(runs["id"], runs["tags"]):
        if tag in (tags or ()):
            return rid
    return None


class RunWriter:
    """Writes one imported run: ``log`` points with their own steps and wall times, then ``close``
    with the source's start/end times and status. Wall times the source lacks are the caller's
    to choose (and say so in ``imported_from``)."""

    def __init__(
        self,
        store,
        *,
        name: str,
        framework: str,
        fp: str,
        source: str,
        fmt: str,
        hparams: dict | None = None,
        extra: dict | None = None,
        tags: list[str] | None = None,
    ):
        config: dict = {
            "imported_from": {"format": fmt, "source": source, "fingerprint": fp, **(extra or {})}
        }
        if hparams:
            config["hparams"] = hparams
        self.rec = Recorder(
            store,
            run_name=name[:250] or framework,
            framework=framework,
            config=config,
            tags=[TAG_PREFIX + fp, *(tags or ())],
            flush_interval=1.0,
            heartbeat_timeout=60.0,
        )
        self.log = self.rec.log  # log(values, step, wall_time=...): the Recorder's own hot path
        self.run_id = self.rec.run_id
        self.points = 0
        self.keys: set[str] = set()

    def checkpoints(self, log_dir: str) -> None:
        """Record the checkpoints found beside the source's log (``find_checkpoints``)."""
        for path, step, epoch in find_checkpoints(log_dir):
            self.rec.checkpoint(path, step=step, epoch=epoch, source="import")

    def close(
        self,
        *,
        first_wall: float | None,
        last_wall: float | None,
        last_step: int | None,
        status: str = ev.COMPLETED,
        error: dict | None = None,
    ) -> None:
        """End the run as the source ended it: created/ended at the source's first and last wall
        times, ``last_step`` the largest step (points may come in any order)."""
        self.rec.flush(120.0)
        fields: dict[str, Any] = {"status": status}
        if first_wall is not None and math.isfinite(first_wall):
            fields["created_at"] = float(first_wall)
        if last_wall is not None and math.isfinite(last_wall):
            fields["ended_at"] = float(last_wall)
        if last_step is not None:
            fields["last_step"] = int(last_step)
        if error is not None:
            from ..jsonable import to_json

            fields["error"] = to_json(error)
        self.rec.update_run(pid=None, **fields)
        self.rec.close(None)  # the status is the source's, set above, not "completed" by default
        if self.rec.dropped:
            raise RuntimeError(
                f"tmon could not write {self.rec.dropped} points of the imported run {self.run_id}: "
                f"{'; '.join(self.rec.problems[-3:])}"
            )

    def result(self, source: str) -> Imported:
        return Imported(self.run_id, source, True, self.points, sorted(self.keys))


def clean_hparams(d: Any) -> Any:
    """A JSON-safe copy of parameters as the source gave them (strings stay strings)."""
    if isinstance(d, dict):
        return {str(k): clean_hparams(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [clean_hparams(v) for v in d]
    if d is None or isinstance(d, (bool, int, float, str)):
        return d
    return str(d)


_STEP = re.compile(r"(?:^|[-_=])step=?(\d+)")
_EPOCH = re.compile(r"(?:^|[-_])epoch=(\d+)")
_HF_CKPT = re.compile(r"^checkpoint-(\d+)$")


def find_checkpoints(log_dir: str) -> list[tuple[str, int | None, float | None]]:
    """The checkpoints a source run left beside its log, as (path, step, epoch): Lightning's
    ``<log dir>/checkpoints/*.ckpt`` (step and epoch from the name, as ``ModelCheckpoint`` names
    them), HF's ``checkpoint-<step>`` directories beside the one holding ``trainer_state.json``.
    Recorded with the imported run, so ``tmon diff`` and the checkpoint views find them."""
    out = []
    lightning = os.path.join(log_dir, "checkpoints")
    if os.path.isdir(lightning):
        for name in sorted(os.listdir(lightning)):
            if name.endswith(".ckpt"):
                step, epoch = _STEP.search(name), _EPOCH.search(name)
                out.append(
                    (
                        os.path.join(lightning, name),
                        int(step.group(1)) if step else None,
                        float(epoch.group(1)) if epoch else None,
                    )
                )
    if _HF_CKPT.match(os.path.basename(log_dir)):
        parent = os.path.dirname(log_dir)
        for name in sorted(
            os.listdir(parent), key=lambda n: int(m.group(1)) if (m := _HF_CKPT.match(n)) else -1
        ):
            m = _HF_CKPT.match(name)
            if m and os.path.isdir(os.path.join(parent, name)):
                out.append((os.path.join(parent, name), int(m.group(1)), None))
    return out
