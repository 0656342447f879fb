"""Precision: fp32 training on a GPU whose tensor cores run 16-bit math several times faster.

* ``precision.fp32`` (info) — the run trained in full precision (``32-true``, ``float32``) on a GPU
  with tensor cores (Volta and newer: V100, T4, RTX, A100/A10/A30/A40, L4/L40, H100/H200, B100/B200...).
  Advice: ``bf16-mixed`` (``16-mixed`` on Volta/Turing, which lack bf16).
"""

from __future__ import annotations

import re

from ..model import INFO, Finding
from . import recommend

TENSOR_CORES = re.compile(
    r"V100|\bT4\b|A100|A800|\bA10G?\b|\bA30\b|\bA40\b|\bA16\b|\bA2\b|\bL4\b|L40|H100|H200|H800|"
    r"GH200|B100|B200|GB200|RTX|Titan V",
    re.I,
)
_NO_BF16 = re.compile(r"V100|\bT4\b|Titan V|RTX 20\d\d|Quadro RTX|RTX [468]000\b(?! Ada)", re.I)


def check(d):
    if not d.full_precision or not d.gpu_peaks:
        return
    if "cpu" in str(d.config.get("accelerator") or "").lower():
        return  # GPUs on the host, but this run trained on the CPU
    names = sorted({p["name"] for p in d.gpu_peaks if p["name"]})
    tc = [n for n in names if TENSOR_CORES.search(n)]
    if not tc:
        return
    target = "16-mixed" if all(_NO_BF16.search(n) for n in tc) else "bf16-mixed"
    evidence = {"precision": d.precision, "gpus": tc, "target": target}
    yield Finding(
        "precision.fp32",
        INFO,
        "Full fp32 precision on tensor-core GPUs",
        f"The run trained in {d.precision} on {', '.join(tc)}: its tensor cores run 16-bit matrix math "
        "several times faster than fp32.",
        evidence,
    )
    t = d.terms
    yield recommend(
        "precision.fp32",
        INFO,
        f"Mixed precision ({'bf16' if target.startswith('bf16') else 'fp16'})",
        t.precision(target),
        t.precision_value(target),
        "typically 1.5-3× faster steps and about half the activation memory; "
        + (
            "bf16 keeps fp32's range, so no loss scaling is needed"
            if target.startswith("bf16")
            else "fp16 needs loss scaling (the framework does it with mixed precision)"
        ),
        evidence=evidence,
        priority=40,
    )
