"""Small helpers shared by the benchmark scripts (tables, percentiles, argument parsing).

Imported as ``_util`` because ``python bench/NAME.py`` puts ``bench/`` first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import time


def git_state() -> str:
    """The commit measured, and whether the working tree had uncommitted changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return out or "unknown"
    except Exception:
        return "unknown"


def parse_args(description: str, extra=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test in well under a minute")
    if extra is not None:
        extra(p)
    return p.parse_args()


def header(title: str, quick: bool) -> None:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    print(f"== {title} ==")
    print(
        f"tmon at {git_state()} | python {platform.python_version()} | {os.cpu_count()} CPUs | load avg {load[0]:.2f} "
        f"| {time.strftime('%Y-%m-%d %H:%M:%S')} | {'QUICK (smoke test, numbers are rough)' if quick else 'full run'}"
    )
    sys.stdout.flush()


def pct(sorted_values, p: float) -> float:
    """The ``p``-th percentile (0-100) of an already sorted sequence (nearest rank)."""
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def median(values) -> float:
    return statistics.median(values) if values else math.nan


def ratio(a: float, b: float) -> str:
    if b is None or a is None or not math.isfinite(a) or not math.isfinite(b) or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def num(x, fmt: str = "{:,.2f}") -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and not math.isfinite(x):
        return "n/a"
    return fmt.format(x)


def table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))

    out = []
    if title:
        out.append(title)
    out.append(line(cells[0]))
    out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in cells[1:]]
    text = "\n".join(out)
    print(text + "\n")
    sys.stdout.flush()
    return text


def ok(flag: bool) -> str:
    return "OK" if flag else "FAIL"
