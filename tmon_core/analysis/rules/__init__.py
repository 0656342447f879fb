"""The rules, one module per family. Each module has ``check(d: RunData)`` yielding ``Finding`` and
``Recommendation`` objects; a rule that fails is reported as an info finding, never as a crash.

=============  ==============================================================================
lifecycle      failed, lost, interrupted or still running; store outages and dropped points
memory         host RAM, swap, dataloader workers' share, GPU memory, out-of-memory errors, headroom
throughput     input-bound steps, an idle GPU, stalls, uneven step times
stability      NaN/inf loss, loss spikes, divergence, plateau, overfitting, gradient norm
precision      fp32 on a GPU with tensor cores
control        learning-rate changes that helped or hurt (from the control history)
guard          what a guard (``guard=``) did, and whether the run recovered after it
logs           captured warnings/errors: CUDA, NCCL, dataloader worker crashes, NaN messages
=============  ==============================================================================
"""

from __future__ import annotations

import importlib
import math
from typing import Any

from ..model import INFO, Finding, Recommendation
from ..terms import Setting

FAMILIES = ("lifecycle", "memory", "throughput", "stability", "precision", "control", "guard", "logs")


def run_all(d) -> tuple[list[Finding], list[Recommendation]]:
    findings: list[Finding] = []
    recs: list[Recommendation] = []
    for family in FAMILIES:
        try:
            module = importlib.import_module(f"{__name__}.{family}")
            for item in module.check(d):
                (findings if isinstance(item, Finding) else recs).append(item)
        except Exception as exc:  # one broken rule must not cost the rest of the report
            findings.append(
                Finding(
                    f"{family}.error",
                    INFO,
                    f"The {family} rules could not run",
                    f"{type(exc).__name__}: {exc}",
                    {"error": f"{type(exc).__name__}: {exc}"},
                )
            )
    return findings, recs


def recommend(
    rule: str,
    severity: str,
    title: str,
    setting: Setting,
    value: Any,
    impact: str,
    *,
    evidence: dict | None = None,
    action: str | None = None,
    priority: int = 50,
    current: Any = "from-setting",
    value_for_code: Any = "same",
) -> Recommendation:
    """A recommendation to set ``setting`` to ``value``; the action names the pasteable code."""
    code = setting.code(value if value_for_code == "same" else value_for_code)
    cur = setting.current if current == "from-setting" else current
    if action is None:
        action = f"Set {code}" if code else title
        if cur is not None and code:
            action += f" (now {fmt_value(cur)})"
    return Recommendation(
        rule=rule,
        severity=severity,
        title=title,
        action=action,
        impact=impact,
        config_path=setting.path,
        current_value=cur,
        recommended_value=value,
        evidence=evidence or {},
        code=code,
        priority=priority,
    )


def fmt_bytes(n: float | None) -> str:
    if n is None or n != n:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}"
    return str(v)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def fmt_seconds(s: float | None) -> str:
    if s is None or s != s:
        return "-"
    if s < 1:
        return f"{s * 1000:.1f} ms"
    if s < 120:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"
