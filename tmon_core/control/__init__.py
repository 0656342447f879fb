"""Steering a run: schedules, presets, custom parameters and live control requests.

See ``controller.py`` for the levels, ``decisions.py`` for the schedule items and what the
controller hands an adapter, ``params.py`` for the parameters and modes, ``requests.py`` for
asking a running run from any process.
"""

from ..events import PARAM_CHANGE, REQUEST_REJECTED, ROLLBACK, STOPPED  # control's event types, kept here too
from .controller import LEVELS, Controller
from .decisions import At, Change, Decision, Rollback, SaveCheckpoint, SetParams, Stop
from .params import BUILTIN, MODES, PIN, SCALE, SET, Param
from .requests import Request

__all__ = [
    "At",
    "BUILTIN",
    "Change",
    "Controller",
    "Decision",
    "LEVELS",
    "MODES",
    "PARAM_CHANGE",
    "PIN",
    "Param",
    "REQUEST_REJECTED",
    "ROLLBACK",
    "Request",
    "Rollback",
    "SCALE",
    "SET",
    "STOPPED",
    "SaveCheckpoint",
    "SetParams",
    "Stop",
]
