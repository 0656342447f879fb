"""Host figures: CPU %, RAM, swap.

On Linux the collector reads ``/proc/stat``'s first line and ``/proc/meminfo`` itself, each once
per sample (~50 us together), and computes what psutil would: psutil's ``virtual_memory()`` and
``swap_memory()`` parse ``/proc/meminfo`` twice and ``/proc/vmstat`` once, and
``cpu_percent()`` parses every CPU's line (~130 us here). Elsewhere, or where those files do
not read as expected (a container hiding them), it uses psutil.
"""

from __future__ import annotations

import psutil

from .base import Collector

_MEMINFO = (b"MemTotal:", b"MemAvailable:", b"SwapTotal:", b"SwapFree:")


def _proc_cpu_times() -> tuple[float, float] | None:
    """(busy, total) CPU ticks since boot, counted as psutil counts them (guest time is already
    in user and nice; idle and iowait are not busy)."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
        if fields[0] != b"cpu" or len(fields) < 5:
            return None
        t = [int(x) for x in fields[1:11]]
    except (OSError, ValueError, IndexError):
        return None
    total = sum(t) - sum(t[8:10])  # guest, guest_nice (Linux 2.6.24+) are counted in user, nice
    idle = t[3] + (t[4] if len(t) > 4 else 0)  # idle, iowait
    return float(total - idle), float(total)


def _proc_meminfo() -> dict[bytes, int] | None:
    try:
        with open("/proc/meminfo", "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return None
    out = {}
    for line in lines:
        if line.startswith(_MEMINFO):
            name, value = line.split(b":", 1)
            try:
                out[name + b":"] = int(value.split()[0]) * 1024  # kB
            except (ValueError, IndexError):
                return None
    return out if len(out) == len(_MEMINFO) else None


class HostCollector(Collector):
    name = "host"

    def __init__(self) -> None:
        self.missing: set[str] = set()
        self._last_cpu: tuple[float, float] | None = None
        self._proc = False

    def setup(self) -> str | None:
        self._last_cpu = _proc_cpu_times()
        self._proc = self._last_cpu is not None and _proc_meminfo() is not None
        psutil.cpu_percent(interval=None)  # primes psutil's counter too, for the fallback
        return None

    def collect(self) -> dict:
        if self._proc:
            out = self._collect_proc()
            if out is not None:
                return out
            self._proc = False  # the files stopped reading as expected: psutil from now on
        return self._collect_psutil()

    def _collect_proc(self) -> dict | None:
        cpu, mem = _proc_cpu_times(), _proc_meminfo()
        if cpu is None or mem is None:
            return None
        last, self._last_cpu = self._last_cpu, cpu
        d_busy, d_total = cpu[0] - last[0], cpu[1] - last[1]
        total, available = mem[b"MemTotal:"], mem[b"MemAvailable:"]
        out = {
            "ram_total": total,
            "ram_available": available,
            "ram_used": total - available,  # what training can no longer get, unlike psutil's vm.used
            "swap_used": mem[b"SwapTotal:"] - mem[b"SwapFree:"],
        }
        # no CPU tick between two reads (the first sample, taken right after setup): no figure, not a 0 %
        if d_total > 0:
            out["cpu_percent"] = round(min(100.0, max(0.0, 100.0 * d_busy / d_total)), 1)
        return out

    def _collect_psutil(self) -> dict:
        out: dict = {}
        try:
            out["cpu_percent"] = psutil.cpu_percent(interval=None)
        except Exception:
            self.missing.add("cpu_percent")
        try:
            vm = psutil.virtual_memory()
            out["ram_total"], out["ram_available"] = vm.total, vm.available
            out["ram_used"] = vm.total - vm.available
        except Exception:
            self.missing.add("ram")
        try:
            out["swap_used"] = psutil.swap_memory().used
        except Exception:
            self.missing.add("swap_used")
        return out
