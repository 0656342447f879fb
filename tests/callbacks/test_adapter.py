"""The shared adapter layer: step/data timing, checkpoint scanning and decision dispatch as every
adapter does them, the never-crash helpers, and the run config adapters store and analysis reads."""

import os
import warnings

import pytest

from tmon_callbacks import _adapter
from tmon_callbacks._adapter import (
    CheckpointWatcher,
    Rejected,
    StepClock,
    TMonCallbackWarning,
    apply_decisions,
    guarded,
    warn_once,
)
from tmon_core.control import Rollback, SaveCheckpoint, SetParams, Stop
from tmon_core.run_config import UNSET, RunConfig


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(_adapter, "_perf", fake)
    return fake


def run(clock, sc, begin, end, stepped=True):
    clock.t = begin
    sc.begin()
    clock.t = end
    return sc.end(stepped)


# ---------------------------------------------------------------------------- StepClock
def test_step_time_and_the_wait_since_the_previous_end(clock):
    sc = StepClock()
    assert run(clock, sc, 1.0, 3.0) == (2.0, None)  # the fit's first step: nothing to count the wait from
    assert run(clock, sc, 3.5, 4.0) == (0.5, 0.5)
    clock.t = 4.25
    sc.pause()  # e.g. HF's on_log, on_evaluate, on_save: that time is not data loading
    assert run(clock, sc, 5.0, 6.0) == (1.0, 0.75)


def test_an_epoch_start_counts_the_first_wait_from_it_or_not_at_all(clock):
    sc = StepClock()
    run(clock, sc, 0.0, 1.0)
    clock.t = 2.0
    sc.new_epoch(first_wait=True)  # Lightning: the epoch's iterator is made after its start hook
    assert run(clock, sc, 2.5, 3.0) == (0.5, 0.5)
    clock.t = 4.0
    sc.new_epoch(first_wait=False)  # HF, Keras: the epoch's first step has no data_time
    assert run(clock, sc, 5.0, 6.0) == (1.0, None)
    assert run(clock, sc, 6.25, 7.0) == (0.75, 0.25)


def test_an_end_without_a_begin_has_no_times(clock):
    sc = StepClock()
    clock.t = 1.0
    assert sc.end() == (None, None)


def test_accumulation_sums_the_window_and_returns_it_at_the_stepped_end(clock):
    sc = StepClock()
    clock.t = 0.0
    sc.new_epoch(first_wait=True)
    assert run(clock, sc, 1.0, 2.0, stepped=False) == (None, None)
    assert run(clock, sc, 2.5, 3.0, stepped=False) == (None, None)
    assert run(clock, sc, 4.0, 6.0, stepped=True) == (3.5, 2.5)  # busy 1 + 0.5 + 2, waits 1 + 0.5 + 1
    assert run(clock, sc, 7.0, 8.0) == (1.0, 1.0)  # the window closed with its step
    sc.reset()  # a new fit: no previous end, the first micro-batch has no wait (the window's sum skips it)
    assert run(clock, sc, 9.0, 9.5, stepped=False) == (None, None)
    assert run(clock, sc, 9.75, 10.0) == (0.75, 0.25)
    sc.reset()
    assert run(clock, sc, 11.0, 12.0) == (1.0, None)


# ---------------------------------------------------------------------------- CheckpointWatcher
def write(path, mtime):
    with open(path, "w") as f:
        f.write("x")
    os.utime(path, (mtime, mtime))
    return os.path.abspath(path)


def test_watcher_reports_new_rewritten_and_removed_files_by_mtime(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    old = write(d / "old.ckpt", 100)
    w = CheckpointWatcher(CheckpointWatcher.in_folders([d, tmp_path / "not-yet"], "*.ckpt"))
    assert w.scan() == (
        [old],
        [],
    )  # the first scan of a fit takes in earlier runs' files (the caller ignores it)
    assert w.scan() == ([], [])
    a = write(d / "a.ckpt", 200)
    write(d / "a.txt", 200)  # not a checkpoint name
    assert w.scan() == ([a], [])
    write(d / "a.ckpt", 300)  # rewritten (top-k's best, save_last)
    os.remove(old)
    assert w.scan() == ([a], [old])
    later = tmp_path / "not-yet"
    later.mkdir()  # ModelCheckpoint makes its folder at its first save
    b = write(later / "b.ckpt", 400)
    assert w.scan() == ([b], [])
    assert w.origin(b) == 1 and w.origin(a) == 0


def test_a_file_matched_by_two_patterns_is_reported_once_with_the_first(tmp_path):
    p = write(tmp_path / "m-01.keras", 100)
    w = CheckpointWatcher([str(tmp_path / "m-*.keras"), str(tmp_path / "*.keras")])
    assert w.scan() == ([p], [])
    assert w.origin(p) == 0


def test_known_files_inside_the_patterns_are_not_new(tmp_path):
    w = CheckpointWatcher(CheckpointWatcher.in_folders([tmp_path], "*.ckpt"))
    w.scan()
    mine = write(tmp_path / "tmon-run-step=3.ckpt", 100)  # saved on request into ModelCheckpoint's folder
    assert w.covers(mine)
    w.known(mine)
    theirs = write(tmp_path / "epoch=0.ckpt", 100)
    assert w.scan() == ([theirs], [])
    os.remove(mine)
    assert w.scan() == ([], [mine])


def test_known_files_outside_the_patterns_are_reported_once_gone(tmp_path):
    """HF's checkpoint directories: recorded from on_save, removed by save_total_limit's rotation."""
    w = CheckpointWatcher()
    one, two = tmp_path / "checkpoint-1", tmp_path / "checkpoint-2"
    one.mkdir()
    two.mkdir()
    assert not w.covers(one)
    w.known(one)
    w.known(two)
    assert w.scan() == ([], [])
    one.rmdir()
    assert w.scan() == ([], [str(one)])
    assert w.scan() == ([], [])


# ---------------------------------------------------------------------------- apply_decisions
class FakeController:
    def __init__(self):
        self.resolved = []

    def resolve(self, d, step, applied, **kw):
        self.resolved.append((type(d).__name__, step, applied, kw))


def test_decisions_go_to_the_handler_of_their_class_and_are_resolved():
    ctl = FakeController()
    seen = []
    handlers = {
        SetParams: lambda d: seen.append(d) or {"old": {"lr": 1}, "new": {"lr": 2}},
        SaveCheckpoint: lambda d: None,  # resolved later, when the framework has written it
        Stop: lambda d: {"event": "stopped", "reason": d.reason},
    }
    decisions = [SetParams("api"), SaveCheckpoint("api"), Stop("api", reason="enough"), Rollback("api")]
    apply_decisions(ctl, decisions, 7, handlers)
    assert seen == [decisions[0]]
    assert ctl.resolved == [
        ("SetParams", 7, True, {"old": {"lr": 1}, "new": {"lr": 2}}),
        ("Stop", 7, True, {"event": "stopped", "reason": "enough"}),
        ("Rollback", 7, False, {"reason": "unknown decision Rollback"}),  # the adapters' text for no handler
    ]


def test_a_handler_that_raises_rejects_its_decision_and_the_next_one_still_applies():
    class ParamRejected(Rejected):  # as _torch.ParamRejected
        pass

    def reject(d):
        raise ParamRejected("SGD has no 'betas'")

    def crash(d):
        raise KeyError("lr")

    ctl = FakeController()
    apply_decisions(
        ctl,
        [SetParams("api"), Rollback("api"), Stop("api")],
        3,
        {SetParams: reject, Rollback: crash, Stop: lambda d: {"reason": "stop requested"}},
    )
    assert ctl.resolved == [
        ("SetParams", 3, False, {"reason": "SGD has no 'betas'"}),
        ("Rollback", 3, False, {"reason": "KeyError: 'lr'"}),
        ("Stop", 3, True, {"reason": "stop requested"}),
    ]
    apply_decisions(
        None, [SetParams("api")], 3, {SetParams: reject}
    )  # a rank that only applies: no controller


def test_one_function_for_every_decision_still_works():
    ctl = FakeController()
    apply_decisions(ctl, [Stop("api")], 1, lambda d: {"reason": "r"})
    assert ctl.resolved == [("Stop", 1, True, {"reason": "r"})]


# ---------------------------------------------------------------------------- guarded, warn_once
def test_a_failing_hook_warns_once_and_returns_none():
    class Callback:
        calls = 0

        @guarded
        def on_step(self, x):
            self.calls += 1
            raise ValueError(f"bad {x}")

    cb = Callback()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cb.on_step(1) is None
        assert cb.on_step(2) is None
    assert cb.calls == 2
    assert [str(w.message) for w in caught] == [
        "tmon: Callback.on_step failed (ValueError: bad 1); training continues"
    ]
    assert caught[0].category is TMonCallbackWarning and caught[0].filename == __file__
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_once(cb, "other", RuntimeError("x"))
        warn_once(cb, "other", RuntimeError("y"))
    assert len(caught) == 1


# ---------------------------------------------------------------------------- RunConfig
def test_run_config_stores_only_what_was_given():
    cfg = RunConfig(
        framework="keras", precision="16-mixed", batch_size=None, callbacks=[{"name": "EarlyStopping"}]
    )
    assert cfg.as_dict() == {
        "framework": "keras",
        "precision": "16-mixed",
        "callbacks": [{"name": "EarlyStopping"}],
        "batch_size": None,
    }
    assert RunConfig().as_dict() == {}
    assert not UNSET and repr(UNSET) == "UNSET"
    with pytest.raises(TypeError):
        RunConfig(batchsize=32)  # a key nobody reads is a typo, found where it is written


def test_run_config_reads_a_stored_config_missing_keys_as_none():
    cfg = RunConfig.read({"framework": "transformers", "accumulate_grad_batches": 4, "someone_elses": 1})
    assert cfg.framework == "transformers" and cfg.accumulate_grad_batches == 4 and cfg.batch_size is None
    assert RunConfig.read(None).precision is None
    assert "callbacks" in RunConfig.keys() and "framework" in RunConfig.keys()


def test_run_config_callbacks_is_the_events_key():
    from tmon_core import events as ev

    assert ev.CONFIG_CALLBACKS in RunConfig.keys()
