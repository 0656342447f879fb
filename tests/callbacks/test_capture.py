"""Log capture in RunSession, the lifecycle every adapter goes through: logging records at WARNING and
above, warnings.warn calls and (optionally) printed lines are kept with the run, with their step, while
the user sees exactly what they saw before; everything is removed when the run ends, also when runs
overlap; the report is made when a run ends and never breaks training."""

import logging
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest

import tmon_core
from tmon_callbacks._options import CallbackOptions
from tmon_core import TMonStoreWarning
from tmon_core.capture import _Handler
from tmon_core.session import RunSession, TMonCallbackWarning

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def session(store_url, **kw):
    kw.setdefault("sample_interval", None)
    return RunSession(CallbackOptions(store=store_url, flush_interval=0.05, **kw), "test")


def logs(store_url, s):
    return tmon_core.open_store(store_url).run(s.run_id).logs()


def our_handlers():
    return [h for h in logging.getLogger().handlers if isinstance(h, _Handler)]


def test_logging_and_warnings_are_kept_with_step_level_and_source(store_url):
    before = warnings.showwarning
    s = session(store_url)
    for step in range(5):
        s.recorder.log({"loss": 1.0}, step=step)
    logging.getLogger("user.data").info("not kept: below WARNING")
    logging.getLogger("user.data").warning("slow shard %s", "07")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("learning rate is high", UserWarning, stacklevel=1)
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("user").exception("step failed")
    logging.getLogger("tmon").warning("tmon could not write to the store")
    warnings.warn("tmon: store locked", TMonStoreWarning, stacklevel=1)
    s.end()
    df = logs(store_url, s)
    rows = list(zip(df.level, df.logger, df.source, df.step))
    assert rows == [
        ("WARNING", "user.data", "logging", 5),
        ("WARNING", "builtins.UserWarning", "warnings", 5),
        ("ERROR", "user", "logging", 5),
        ("WARNING", "tmon", "tmon", 5),  # tmon's own: kept, and marked as such
        ("WARNING", "tmon_core.recorder.TMonStoreWarning", "tmon", 5),
    ]
    assert df.message[0] == "slow shard 07"
    assert (
        df.message[1].startswith("UserWarning: learning rate is high (")
        and "test_capture.py" in df.message[1]
    )
    assert "Traceback" in df.message[2] and "ValueError: bad value" in df.message[2]
    assert not our_handlers() and warnings.showwarning is before


def test_what_the_user_sees_is_unchanged(tmp_path):
    """The same script, with and without a run open: byte-identical stdout and stderr (logging's last-resort
    handler still prints when nothing else is configured; warnings print as before)."""
    script = textwrap.dedent(f"""
        import logging, sys, warnings
        sys.path.insert(0, {REPO!r})
        from tmon_callbacks._options import CallbackOptions
        from tmon_core.session import RunSession
        s = None
        if sys.argv[1] == "tmon":
            s = RunSession(CallbackOptions(store=sys.argv[2], sample_interval=None, report="off"), "test")
        logging.getLogger("x").warning("a warning from logging")
        logging.getLogger("x").info("an info nobody sees")
        warnings.warn("a warning from warnings")
        print("printed")
        if s is not None:
            s.end()
        logging.getLogger("x").error("after the run")
    """)
    url = f"sqlite:///{tmp_path}/t.db"
    plain = subprocess.run(
        [sys.executable, "-c", script, "plain", url], capture_output=True, text=True, timeout=60
    )
    with_tmon = subprocess.run(
        [sys.executable, "-c", script, "tmon", url], capture_output=True, text=True, timeout=60
    )
    assert plain.returncode == with_tmon.returncode == 0, with_tmon.stderr
    assert "a warning from logging" in plain.stderr and "a warning from warnings" in plain.stderr
    assert with_tmon.stdout == plain.stdout and with_tmon.stderr == plain.stderr
    run = tmon_core.open_store(url).latest_run()
    assert sorted(run.logs().source) == ["logging", "warnings"]


def test_capture_output_tees_stdout_and_stderr(store_url, capsys, monkeypatch):
    def show(
        message, category, filename, lineno, file=None, line=None
    ):  # print warnings, as Python does outside pytest
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    monkeypatch.setattr(warnings, "showwarning", show)
    s = session(store_url, capture_output=True)
    s.recorder.log({"loss": 1.0}, step=0)
    print("epoch 1 done")
    sys.stderr.write("progress 10%\rprogress 50%\rprogress 100%\n")
    sys.stdout.write("partial ")
    sys.stdout.write("line\n\n")
    warnings.warn("printed by warnings, kept once", stacklevel=1)
    s.end()
    out, err = capsys.readouterr()
    assert out == "epoch 1 done\npartial line\n\n"  # the user's streams got everything, unchanged
    assert "progress 10%\rprogress 50%\rprogress 100%\n" in err and "kept once" in err
    assert type(sys.stdout).__name__ != "_Tee" and type(sys.stderr).__name__ != "_Tee"
    df = logs(store_url, s)
    assert list(zip(df.source, df.message)) == [
        ("stdout", "epoch 1 done"),
        ("stderr", "progress 100%"),
        ("stdout", "partial line"),
        ("warnings", df.message[3]),
    ]
    assert df.message[3].startswith("UserWarning: printed by warnings, kept once")


def test_overlapping_runs_each_get_their_records_and_everything_goes_when_the_last_ends(store_url):
    before = warnings.showwarning
    a = session(store_url)
    b = session(store_url)
    logging.getLogger("u").warning("both open")
    a.end()  # not in the order they started
    assert len(our_handlers()) == 1 and warnings.showwarning is not before
    logging.getLogger("u").warning("only b")
    got = {}

    def in_thread():  # a run trained in another thread gets that thread's records, alone
        c = session(store_url)
        logging.getLogger("u").warning("from c's thread")
        got["c"] = c

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    logging.getLogger("u").warning("main thread: b's")
    b.end()
    got["c"].end()
    assert not our_handlers() and warnings.showwarning is before
    assert logs(store_url, a).message.tolist() == ["both open"]
    assert logs(store_url, b).message.tolist() == ["both open", "only b", "main thread: b's"]
    assert logs(store_url, got["c"]).message.tolist() == ["from c's thread"]


def test_loggers_that_do_not_propagate_are_heard_too(store_url):
    lib = logging.getLogger("somelib")
    lib.propagate = False
    lib.addHandler(logging.NullHandler())
    try:
        s = session(store_url)
        lib.warning("from a library logger that keeps to itself")
        s.end()
        assert logs(store_url, s).message.tolist() == ["from a library logger that keeps to itself"]
        assert not [h for h in lib.handlers if isinstance(h, _Handler)]
    finally:
        lib.propagate = True
        lib.handlers.clear()


def test_capture_off_records_nothing_and_a_flood_is_capped(store_url):
    s = session(store_url, capture_logs=False)
    logging.getLogger("u").warning("not kept")
    s.end()
    assert logs(store_url, s).empty and not our_handlers()
    s = session(store_url)
    s._capture.max_records = 5
    for i in range(20):
        logging.getLogger("u").warning("again %d", i)
    s.end()
    df = logs(store_url, s)
    assert df.message.tolist()[:5] == [f"again {i}" for i in range(5)]
    assert (
        df.message.tolist()[5] == "tmon stored the first 5 log records of this run; 15 more were not stored"
    )


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"capture_logs": 1}, "capture_logs must be True or False"),
        ({"capture_output": "yes"}, "capture_output must be True or False"),
        ({"report": "sometimes"}, "report must be 'auto' or 'off'"),
    ],
)
def test_options_are_checked(kw, match):
    with pytest.raises(ValueError, match=match):
        CallbackOptions(**kw)


def test_the_report_is_made_when_the_run_ends_unless_off(store_url):
    s = session(store_url)
    s.recorder.log({"loss": float("nan")}, step=0)
    s.fail(RuntimeError("boom"), 0)
    assert s.report is not None and s.report.health == "critical" and s.report.summary["status"] == "failed"
    assert tmon_core.analysis.load_report(s.run_id, store=store_url).health == "critical"
    off = session(store_url, report="off")
    off.end()
    assert off.report is None and tmon_core.analysis.load_report(off.run_id, store=store_url) is None


def test_a_failing_report_warns_once_and_never_raises(store_url, monkeypatch):
    import tmon_core.analysis as analysis

    def broken(*a, **kw):
        raise RuntimeError("analysis exploded")

    monkeypatch.setattr(analysis, "report", broken)
    s = session(store_url)
    with pytest.warns(TMonCallbackWarning, match="analysis exploded"):
        s.end()
    assert s.report is None and s.ended
    assert tmon_core.open_store(store_url).run(s.run_id).status == "completed"


def test_a_record_a_handler_also_printed_is_one_log_error_in_the_report(store_url, capsys):
    lg = logging.getLogger("printed")
    s = session(store_url, capture_output=True)
    handler = logging.StreamHandler(sys.stderr)  # made during the run: it writes through the tee
    lg.addHandler(handler)
    try:
        lg.error("disk quota nearly reached")
        s.end()
    finally:
        lg.removeHandler(handler)
    assert "disk quota nearly reached" in capsys.readouterr().err
    assert sorted(logs(store_url, s).source) == ["logging", "stderr"]  # both kept as captured...
    entries = [e for e in s.report.log_errors if "disk quota" in e["message"]]
    assert [(e["source"], e["count"]) for e in entries] == [("logging", 1)]  # ... reported once
