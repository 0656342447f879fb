"""HardwareSampler: a daemon thread that samples host, process and GPU figures into a run.

>>> rec = Recorder("sqlite:///runs.db")                       # doctest: +SKIP
>>> sampler = HardwareSampler(rec, interval=1.0).start()      # doctest: +SKIP
>>> ...; sampler.stop(); rec.close()                          # doctest: +SKIP

Sampling and writing run at different rates: the sampler hands each sample to the
recorder's buffer and the recorder's writer thread writes it with the next batch.
A collector that cannot work here (no NVML, no GPU, a container hiding /proc values) is
disabled alone, and the sampler says once, as a ``sampler`` event and a log line, what it
could not read; the host figures are still recorded.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from .. import events as ev
from .base import Collector
from .gpu import GpuCollector
from .host import HostCollector
from .process import ProcessCollector

__all__ = ["HardwareSampler", "Collector", "HostCollector", "ProcessCollector", "GpuCollector"]

log = logging.getLogger("tmon")
MIN_INTERVAL = 0.1


class HardwareSampler:
    def __init__(
        self,
        recorder,
        interval: float = 1.0,
        *,
        node_rank: int = 0,
        gpus: bool = True,
        collectors: list[Collector] | None = None,
    ):
        if not isinstance(interval, (int, float)) or interval < MIN_INTERVAL:
            raise ValueError(
                f"sample_interval must be >= {MIN_INTERVAL} seconds, received sample_interval={interval!r}"
            )
        self.recorder = recorder
        self.interval = float(interval)
        self.node_rank = node_rank
        self.host = socket.gethostname()
        if collectors is None:
            collectors = [HostCollector(), ProcessCollector()] + ([GpuCollector()] if gpus else [])
        self.collectors = collectors
        self.active: list[Collector] = []
        self.unavailable: dict[str, str] = {}
        self.samples_taken = 0
        self.cpu_seconds = 0.0  # CPU time the sampler thread spent sampling (for benchmarks)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said_missing: set[str] = set()

    def start(self) -> HardwareSampler:
        for c in self.collectors:
            try:
                reason = c.setup()
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if reason is None:
                self.active.append(c)
            else:
                self.unavailable[c.name] = reason
        if self.unavailable:
            text = "; ".join(f"{k}: {v}" for k, v in self.unavailable.items())
            log.info("tmon sampler: not recording %s", text)
            self.recorder.event(ev.SAMPLER, message=f"not recording {text}", unavailable=self.unavailable)
        self._thread = threading.Thread(target=self._loop, name="tmon-sampler", daemon=True)
        self._thread.start()
        return self

    def sample_once(self) -> None:
        t0 = time.thread_time()
        host: dict = {
            "wall_time": time.time(),
            "host": self.host,
            "node_rank": self.node_rank,
            "step": max(self.recorder.next_step - 1, 0),
        }
        gpus: list[dict] = []
        for c in self.active:
            try:
                got = c.collect()
            except Exception as exc:
                self._say_once(c.name, f"{c.name} collector failed: {type(exc).__name__}: {exc}")
                continue
            if isinstance(got, list):
                gpus = [
                    dict(g, wall_time=host["wall_time"], host=self.host, node_rank=self.node_rank)
                    for g in got
                ]
            else:
                host.update(got)
            for what in getattr(c, "missing", ()):
                self._say_once(f"{c.name}.{what}", f"cannot read {what} here; recording the rest")
        self.recorder.sample(host, gpus)
        self.samples_taken += 1
        self.cpu_seconds += time.thread_time() - t0

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said_missing:
            self._said_missing.add(key)
            log.warning("tmon sampler: %s", message)
            self.recorder.event(ev.SAMPLER, message=message)

    def _loop(self) -> None:
        self.sample_once()
        while not self._stop.wait(self.interval):
            try:
                self.sample_once()
            except Exception as exc:  # the sampler never dies on an error
                self._say_once("loop", f"sample failed: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        for c in self.active:
            try:
                c.close()
            except Exception:
                pass
