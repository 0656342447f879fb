"""The recorder under real conditions: tensors, a failing or locked store, several processes."""

import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

from tmon_core import Recorder, TMonStoreWarning, open_store


def test_tensors_are_detached_and_converted_at_flush(store_url):
    torch = pytest.importorskip("torch")
    w = torch.ones(3, requires_grad=True)
    rec = Recorder(store_url, flush_interval=0.05)
    for s in range(20):
        loss = (w * (s + 1)).sum()
        rec.log({"loss": loss, "half": torch.tensor(0.5, dtype=torch.bfloat16), "i": torch.tensor(s)}, step=s)
    with pytest.raises(TypeError, match="one element"):
        rec.log({"vec": torch.ones(3)}, step=20)
    with pytest.raises(TypeError, match="'loss'.*one element"):  # a key set seen before: checked all the same
        rec.log(
            {
                "loss": torch.ones(2, requires_grad=True),
                "half": torch.tensor(0.5, dtype=torch.bfloat16),
                "i": torch.tensor(0),
            },
            step=20,
        )
    rec.close()
    run = open_store(store_url).run(rec.run_id)
    assert run.metrics("loss").value.tolist() == [3.0 * (s + 1) for s in range(20)]
    assert run.metrics("half").value.tolist() == [0.5] * 20
    assert run.metrics("i").value.tolist() == [float(s) for s in range(20)]


def test_unwritable_store_warns_and_never_raises(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root ignores permissions: use a path under a regular file instead
        (tmp_path / "afile").write_text("x")
        url = f"sqlite:///{tmp_path}/afile/sub/tmon.db"
    else:
        url = f"sqlite:///{ro}/tmon.db"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = Recorder(url, flush_interval=0.05, close_timeout=0.5)
        for s in range(100):
            rec.log({"loss": 1.0}, step=s)
        time.sleep(0.2)
        rec.close()
    assert rec.problems and "cannot open its store" in rec.problems[0]
    assert rec.dropped == 100  # counted and said, never silent
    assert "lost" in rec.problems[-1]
    assert any(issubclass(w.category, TMonStoreWarning) for w in caught)


def test_store_locked_by_another_writer_then_released_loses_nothing(store_url, tmp_path):
    rec = Recorder(store_url, flush_interval=0.05, busy_timeout=0.2)
    rec.log({"x": 0.0}, step=0)
    assert rec.flush()
    blocker = sqlite3.connect(tmp_path / "tmon.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # hold the write lock much longer than the busy timeout
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for s in range(1, 500):
            rec.log({"x": float(s)}, step=s)
        time.sleep(1.0)
        assert any("locked" in p for p in rec.problems)
        blocker.execute("ROLLBACK")
        blocker.close()
        rec.close()
    df = open_store(store_url).run(rec.run_id).metrics("x")
    assert df.step.tolist() == list(range(500))
    assert rec.dropped == 0
    assert any(p.startswith("tmon store recovered") for p in rec.problems)
    gap = open_store(store_url).run(rec.run_id).events("store_gap")
    assert (
        len(gap) == 1
        and gap.data[0]["until"] - gap.data[0]["since"] >= 0.5
        and gap.data[0]["dropped_points"] == 0
    )


def test_buffer_cap_drops_oldest_and_counts_them(store_url, tmp_path):
    rec = Recorder(store_url, flush_interval=0.05, busy_timeout=0.05, max_buffer=1000, close_timeout=1)
    rec.log({"x": 0.0}, step=0)
    assert rec.flush()
    blocker = sqlite3.connect(tmp_path / "tmon.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for s in range(1, 3001):
            rec.log({"x": float(s)}, step=s)
        time.sleep(0.5)
        blocker.execute("ROLLBACK")
        blocker.close()
        rec.close()
    df = open_store(store_url).run(rec.run_id).metrics("x")
    assert rec.dropped > 0
    assert len(df) + rec.dropped == 3001  # every point is either stored or counted as dropped
    assert df.step.iloc[-1] == 3000  # the newest points are the ones kept
    assert open_store(store_url).run(rec.run_id).info()["dropped_points"] == rec.dropped


WRITER = textwrap.dedent("""
    import sys
    from tmon_core import Recorder
    url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rec = Recorder(url, run_name=name, flush_interval=0.05)
    for s in range(n):
        rec.log({"a": float(s), "b": 2.0 * s, "c": 1.0, "d": 0.5, "e": -1.0}, step=s)
    rec.close()
    assert not rec.problems, rec.problems
    print(rec.run_id)
""")


@pytest.mark.slow
def test_two_processes_write_one_sqlite_file_without_lock_errors_or_loss(store_url):
    n = 30_000
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, store_url, f"p{i}", str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "locked" not in err
    store = open_store(store_url)
    for out, _ in outs:
        run = store.run(out.strip())
        assert run.status == "completed"
        assert run.count_points() == 5 * n
        assert run.metrics("a").step.tolist() == list(range(n))


def test_close_is_idempotent_and_context_manager_marks_failure(store_url):
    with pytest.raises(RuntimeError):
        with Recorder(store_url, flush_interval=0.05) as rec:
            rec.log({"x": 1.0}, step=0)
            raise RuntimeError("boom")
    rec.close()
    info = open_store(store_url).run(rec.run_id).info()
    assert info["status"] == "failed" and "boom" in info["error"]["message"]


def test_writer_thread_ends_after_close(store_url):
    before = {t.name for t in threading.enumerate()}
    rec = Recorder(store_url, flush_interval=0.05)
    rec.start_sampler(0.1)
    rec.log({"x": 1.0}, step=0)
    rec.close()
    time.sleep(0.1)
    assert {t.name for t in threading.enumerate()} - before == set()


class Flaky:
    """A value whose conversion fails only at flush time (adapters may hand over lazy values)."""

    def __float__(self):
        raise RuntimeError("device went away")


def test_a_value_that_fails_to_convert_costs_only_itself(store_url):
    rec = Recorder(store_url, flush_interval=0.05)
    for s in range(10):
        rec.log({"x": Flaky() if s == 4 else float(s), "y": 1.0}, step=s)
    rec.close()
    run = open_store(store_url).run(rec.run_id)
    x = run.metrics("x").value.tolist()
    assert len(x) == 10 and x[:4] == [0.0, 1.0, 2.0, 3.0] and x[5:] == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert x[4] != x[4]  # NaN, and said
    assert any("could not be converted" in p for p in rec.problems)
    assert len(run.metrics("y")) == 10


def test_tensors_are_converted_in_bulk_not_one_by_one(store_url):
    torch = pytest.importorskip("torch")

    class Counted(torch.Tensor):
        calls = 0

        def __float__(self):
            Counted.calls += 1
            return super().__float__()

    rec = Recorder(store_url, flush_interval=0.05)
    for s in range(50):
        rec.log({"loss": torch.tensor(float(s)).as_subclass(Counted)}, step=s)
    rec.close()
    assert open_store(store_url).run(rec.run_id).metrics("loss").value.tolist() == [
        float(s) for s in range(50)
    ]
    assert Counted.calls == 0  # one stacked transfer per flush, never a per-value __float__ (a GPU sync each)


def test_repeated_key_sets_keep_every_value_whatever_its_type(store_url):
    # log() packs a key set it has seen before straight into a row; types that change from call
    # to call (int, float, bool, numpy, tensor, a value converted only at flush) all land exactly
    import numpy as np

    torch = pytest.importorskip("torch")

    class Lazy:  # a value whose float is only taken by the writer
        def __float__(self):
            return 7.5

    cycle = [
        1,
        2.5,
        True,
        np.float32(0.25),
        np.int64(3),
        torch.tensor(4.0),
        Lazy(),
        torch.tensor(5, dtype=torch.int32),
        10**400,
    ]
    rec = Recorder(store_url, flush_interval=0.05)
    for step in range(len(cycle) * 3):
        rec.log({"v": cycle[step % len(cycle)], "step_twice": float(step)}, step=step)
    rec.close()
    assert not rec.problems
    run = open_store(store_url).run(rec.run_id)
    want = [1.0, 2.5, 1.0, 0.25, 3.0, 4.0, 7.5, 5.0, math.inf] * 3
    assert run.metrics("v").value.tolist() == want
    assert run.metrics("step_twice").value.tolist() == [float(s) for s in range(len(want))]


def test_logged_tensors_are_let_go_once_written_and_freed_by_the_logging_thread(store_url):
    # the writer hands the tensors it converted back: the next log() frees them (in a training
    # process, freeing a tensor on the writer thread costs a GIL hand-off each); a run that logs
    # nothing more lets the next flush free them, and close() whatever is left
    import weakref

    torch = pytest.importorskip("torch")
    w = torch.ones(2, requires_grad=True)
    freed_on: list[str] = []

    def logged(rec, s):
        loss = (w * s).sum()  # carries a graph: the recorder keeps a detached view of it
        kept = torch.tensor(float(s))
        weakref.finalize(kept, lambda: freed_on.append(threading.current_thread().name))
        rec.log({"loss": loss, "kept": kept}, step=s)
        return weakref.ref(kept)

    rec = Recorder(store_url, flush_interval=30, heartbeat_timeout=60)
    refs = [logged(rec, s) for s in range(5)]
    assert all(r() is not None for r in refs)  # not written yet: held
    assert rec.flush()
    assert all(r() is not None for r in refs)  # written; still referenced until the next log()
    refs.append(logged(rec, 5))
    assert all(r() is None for r in refs[:5])
    assert freed_on == [threading.current_thread().name] * 5

    assert rec.flush()  # nothing logged after this write...
    assert refs[5]() is not None
    assert rec.flush()  # ...so the next one lets go of it
    assert refs[5]() is None
    refs.append(logged(rec, 6))
    rec.close()
    assert refs[6]() is None
    run = open_store(store_url).run(rec.run_id)
    assert run.metrics("kept").value.tolist() == [float(s) for s in range(7)]
    assert run.metrics("loss").value.tolist() == [2.0 * s for s in range(7)]


ATTACHED = textwrap.dedent("""
    import sys
    from tmon_core import Recorder
    rec = Recorder(sys.argv[1], flush_interval=0.05)
    assert rec.next_step == 0
    rec.log({"x": 1.0}, step=0)
    rec.log({"x": 2.0}, step=4)
    assert rec.next_step == 5
    rec.close()
    extra = Recorder.attach(rec.url, rec.run_id, like=rec, flush_interval=0.05)
    assert extra.next_step == 5
    extra.log({"test_loss": 0.5})  # without a step: the one after the fit's last
    assert extra.flush()
    print(rec.run_id)  # and exit without closing it: the exit hook must leave the run as it was
""")


def test_attach_adds_to_an_ended_run_after_its_last_step_without_moving_it(store_url):
    out = subprocess.run(
        [sys.executable, "-c", ATTACHED, store_url], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    run = open_store(store_url).run(out.stdout.split()[-1])
    assert run.info()["status"] == "completed" and run.info()["last_step"] == 4
    assert run.metrics("test_loss").step.tolist() == [5]
