"""What ``tmon_callbacks._workarounds.python`` relies on in the interpreter, checked against this Python:
if one of these fails, Python changed it and the workaround must change with it."""

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from tmon_callbacks._workarounds import python as wa

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------------------- caller_locals
class Driver:
    def __init__(self, callback):
        self.callbacks = [callback]
        marker = "the driver's own local"  # noqa: F841 (read through the frame)
        self.found = callback.hook()


class Callback:
    def hook(self):
        return wa.caller_locals(lambda obj: isinstance(obj, Driver) and self in obj.callbacks)


def test_caller_locals_reads_the_frame_of_the_object_calling_the_hook():
    driver = Driver(Callback())
    assert driver.found["self"] is driver
    assert driver.found["marker"] == "the driver's own local"


def test_caller_locals_gives_none_beyond_its_depth_or_when_no_frame_matches():
    assert wa.caller_locals(lambda obj: False) is None

    def deep(n):
        if n == 0:
            return wa.caller_locals(lambda obj: isinstance(obj, Driver), max_depth=3)
        return deep(n - 1)

    class Far:
        def __init__(self):
            self.callbacks = []
            self.found = deep(5)

    assert Far().found is None


def test_caller_locals_survives_a_predicate_that_raises():
    def boom(obj):
        raise RuntimeError("x")

    assert wa.caller_locals(boom) is None


# ---------------------------------------------------------------------------- stdlib_showwarning
def test_warnings_keeps_its_own_showwarning_under_the_private_name():
    import warnings as w

    orig = wa.stdlib_showwarning()
    assert (
        callable(orig) and orig.__name__ == "showwarning" and orig.__module__ in ("warnings", "_py_warnings")
    )
    # what Python prints, to the file it is handed (the chain of wrappers ends here); in a fresh
    # interpreter: pytest routes this test's warnings elsewhere
    code = (
        f"import io, sys; sys.path.insert(0, {REPO!r}); from tmon_callbacks._workarounds.python import "
        "stdlib_showwarning; out = io.StringIO(); "
        "stdlib_showwarning()('kept as printed', UserWarning, 'train.py', 12, file=out); "
        "print(repr(out.getvalue()))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == repr("train.py:12: UserWarning: kept as printed\n"), result.stderr
    # warnings itself compares showwarning against this name to know whether it was replaced
    with w.catch_warnings(record=True):
        assert w.showwarning is orig


# ---------------------------------------------------------------------------- uncaught exceptions
SCRIPT = textwrap.dedent("""
    import sys, threading
    sys.path.insert(0, {repo!r})
    from tmon_callbacks._workarounds.python import unwatch, watch_uncaught

    class Session:  # what watch_uncaught needs of a RunSession
        def __init__(self, name):
            self.name, self.ended = name, False

        def fail(self, exc, step):
            self.ended = True
            print(f"{{self.name}} failed at step {{step}}: {{type(exc).__name__}}: {{exc}}", flush=True)

    def in_thread():
        s = Session("thread run")
        watch_uncaught(s, lambda: 7)
        raise ValueError("in a thread")

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    other = Session("not watched any more")
    watch_uncaught(other)
    unwatch(other)
    main = Session("main run")
    watch_uncaught(main, lambda: 3)
    raise KeyError("at the top level")
""")


def test_uncaught_exceptions_of_a_thread_and_of_the_script_fail_the_watched_run(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(repo=REPO))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "thread run failed at step 7: ValueError: in a thread",
        "main run failed at step 3: KeyError: 'at the top level'",
    ]
    # the hooks that were there still ran: Python's own traceback printing
    assert "Exception in thread" in result.stderr and "ValueError: in a thread" in result.stderr
    assert "Traceback" in result.stderr and "KeyError: 'at the top level'" in result.stderr


def test_the_interpreter_hooks_have_the_shape_the_workaround_reads():
    assert callable(sys.excepthook) and callable(threading.excepthook)
    seen = []

    def hook(args):
        seen.append((args.exc_type, args.exc_value, args.thread))

    previous = threading.excepthook
    threading.excepthook = hook
    try:
        t = threading.Thread(target=lambda: 1 / 0)
        t.start()
        t.join()
    finally:
        threading.excepthook = previous
    assert seen[0][0] is ZeroDivisionError and isinstance(seen[0][1], ZeroDivisionError) and seen[0][2] is t


IPYTHON = textwrap.dedent("""
    import warnings
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    got = []
    shell.events.register("post_run_cell", lambda result: got.append(result.error_in_exec))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shell.run_cell("raise ValueError('in a cell')")  # (silent=True would skip the events)
    print("SEEN", repr(got[-1]))
""")


def test_ipython_tells_post_run_cell_the_exception_of_a_cell():
    """In a fresh interpreter: a shell made here would make every later test look like a notebook."""
    pytest.importorskip("IPython")
    result = subprocess.run([sys.executable, "-c", IPYTHON], capture_output=True, text=True, timeout=120)
    assert "SEEN ValueError('in a cell')" in result.stdout, result.stdout + result.stderr
