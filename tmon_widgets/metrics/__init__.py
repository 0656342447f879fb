"""The Metrics tab, one job per module:

- :mod:`.keys`: which chart and group a metric key belongs to, which keys show first;
- :mod:`.chart`: one bqplot figure (lines, smoothed twins, markers, legend);
- :mod:`.zoom`: the shared x scale, pan/zoom and the detail re-read of the visible range;
- :mod:`.export`: the visible series as CSV;
- :mod:`.tab`: :class:`MetricsTab`, the controls and what each refresh reads and draws.
"""

from __future__ import annotations

from .keys import GROUP_ORDER, OPTIMIZER_KEYS, SYSTEM_KEYS, default_keys, family, group
from .tab import MetricsTab

__all__ = ["GROUP_ORDER", "OPTIMIZER_KEYS", "SYSTEM_KEYS", "MetricsTab", "default_keys", "family", "group"]
