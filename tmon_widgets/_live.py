"""Where the Monitor runs: in a Jupyter kernel? is the kernel's main thread busy running a cell?

Measured (see NOTEBOOK-TESTING.md): while a cell runs, widget events from the browser (a click, a
slider move) are not processed until the cell ends, but updates the kernel sends (from any thread)
reach the browser at once. So the Monitor refreshes from a thread of its own, and its controls say
so when the main thread is inside a cell: a click would be queued until the cell is over.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading

_CELL_FRAMES = ("run_code", "run_cell", "run_cell_async", "run_ast_nodes")


def shell():
    """The running IPython shell, or None (no import of IPython when it is not loaded already)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None) if ipython is not None else None
    return get() if get is not None else None


def in_kernel() -> bool:
    """True in a Jupyter kernel's own process (not a terminal IPython, not a forked worker)."""
    sh = shell()
    if sh is None or getattr(sh, "kernel", None) is None:
        return False
    return multiprocessing.parent_process() is None


def main_thread_in_cell() -> bool:
    """True while the main thread executes notebook code (a cell, or ``wait()`` inside one).

    Looks at the main thread's stack for IPython's cell-running frames: no hook to register
    before the cell starts, so it also works for a Monitor created inside the running cell.
    """
    if shell() is None:
        return False
    frame = sys._current_frames().get(threading.main_thread().ident)
    depth = 0
    while frame is not None and depth < 400:
        code = frame.f_code
        if code.co_name in _CELL_FRAMES and "IPython" in code.co_filename:
            return True
        frame = frame.f_back
        depth += 1
    return False


def display(obj) -> bool:
    """Display ``obj`` in the notebook when in a kernel; False elsewhere."""
    if not in_kernel():
        return False
    from IPython.display import display as ip_display

    ip_display(obj)
    return True
