"""Live alerts: the report's detectors over a run's stream as it is recorded.

``AlertEngine`` holds the rules of one run (NaN/inf, divergence, recurring spikes, memory levels,
stalls, how the run ended, and ``Alert`` rules of the user's own on any metric) and says what each
flush of the recorder raises. See ``engine`` for the rules and how each alerts once.
"""

from __future__ import annotations

from .engine import DEFAULT_RULES, AlertEngine
from .rules import LEVELS, Alert

__all__ = ["DEFAULT_RULES", "LEVELS", "Alert", "AlertEngine"]
