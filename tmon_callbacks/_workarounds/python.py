"""Where tmon relies on the Python interpreter's internals, and why.

HF's ``TrainerCallback`` and Keras' ``Callback`` have no exception hook, and neither hands its
callbacks the object that drives them (the ``Trainer``, the ``CallbackList``); log capture must
print a warning as Python would. Each name here closes one of those gaps with the interpreter's own
machinery; ``tests/callbacks/test_workarounds_python.py`` fails loudly when Python changes what it
relies on. Nothing else in tmon touches these internals.
"""

from __future__ import annotations

import inspect
import sys
import threading
import warnings
import weakref


# ---------------------------------------------------------------------------- the calling frames
def caller_locals(predicate, max_depth: int = 30) -> dict | None:
    """The locals of the nearest calling frame whose ``self`` satisfies ``predicate``, else None.

    Why: a callback is not handed the object calling it, but that object is ``self`` in a frame
    up the stack (CPython's ``inspect.currentframe`` / ``f_back`` / ``f_locals``). For set-up hooks
    only (once per fit): e.g. the ``Trainer`` whose ``__init__`` is calling ``on_init_end``, or the
    ``CallbackList`` calling ``on_train_begin``.
    """
    frame = inspect.currentframe()
    try:
        frame = frame.f_back if frame is not None else None
        for _ in range(max_depth):
            if frame is None:
                return None
            obj = frame.f_locals.get("self")
            if obj is not None:
                try:
                    if predicate(obj):
                        return dict(frame.f_locals)
                except Exception:
                    pass
            frame = frame.f_back
        return None
    finally:
        del frame  # a frame held in a local keeps every frame above it (and their locals) alive


# ---------------------------------------------------------------------------- the stdlib's showwarning
def stdlib_showwarning():
    """Python's own ``warnings.showwarning`` (prints to stderr or ``file``), whatever replaced it since.

    Why: log capture wraps ``warnings.showwarning`` and must end a chain of wrappers by printing as
    Python does; after others wrapped it (pytest, IPython), the function Python started with is
    only reachable as ``warnings._showwarning_orig`` (the name ``warnings`` itself compares against
    to know whether ``showwarning`` was replaced).
    """
    return warnings._showwarning_orig  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- uncaught exceptions
# session -> (thread ident, step getter): runs whose fit may end by an exception no hook sees
_watched: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_hooks_installed = False


def watch_uncaught(session, step=None) -> None:
    """Fail ``session`` (a ``tmon_core.session.RunSession``) if an exception escapes to the top
    level of the thread running its fit.

    The last resort of adapters that cannot wrap every way a fit can raise: an uncaught exception
    in a script (``sys.excepthook``), in a thread (``threading.excepthook``) or in a notebook cell
    (IPython's ``post_run_cell``) ends a still-open run as failed with that exception, at the step
    ``step()`` returns. A run whose fit finished (or that an adapter already failed) is left alone;
    so is a run trained in another thread than the one that raised.

    Why: the interpreter's hooks are the only place such an exception is seen; each is chained
    (the hook that was there is called after ours), so what the user sees is unchanged.
    """
    _install_hooks()
    _watched[session] = (threading.get_ident(), step)


def unwatch(session) -> None:
    _watched.pop(session, None)


def _fail_watched(exc: BaseException | None, thread_ident: int) -> None:
    if exc is None:
        return
    for session, (ident, step) in list(_watched.items()):
        if ident != thread_ident or session.ended:
            continue
        try:
            session.fail(exc, step() if step is not None else None)
        except Exception:
            pass
        _watched.pop(session, None)


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    previous_excepthook = sys.excepthook

    def excepthook(exc_type, exc, tb):
        _fail_watched(exc, threading.main_thread().ident)
        previous_excepthook(exc_type, exc, tb)

    sys.excepthook = excepthook
    previous_threading_hook = threading.excepthook

    def threading_excepthook(args):
        # args: threading.ExceptHookArgs (exc_type, exc_value, exc_traceback, thread)
        _fail_watched(args.exc_value, args.thread.ident if args.thread is not None else -1)
        previous_threading_hook(args)

    threading.excepthook = threading_excepthook
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is not None and hasattr(shell, "events"):

        def post_run_cell(result):
            # result: IPython's ExecutionResult; error_in_exec is the exception the cell raised
            _fail_watched(getattr(result, "error_in_exec", None), threading.get_ident())

        shell.events.register("post_run_cell", post_run_cell)


__all__ = ["caller_locals", "stdlib_showwarning", "unwatch", "watch_uncaught"]
