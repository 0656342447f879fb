"""What every framework adapter does the same way, whatever its hooks are called.

An adapter decides *when* (its framework's hooks); the pieces here decide *how*, once for all:

- :func:`guarded` / :func:`warn_once`: a hook in which tmon fails warns once and training goes on;
- :class:`StepClock`: ``step_time`` and ``data_time`` of each optimizer step;
- :class:`CheckpointWatcher`: checkpoint files a framework's own callback wrote or removed;
- :func:`apply_decisions`: a controller's decisions dispatched by type, each resolved with its outcome.

Nothing here imports a framework.
"""

from __future__ import annotations

import functools
import glob
import os
import time

# defined beside RunSession (framework-free, it warns the same way), used by every hook
from tmon_core.session import TMonCallbackWarning, warn_once

_perf = time.perf_counter


class Rejected(Exception):
    """A control decision this run cannot apply; the message is the reason recorded."""


class SetupRefused(ValueError):
    """A setting tmon can judge only when the fit starts, and must refuse before it trains (Ray Train
    workers on several nodes given a SQLite store): raised through the hook for the user to fix,
    never swallowed by :func:`guarded`."""


def guarded(fn):
    """Run a hook; if tmon fails inside it, warn once per hook and let training go on
    (a :class:`SetupRefused` is raised: a configuration the user must change)."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except SetupRefused:
            raise
        except Exception as exc:
            warn_once(self, fn.__name__, exc)
            return None

    return wrapper


# ---------------------------------------------------------------------------- step and data time
class StepClock:
    """``step_time`` and ``data_time`` of each step, as every adapter measures them.

    ``step_time`` is the time from :meth:`begin` (a batch's start hook) to :meth:`end` (its end
    hook); ``data_time`` the time from the previous step's end (or from the last :meth:`pause`)
    to this :meth:`begin`: the wait for the batch. ``data_time`` is None for a step that has no
    previous end to count from (the first of a fit, or of an epoch after
    ``new_epoch(first_wait=False)``).

    Gradient accumulation: ``end(stepped=False)`` closes a micro-batch that did not step the
    optimizer; its times join the window and ``(None, None)`` is returned. The ``stepped=True``
    end that closes the window returns the window's sums (its ``step_time`` starts from 0.0, its
    ``data_time`` stays None when no micro-batch had one).
    """

    __slots__ = ("_t0", "_last_end", "_window")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything: a new fit."""
        self._t0: float | None = None
        self._last_end: float | None = None
        self._window: list | None = None  # [step time sum, data time sum | None] of the micro-batches so far

    def begin(self) -> None:
        """A step (or micro-batch) starts: its data wait ends now."""
        self._t0 = _perf()

    def end(self, stepped: bool = True) -> tuple[float | None, float | None]:
        """A step (or micro-batch) ended: ``(step_time, data_time)``, or ``(None, None)`` for a
        micro-batch that did not step (``stepped=False``: kept for the window's step).

        The next step's data wait counts from here; an adapter that does more work in its end
        hook after this call calls :meth:`pause` last, so that work is not counted as data loading.
        """
        now = _perf()
        t0 = self._t0
        busy = wait = None
        if t0 is not None:
            busy = now - t0
            if self._last_end is not None:
                wait = t0 - self._last_end
        window = self._window
        if window is not None or not stepped:
            if window is None:
                window = self._window = [0.0, None]
            if busy is not None:
                window[0] += busy
            if wait is not None:
                window[1] = wait if window[1] is None else window[1] + wait
            if not stepped:
                self._last_end = _perf()
                return None, None
            self._window = None
            busy, wait = window
        self._last_end = _perf()
        return busy, wait

    def pause(self) -> None:
        """The time until now is not data loading (logging, evaluation, saving): the next step's
        ``data_time`` counts from now."""
        self._last_end = _perf()

    def new_epoch(self, first_wait: bool) -> None:
        """An epoch starts. ``first_wait=True``: its first step's ``data_time`` counts from now (the
        epoch's data iterator is made after this, Lightning); ``False``: that step has none (HF, Keras)."""
        self._last_end = _perf() if first_wait else None


# ---------------------------------------------------------------------------- checkpoint files
class CheckpointWatcher:
    """Checkpoint files that appeared, were rewritten or disappeared in some folders, by mtime.

    ``patterns`` are glob patterns (build one for a folder with :meth:`in_folders`); the files they
    match are compared with those of the previous :meth:`scan`. A file tmon wrote itself is marked
    with :meth:`known` right after, so the scan does not take it for the framework's:

    - a file the patterns match is then seen (not new) and reported removed when it no longer matches;
    - a file they do not match (HF's checkpoint directories, recorded from ``on_save``) is reported
      removed once it no longer exists.

    The first scan of a fit (``scan()`` with its result ignored) takes in the files of earlier runs.
    """

    def __init__(self, patterns=()):
        self.patterns: list[str] = [str(p) for p in patterns]
        self._seen: dict[str, float] = {}  # path -> mtime, of the files the patterns matched
        self._origin: dict[str, int] = {}  # path -> index of the first pattern that matched it
        self._tracked: dict[str, None] = {}  # known files outside the patterns (insertion-ordered)

    @staticmethod
    def in_folders(folders, pattern: str = "*") -> list[str]:
        """Glob patterns for the files named ``pattern`` directly inside each of ``folders``."""
        return [os.path.join(glob.escape(str(d)), pattern) for d in folders]

    def _matched(self) -> tuple[dict[str, float], dict[str, int]]:
        seen: dict[str, float] = {}
        origin: dict[str, int] = {}
        for i, pattern in enumerate(self.patterns):
            for path in glob.glob(pattern):
                path = os.path.abspath(path)
                if path in seen:
                    continue
                try:
                    seen[path] = os.path.getmtime(path)
                except OSError:
                    continue
                origin[path] = i
        return seen, origin

    def covers(self, path) -> bool:
        """Whether the patterns match ``path`` (an existing file)."""
        path = os.path.abspath(path)
        return any(os.path.abspath(p) == path for pattern in self.patterns for p in glob.glob(pattern))

    def scan(self) -> tuple[list[str], list[str]]:
        """``(new_paths, removed_paths)`` since the last scan: files the patterns match that are new
        or have another mtime (in pattern order), and files seen or known before that are gone.
        Paths are absolute."""
        seen, origin = self._matched()
        new = [p for p, mtime in seen.items() if self._seen.get(p) != mtime]
        removed = [p for p in self._seen if p not in seen]
        for p in [p for p in self._tracked if p not in seen and not os.path.exists(p)]:
            del self._tracked[p]
            removed.append(p)
        self._seen, self._origin = seen, origin
        return new, removed

    def origin(self, path) -> int | None:
        """The index in ``patterns`` of the first pattern that matched ``path`` at the last scan."""
        return self._origin.get(os.path.abspath(path))

    def known(self, path) -> None:
        """``path`` is a file tmon recorded itself: not new to the next scan (see the class doc)."""
        path = os.path.abspath(path)
        if self.covers(path):
            try:
                self._seen[path] = os.path.getmtime(path)
            except OSError:
                pass
        else:
            self._tracked[path] = None


# ---------------------------------------------------------------------------- control decisions
def apply_decisions(controller, decisions, step: int, handlers) -> None:
    """Apply each decision with the handler of its class and record the outcome.

    ``handlers`` maps a decision class (``tmon_core.control.SetParams``, ``SaveCheckpoint``,
    ``Rollback``, ``Stop``) to ``fn(decision)``, which returns the keyword arguments of
    ``Controller.resolve`` (old, new, event, reason, data), or None when the outcome is recorded
    later (a checkpoint the framework writes after the step). A decision whose class has no
    handler is rejected (``unknown decision <class>``); a handler raises ``Rejected`` with the
    reason when the run cannot take the decision, and any other exception rejects it too
    (``<type>: <message>``), so steering never takes the fit down. ``controller`` is None on
    processes that only apply what another decided.

    ``handlers`` may also be one function taking every decision (raising ``Rejected`` for those
    it does not know).
    """
    for d in decisions:
        try:
            outcome = _handler(handlers, d)(d)
        except Rejected as exc:
            controller and controller.resolve(d, step, applied=False, reason=str(exc))
        except Exception as exc:
            controller and controller.resolve(d, step, applied=False, reason=f"{type(exc).__name__}: {exc}")
        else:
            if outcome is not None:
                controller and controller.resolve(d, step, applied=True, **outcome)


def _handler(handlers, d):
    if callable(handlers):
        return handlers
    for cls in type(d).__mro__:
        fn = handlers.get(cls)
        if fn is not None:
            return fn
    raise Rejected(f"unknown decision {type(d).__name__}")


__all__ = [
    "CheckpointWatcher",
    "Rejected",
    "StepClock",
    "TMonCallbackWarning",
    "apply_decisions",
    "guarded",
    "warn_once",
]
