"""The training process and its children (dataloader workers): RSS and count.

``psutil.Process().children()`` scans every process on the machine (~1 ms here), too slow to
run each second. On Linux the kernel lists a thread's children in
``/proc/<pid>/task/<tid>/children``; tmon reads that for the main thread every sample (a few
µs) and runs the full psutil scan only every ``full_scan_every`` samples, to catch children
forked from other threads. Children RSS counts shared copy-on-write pages once per worker, as
``top`` does.
"""

from __future__ import annotations

import os

import psutil

from .base import Collector


def _proc_children(pid: int) -> list[int] | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return None


class ProcessCollector(Collector):
    name = "process"

    def __init__(self, pid: int | None = None, full_scan_every: int = 30) -> None:
        self.pid = pid or os.getpid()
        self.full_scan_every = full_scan_every
        self._n = 0
        self._proc = psutil.Process(self.pid)
        self._children: dict[int, psutil.Process] = {}
        self._fast = _proc_children(self.pid) is not None

    def _child_pids(self) -> set[int]:
        pids: set[int] = set()
        if self._fast:
            frontier = [self.pid]
            while frontier:
                nxt = []
                for p in frontier:
                    kids = _proc_children(p) or []
                    nxt += [k for k in kids if k not in pids]
                    pids.update(kids)
                frontier = nxt
        full_scan = self._n % self.full_scan_every == 0 or (not self._fast and self._n % 5 == 0)
        if full_scan:
            try:
                pids.update(c.pid for c in self._proc.children(recursive=True))
            except psutil.Error:
                pass
        else:
            # between full scans keep the children found before (e.g. workers forked by another
            # thread than the main one, which the fast path does not see); dead ones drop out below
            pids.update(self._children)
        self._n += 1
        return pids

    def collect(self) -> dict:
        out: dict = {}
        try:
            out["proc_rss"] = self._proc.memory_info().rss
        except psutil.Error:
            pass
        rss = 0
        alive = {}
        for pid in self._child_pids():
            proc = self._children.get(pid)
            try:
                if proc is None:
                    proc = psutil.Process(pid)
                rss += proc.memory_info().rss
                alive[pid] = proc
            except psutil.Error:
                continue
        self._children = alive
        out["children_rss"] = rss
        out["children_count"] = len(alive)
        return out
