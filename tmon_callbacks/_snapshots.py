"""What a guard's snapshots of one fit share, whatever a snapshot holds (torch state dicts in
``_guard_torch``, Keras variables' arrays in ``_guard_keras``): memory or disk is chosen once, by the
first snapshot's size against ``Guard.max_memory_bytes``; the last ``Guard.keep`` are kept; a
restore forgets the newer ones; files are removed when dropped and the folder tmon made at the end.
Nothing here imports a framework."""

from __future__ import annotations

import os
import shutil
import tempfile
import time


class Snapshots:
    """``kept``: step -> (the copy, or the path of its file; what the subclass keeps beside it).
    A subclass writes ``save(step)`` and ``restore(step)`` with :meth:`_place`, :meth:`_path`,
    :meth:`_keep` and :meth:`_forget_newer`."""

    def __init__(self, guard) -> None:
        self.guard = guard
        self.kept: dict[int, tuple] = {}
        self.where: str | None = None  # "memory" or "disk", from the first snapshot on
        self.dir: str | None = None
        self._own_dir = False
        self.bytes = 0
        self.copy_s: float | None = None  # what the first snapshot cost

    def _place(self, nbytes: int) -> str:
        if self.where is None:
            self.bytes = nbytes
            self.where = "memory" if nbytes <= self.guard.max_memory_bytes else "disk"
        return self.where

    def _path(self, step: int, suffix: str) -> str:
        if self.dir is None:
            if self.guard.snapshot_dir is not None:
                self.dir = os.fspath(self.guard.snapshot_dir)
                os.makedirs(self.dir, exist_ok=True)
            else:
                self.dir, self._own_dir = tempfile.mkdtemp(prefix="tmon-guard-"), True
        return os.path.join(self.dir, f"guard-{os.getpid()}-step{step}{suffix}")

    def _keep(self, step: int, what, extra, t0: float) -> None:
        self.kept[step] = (what, extra)
        for old in sorted(self.kept)[: -self.guard.keep]:
            self._drop(old)
        if self.copy_s is None:
            self.copy_s = time.perf_counter() - t0

    def _forget_newer(self, step: int) -> None:
        for newer in [s for s in self.kept if s > step]:
            self._drop(newer)

    def _drop(self, step: int) -> None:
        what, _ = self.kept.pop(step)
        if isinstance(what, str):
            try:
                os.remove(what)
            except OSError:
                pass

    def describe(self) -> dict:
        return {
            "where": self.where,
            "dir": self.dir,
            "bytes": self.bytes,
            "copy_s": None if self.copy_s is None else round(self.copy_s, 6),
        }

    def close(self) -> None:
        for step in list(self.kept):
            self._drop(step)
        if self._own_dir and self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
