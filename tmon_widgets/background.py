"""``fit_in_background``: train in a thread so the notebook stays free and the Monitor's controls act.

Measured (NOTEBOOK-TESTING.md): while a cell runs, Jupyter handles no widget event of that kernel,
so a slider moved during ``trainer.fit(...)`` in the same kernel reaches the training only after
it. Training in a thread lets the cell return at once: clicks and slider moves are then handled
on the main thread within milliseconds, and become control requests that the training applies at
its next step.

>>> fit = fit_in_background(trainer.fit, model, dm)     # doctest: +SKIP
>>> fit.wait()          # in a later cell: blocks until the fit ends; re-raises its exception
"""

from __future__ import annotations

import threading
import time
from typing import Any

from . import _format as f
from . import _live

#: seconds fit_in_background waits for the fit's tmon callback to open its run before saying so
RUN_WAIT = 120.0


def _tmon_callbacks(fn, args, kwargs) -> list:
    """The tmon callbacks (any framework) reachable from ``fn``'s owner and arguments."""
    found = []
    owner = getattr(fn, "__self__", None)
    for obj in (owner, *args, *kwargs.values()):
        lists = []
        if isinstance(obj, (list, tuple)):
            lists.append(obj)
        for attr in ("callbacks",):  # Lightning's Trainer
            v = getattr(obj, attr, None)
            if isinstance(v, (list, tuple)):
                lists.append(v)
        handler = getattr(obj, "callback_handler", None)  # HF's Trainer
        if handler is not None and isinstance(getattr(handler, "callbacks", None), (list, tuple)):
            lists.append(handler.callbacks)
        for lst in lists:
            for cb in lst:
                if type(cb).__name__ == "TMonCallback" and hasattr(cb, "options") and cb not in found:
                    found.append(cb)
    return found


class BackgroundFit:
    """A fit running in a thread: ``wait()``, ``result()``, ``exception()``, ``done()``, ``stop()``.

    ``monitor`` is the ``Monitor`` shown for the run (None outside a notebook or with
    ``monitor=False``); ``run_id`` the run once the fit's tmon callback opened it.
    """

    def __init__(
        self,
        fn,
        args: tuple = (),
        kwargs: dict | None = None,
        *,
        monitor: bool = True,
        store=None,
        name: str | None = None,
    ):
        if not callable(fn):
            raise TypeError(f"fit_in_background needs a callable (e.g. trainer.fit), received {fn!r}")
        self.fn, self.args, self.kwargs = fn, tuple(args), dict(kwargs or {})
        self._callbacks = _tmon_callbacks(fn, self.args, self.kwargs)
        self._before = {id(cb): getattr(cb, "run_id", None) for cb in self._callbacks}
        self._store_url = store
        if self._store_url is None and self._callbacks:
            self._store_url = self._callbacks[0].options.store
        self._result: Any = None
        self._exc: BaseException | None = None
        self._done = threading.Event()
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.monitor = None
        self.status_html = None
        self._thread = threading.Thread(target=self._run, name=name or "tmon-fit", daemon=True)
        self._thread._tmon_background = True  # the adapters' auto display leaves this fit to us
        if monitor and _live.in_kernel():
            self._show()
        self._thread.start()

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        try:
            self._result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to wait()/result(), never lost
            self._exc = exc
        finally:
            self.ended_at = time.time()
            self._done.set()
            self._say_done()

    @property
    def run_id(self) -> str | None:
        """The run this fit records (None until its tmon callback opened it)."""
        for cb in self._callbacks:
            rid = getattr(cb, "run_id", None)
            if rid and rid != self._before.get(id(cb)):
                return rid
        if self.monitor is not None and self.monitor.runs:
            return self.monitor.runs[0].id
        return None

    def wait_for_run(self, timeout: float = 60.0):
        """The ``tmon_core.Run`` this fit records, once its tmon callback opened it (``TimeoutError`` after
        ``timeout`` s; ``RuntimeError`` if the fit ended without opening one)."""
        from tmon_core.store import open_store

        deadline = time.monotonic() + timeout
        while True:
            rid = self.run_id if self._callbacks or self.monitor is None else self._resolve()
            if rid is not None:
                store = self.monitor.store if self.monitor is not None else open_store(self._store_url)
                return store.run(rid)
            if self._done.is_set():
                raise RuntimeError(
                    "the fit ended without opening a tmon run"
                    + (f": {type(self._exc).__name__}: {self._exc}" if self._exc else "")
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no tmon run opened after {timeout:g} s: does the fit have a TMonCallback?"
                )
            time.sleep(0.05)

    def _resolve(self) -> str | None:
        rid = self.run_id
        if rid is None and not self._callbacks and self.monitor is not None:
            # no tmon callback found among fn's owner and arguments: the newest run this process opened since
            import os

            df = self.monitor.store.runs()
            mine = df[(df.pid == os.getpid()) & (df.created_at >= self.started_at - 1)]
            rid = mine.id.iloc[0] if len(mine) else None
        if rid is None and self.monitor is not None and time.time() - self.started_at > RUN_WAIT:
            self.monitor.waiting_for = (
                f"no tmon run opened in {RUN_WAIT:.0f} s: does the fit have a TMonCallback? (waiting on)"
            )
        return rid

    # ------------------------------------------------------------------ display
    def _show(self) -> None:
        import ipywidgets as widgets

        from .monitor import Monitor

        self.monitor = Monitor(
            store=self._store_url,
            _resolve=self._resolve,
            _waiting="training in the background: waiting for its tmon run to open",
        )
        self.status_html = widgets.HTML(
            f.note(
                "training in a background thread: this notebook stays free, and the controls act during training. "
                "<code>.wait()</code> blocks until the fit ends and re-raises its exception; <code>.stop()</code> "
                "stops it."
            )
        )
        _live.display(widgets.VBox([self.monitor, self.status_html]))

    def _say_done(self) -> None:
        if self.status_html is None:
            return
        took = f.duration((self.ended_at or time.time()) - self.started_at)
        if self._exc is None:
            self.status_html.value = f.note(
                f"training finished in {took}: <code>.wait()</code> / "
                "<code>.result()</code> return what the fit returned",
                "ok",
            )
        else:
            self.status_html.value = f.note(
                f"training failed after {took}: <b>{f.esc(type(self._exc).__name__)}: {f.esc(str(self._exc)[:500])}"
                "</b>. <code>.wait()</code> re-raises it.",
                "error",
            )

    # ------------------------------------------------------------------ the handle
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None = None):
        """Block until the fit ends (or ``timeout`` s pass: ``TimeoutError``); return its result, or
        re-raise its exception. Interrupting the wait leaves the training running (``stop()`` stops it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._done.wait(0.1):
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"the fit is still running after {timeout:g} s")
        except KeyboardInterrupt:
            print("wait() interrupted: the training goes on in the background; .stop() stops it")
            raise
        return self.result()

    def result(self):
        """What the fit returned; re-raises its exception; ``RuntimeError`` while it still runs."""
        if not self._done.is_set():
            raise RuntimeError("the fit is still running: wait() blocks until it ends")
        if self._exc is not None:
            raise self._exc
        return self._result

    def exception(self) -> BaseException | None:
        """The exception the fit raised, or None (also while it runs)."""
        return self._exc

    def stop(self, reason: str | None = None, timeout: float = 10.0) -> str:
        """Stop the training cleanly at its next step; returns how.

        A ``stop`` control request when the run's control level allows it (``admin``: recorded with
        the run, applied at a step boundary); otherwise the framework's own flag on the object whose
        method is being run (Lightning ``trainer.should_stop``, Keras ``model.stop_training``, HF
        ``trainer.control.should_training_stop``), which stops it at the end of the current step.
        """
        reason = reason or "stopped with fit_in_background(...).stop()"
        rid = self.run_id
        if rid is None and self._done.is_set():
            return "already finished: nothing to stop"
        if rid is not None:
            from tmon_core.events import RUNNING
            from tmon_core.store import Store, open_store

            store = self.monitor.store if self.monitor is not None else open_store(self._store_url)
            try:
                run = store.run(rid)
                info = run.info()
                if info.get("status") != RUNNING or self._done.is_set():
                    # the run ended (the fit may still be finishing: an evaluation, a callback's teardown):
                    # setting the framework's flag now would claim a stop that cannot happen
                    return (
                        f"already finished: run {info.get('name') or rid} is {info.get('status')} at step "
                        f"{info.get('last_step')}, nothing to stop"
                    )
                level = ((info.get("config") or {}).get("control") or {}).get("level")
                if level == "admin":
                    req = run.stop(reason)
                    status = req.wait(timeout=timeout)
                    if status == "applied":
                        return f"stop request #{req.id} applied"
                    if status == "rejected" and run.info().get("status") != RUNNING:
                        # the run ended first: setting the framework's flag now would claim a stop that did not happen
                        return f"already finished: stop request #{req.id} rejected ({req.reason})"
            finally:
                if self.monitor is None and isinstance(store, Store):
                    store.close()
        owner = getattr(self.fn, "__self__", None)
        if owner is not None and hasattr(owner, "should_stop"):
            owner.should_stop = True
            return "trainer.should_stop = True"
        if owner is not None and hasattr(owner, "stop_training"):
            owner.stop_training = True
            return "model.stop_training = True"
        control = getattr(owner, "control", None)
        if control is not None and hasattr(control, "should_training_stop"):
            control.should_training_stop = True
            return "trainer.control.should_training_stop = True"
        raise RuntimeError(
            f"cannot stop {self.fn!r}: give the callback control='admin' (a stop request), or "
            "run a Lightning, Keras or Hugging Face fit method"
        )

    def __repr__(self) -> str:
        state = "running" if self.running else ("failed" if self._exc is not None else "finished")
        return f"BackgroundFit({state}, run={self.run_id!r})"


def fit_in_background(fn, *args, monitor: bool = True, **kwargs) -> BackgroundFit:
    """Run ``fn(*args, **kwargs)`` (e.g. ``trainer.fit, model, dm``) in a thread; show a Monitor.

    Returns a :class:`BackgroundFit`: ``wait()`` (result, or the fit's exception re-raised),
    ``result()``, ``exception()``, ``done()``, ``stop()``. ``monitor=False`` shows nothing (the
    keyword is taken by this function, not passed to ``fn``).

    >>> fit = fit_in_background(trainer.fit, model, dm)             # doctest: +SKIP
    >>> fit = fit_in_background(model.fit, x, y, epochs=3, callbacks=[TMonCallback()])   # Keras
    >>> fit = fit_in_background(trainer.train)                                          # HF
    """
    return BackgroundFit(fn, args, kwargs, monitor=monitor)
