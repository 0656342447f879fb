"""The Monitor's refresh thread: a named daemon thread that calls ``refresh()`` every ``interval``
seconds, at once when woken, backing off after failures, and stopping once the runs shown have ended.

No ipywidgets here: what a refresh does is the Monitor's; when and how often is this module's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

#: refreshes in a row that find every run ended before the last one: the last points are written
#: with the status, a few more reads catch them
FINAL_TICKS = 3


class RefreshThread:
    """Calls ``refresh()`` every ``interval`` seconds until :meth:`stop`, or until ``ended()`` holds for
    :data:`FINAL_TICKS` refreshes in a row; then ``last()`` once. A failing refresh is retried after
    ``interval * 2**failures`` seconds (30 at most)."""

    def __init__(
        self,
        refresh: Callable[[], object],
        ended: Callable[[], bool],
        last: Callable[[], None],
        interval: float | None,
        name: str = "tmon-monitor",
    ):
        self._refresh, self._ended, self._last = refresh, ended, last
        self.interval, self.name = interval, name
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Refresh now instead of at the end of the interval."""
        self._wake.set()

    @property
    def alive(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        self._wake.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=timeout)

    def _loop(self) -> None:
        final_ticks = 0
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(self.interval if failures == 0 else min(30.0, self.interval * 2**failures))
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._refresh()
                failures = 0
            except Exception:
                failures += 1
                continue
            if self._ended():
                final_ticks += 1
                if final_ticks >= FINAL_TICKS:
                    self._last()
                    break
            else:
                final_ticks = 0
        self._thread = None
