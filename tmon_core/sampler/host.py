"""Host figures: CPU %, RAM, swap (psutil; ~0.2 ms a sample)."""

from __future__ import annotations

import psutil

from .base import Collector


class HostCollector(Collector):
    name = "host"

    def __init__(self) -> None:
        self.missing: set[str] = set()

    def setup(self) -> str | None:
        psutil.cpu_percent(interval=None)  # primes the counter: the first real call measures from here
        return None

    def collect(self) -> dict:
        out: dict = {}
        try:
            out["cpu_percent"] = psutil.cpu_percent(interval=None)
        except Exception:
            self.missing.add("cpu_percent")
        try:
            vm = psutil.virtual_memory()
            out["ram_total"], out["ram_available"] = vm.total, vm.available
            out["ram_used"] = vm.total - vm.available  # what training can no longer get, unlike vm.used
        except Exception:
            self.missing.add("ram")
        try:
            out["swap_used"] = psutil.swap_memory().used
        except Exception:
            self.missing.add("swap_used")
        return out
