"""Per-GPU figures from NVML (``nvidia-ml-py``) and, when the training process has CUDA
initialised, from torch's caching allocator. Never initialises CUDA itself."""

from __future__ import annotations

import os
import sys

from .base import Collector


def _visible_indices(count: int) -> list[int]:
    """NVML indices of the GPUs this process sees, in torch's device order."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None or not env.strip():
        return list(range(count)) if env is None else []
    try:
        idx = [int(x) for x in env.split(",") if x.strip()]
    except ValueError:  # UUIDs or MIG names: keep every device
        return list(range(count))
    return [i for i in idx if 0 <= i < count]


class GpuCollector(Collector):
    name = "gpu"

    def __init__(self) -> None:
        self._nvml = None
        self._handles: list = []
        self._names: list[str] = []
        self.missing: set[str] = set()

    def setup(self) -> str | None:
        try:
            import pynvml
        except ImportError:
            return "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        try:
            pynvml.nvmlInit()
        except Exception as exc:
            return f"NVML is not available ({type(exc).__name__}: {exc}); no NVIDIA driver or GPU"
        self._nvml = pynvml
        try:
            count = pynvml.nvmlDeviceGetCount()
            for i in _visible_indices(count):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                self._handles.append(h)
                name = pynvml.nvmlDeviceGetName(h)
                self._names.append(name.decode() if isinstance(name, bytes) else name)
        except Exception as exc:
            return f"NVML could not list GPUs ({type(exc).__name__}: {exc})"
        if not self._handles:
            return "NVML sees no GPU visible to this process"
        return None

    def _read(self, what: str, fn, *args):
        if what in self.missing:
            return None
        try:
            return fn(*args)
        except Exception:
            self.missing.add(what)  # unsupported on this board (e.g. power on some MIG slices)
            return None

    def collect(self) -> list[dict]:
        nv = self._nvml
        torch = sys.modules.get("torch")
        cuda_live = bool(torch is not None and torch.cuda.is_initialized())
        out = []
        for i, h in enumerate(self._handles):
            g: dict = {"gpu": i, "name": self._names[i]}
            mem = self._read("memory", nv.nvmlDeviceGetMemoryInfo, h)
            if mem is not None:
                g["mem_used"], g["mem_total"] = int(mem.used), int(mem.total)
            util = self._read("utilization", nv.nvmlDeviceGetUtilizationRates, h)
            if util is not None:
                g["util_percent"] = float(util.gpu)
            power = self._read("power", nv.nvmlDeviceGetPowerUsage, h)
            if power is not None:
                g["power_watts"] = power / 1000.0
            temp = self._read("temperature", nv.nvmlDeviceGetTemperature, h, 0)  # 0: NVML_TEMPERATURE_GPU
            if temp is not None:
                g["temperature_c"] = float(temp)
            if cuda_live and i < torch.cuda.device_count():
                # allocator counters are host-side bookkeeping: no device sync
                g["torch_allocated"] = torch.cuda.memory_allocated(i)
                g["torch_reserved"] = torch.cuda.memory_reserved(i)
                g["torch_max_allocated"] = torch.cuda.max_memory_allocated(i)
            out.append(g)
        return out

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None
