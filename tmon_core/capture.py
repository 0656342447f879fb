"""Log capture for a run: what the user's process says while it trains, kept with the run.

Captured on the process that records metrics, into ``tmon_logs`` (``Run.logs()``), each row with
its time and the step the run was at:

* Python ``logging`` records at WARNING and above (``source="logging"``), through one handler on
  the root logger and on the loggers that do not propagate to it (Lightning's and transformers'
  library loggers, when they are set up that way);
* ``warnings.warn`` calls (``source="warnings"``), by wrapping ``warnings.showwarning``: the
  wrapper records, then calls the function it replaced, so the user sees exactly what they saw
  before (and ``pytest``'s or a notebook's own warning capture keeps working);
* optionally, every line written to ``sys.stdout`` / ``sys.stderr`` (``source="stdout"`` /
  ``"stderr"``), through a tee that writes to the original stream first; a progress bar that
  redraws itself with ``\\r`` is kept as its last state, once per line. Only writes that go through
  ``sys.stdout``/``sys.stderr`` during the run are seen: not a handler that kept a reference to
  the stream from before the run (its WARNING+ records are captured as logging records anyway),
  nor what C code or child processes write to the file descriptors.

tmon's own records (the ``tmon`` logger, ``TMonStoreWarning``, ``TMonCallbackWarning``) are kept
with ``source="tmon"``: they say when monitoring itself had trouble (a store that could not be
written) and the report shows them apart from the user's errors.

One process-wide installation serves every open run. A record goes to the runs started on the
thread that emitted it, or, when none was (a dataloader thread, tmon's writer thread), to every
open run. The last run to end removes the handler and the wrappers, unless someone else wrapped
them since, in which case they stay in place and only pass through.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import warnings

from tmon_callbacks._workarounds.python import stdlib_showwarning

from .store.text import cut

MAX_RECORDS = 10_000  # per run: a warning logged at every step must not flood the store
MAX_MESSAGE = 20_000  # characters kept of one record (a traceback included); a longer one ends with a marker
_WARNING = logging.WARNING

_lock = threading.RLock()
_active: list[LogCapture] = []
_local = threading.local()  # .busy: this thread is inside a capture (never capture ourselves)
_handler: _Handler | None = None
_handled_loggers: list[logging.Logger] = []
_original_showwarning = None
_tees: dict[str, _Tee] = {}


def _tmon_categories() -> tuple[type, ...]:
    from .recorder import TMonStoreWarning
    from .session import TMonCallbackWarning  # (session imports this module when a run starts)

    return (TMonStoreWarning, TMonCallbackWarning)


class LogCapture:
    """Captures what the process logs, warns (and prints, with ``output=True``) into ``recorder``'s run
    from ``start()`` until ``stop()``."""

    def __init__(self, recorder, *, output: bool = False, max_records: int = MAX_RECORDS):
        self.recorder = recorder
        self.output = output
        self.max_records = max_records
        self.thread = threading.get_ident()
        self.stored = 0
        self.skipped = 0
        self.running = False

    def start(self) -> LogCapture:
        with _lock:
            if not self.running:
                self.running = True
                _active.append(self)
                _install(self.output)
        return self

    def stop(self) -> None:
        with _lock:
            if not self.running:
                return
            self.running = False
            _active.remove(self)
            if not _active:
                _uninstall_logging()
            if not any(c.output for c in _active):
                _uninstall_tees()
        if self.skipped:
            self.recorder.log_record(
                "WARNING",
                f"tmon stored the first {self.stored} log records of this run; {self.skipped} more were "
                f"not stored",
                logger="tmon",
                source="tmon",
            )

    def record(self, level: str, message: str, logger: str | None, source: str, wall_time: float) -> None:
        if self.stored >= self.max_records:
            self.skipped += 1
            return
        self.stored += 1
        # the step being computed: one past the last step recorded (0 before the first)
        self.recorder.log_record(
            level,
            cut(message, MAX_MESSAGE),
            logger=logger,
            source=source,
            step=self.recorder.next_step,
            wall_time=wall_time,
        )


def _dispatch(level: str, message: str, logger: str | None, source: str, output: bool = False) -> None:
    """Hand one record to the runs that should have it; never raises."""
    if getattr(_local, "busy", False):
        return
    _local.busy = True
    try:
        now = time.time()
        ident = threading.get_ident()
        with _lock:
            active = [c for c in _active if c.output] if output else list(_active)
        mine = [c for c in active if c.thread == ident]
        for c in mine or active:
            c.record(level, message, logger, source, now)
    except Exception:
        pass  # capture must never disturb what it captures
    finally:
        _local.busy = False


# ---------------------------------------------------------------------------- logging
class _Handler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=_WARNING)
        self._last = None

    def emit(self, record: logging.LogRecord) -> None:
        if record is self._last:  # one record reaching two of the loggers we listen on
            return
        self._last = record
        if record.name == "py.warnings" and warnings.showwarning is _showwarning:
            return  # logging.captureWarnings: our warnings wrapper already has it
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:
            message = str(record.msg)
        name = record.name
        source = "tmon" if name == "tmon" or name.startswith("tmon.") else "logging"
        _dispatch(record.levelname, message, name, source)
        _last_resort(record)


def _last_resort(record: logging.LogRecord) -> None:
    """Print ``record`` as Python would have without our handler: when no other handler is on its
    way up, logging falls back to ``logging.lastResort`` (WARNING and above, to stderr)."""
    last = logging.lastResort
    if last is None or record.levelno < last.level:
        return
    logger = logging.getLogger(record.name) if record.name != "root" else logging.getLogger()
    while logger is not None:
        if any(h is not _handler for h in logger.handlers):
            return
        if not logger.propagate:
            break
        logger = logger.parent
    _local.busy = True  # the tee must not keep this line a second time
    try:
        last.handle(record)
    finally:
        _local.busy = False


def _install(output: bool) -> None:
    global _handler, _original_showwarning
    if _handler is None:
        _handler = _Handler()
        root = logging.getLogger()
        targets = [root] + [
            lg
            for lg in list(logging.Logger.manager.loggerDict.values())
            if isinstance(lg, logging.Logger) and not lg.propagate
        ]
        for lg in targets:
            lg.addHandler(_handler)
        _handled_loggers[:] = targets
    if warnings.showwarning is not _showwarning:
        _original_showwarning = warnings.showwarning
        warnings.showwarning = _showwarning
    if output:
        for name in ("stdout", "stderr"):
            tee = _tees.get(name)
            if tee is None or not tee.active:
                stream = getattr(sys, name)
                if isinstance(stream, _Tee) and stream.active:
                    continue
                tee = _Tee(stream, name)
                setattr(sys, name, tee)
                _tees[name] = tee


def _uninstall_logging() -> None:
    global _handler, _original_showwarning
    if _handler is not None:
        for lg in _handled_loggers:
            lg.removeHandler(_handler)
        _handled_loggers.clear()
        _handler = None
    if _original_showwarning is not None and warnings.showwarning is _showwarning:
        warnings.showwarning = _original_showwarning
    # else someone wrapped us since: we stay in their chain and only pass through
    _original_showwarning = None


def _showwarning(message, category, filename, lineno, file=None, line=None):
    if getattr(_local, "in_showwarning", False):  # a wrapper of ours calling us again: pass through
        return stdlib_showwarning()(message, category, filename, lineno, file, line)
    _local.in_showwarning = True
    try:
        with _lock:
            capturing = bool(_active)
        if capturing:
            try:
                text = f"{category.__name__}: {message} ({filename}:{lineno})"
                ours = issubclass(category, _tmon_categories()) or str(message).startswith("tmon")
                _dispatch(
                    "WARNING",
                    text,
                    category.__module__ + "." + category.__qualname__,
                    "tmon" if ours else "warnings",
                )
            except Exception:
                pass
        original = _original_showwarning or stdlib_showwarning()
        return original(message, category, filename, lineno, file, line)
    finally:
        _local.in_showwarning = False


# ---------------------------------------------------------------------------- stdout / stderr
class _Tee:
    """Writes to the original stream first, then keeps whole lines for the runs that asked."""

    def __init__(self, stream, name: str):
        self._stream = stream
        self._name = name
        self._buf = ""
        self._lock = threading.Lock()
        self.active = True

    def write(self, s):
        n = self._stream.write(s)
        if (
            self.active
            and isinstance(s, str)
            and s
            and not getattr(_local, "busy", False)
            and not getattr(_local, "in_showwarning", False)
        ):  # captured already, as what it is
            try:
                self._keep(s)
            except Exception:
                pass
        return n

    def writelines(self, lines):
        for s in lines:
            self.write(s)

    def _keep(self, s: str) -> None:
        with self._lock:
            self._buf += s
            if "\n" not in self._buf and len(self._buf) < 65536:
                return
            *lines, self._buf = self._buf.split("\n")
            if len(self._buf) >= 65536:
                lines.append(self._buf)
                self._buf = ""
        for line in lines:
            line = line.rsplit("\r", 1)[-1].rstrip()  # a progress bar: its last state
            if line.strip():
                _dispatch("INFO", line, None, self._name, output=True)

    def flush(self):
        return self._stream.flush()

    def detach_to(self):
        """Stop keeping lines; return the stream this tee writes to."""
        self.active = False
        return self._stream

    def __getattr__(self, name):  # encoding, fileno, isatty, buffer...: the original stream's
        return getattr(self._stream, name)


def _uninstall_tees() -> None:
    for name, tee in list(_tees.items()):
        stream = tee.detach_to()
        if getattr(sys, name) is tee:
            setattr(sys, name, stream)
        # else: replaced since; the tee stays in that chain, passing through
        del _tees[name]
