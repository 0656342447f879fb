"""The Monitor without a browser: widget state (``get_state()``, the lines' x/y) against the store.

Real runs: a tiny Lightning fit (metrics, checkpoints, hardware samples), a Recorder standing in
for a live training (control requests), a long synthetic series (downsampling). The browser and
real-kernel tests are in test_browser.py and test_widgets_kernel.py.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("bqplot")

import tmon_widgets  # noqa: E402
from tmon_core import Recorder, open_store  # noqa: E402
from tmon_core import events as ev  # noqa: E402
from tmon_core.store.downsample import min_max_indices  # noqa: E402
from tmon_widgets import Monitor, fit_in_background  # noqa: E402
from tmon_widgets import _series as series  # noqa: E402
from tmon_widgets import monitor as monitor_mod  # noqa: E402
from tmon_widgets.metrics import default_keys, family, group  # noqa: E402


def arr(widget, name):
    """A bqplot array trait as the browser receives it (decoded from ``get_state()``)."""
    st = widget.get_state()[name]
    return np.frombuffer(st["value"], dtype=st["dtype"]).reshape(st["shape"])


def lightning_fit(url, tmp_dir, epochs=2, **model_kw):
    lp = pytest.importorskip("lightning.pytorch")
    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback

    Model, Data = make()
    ckpt = lp.callbacks.ModelCheckpoint(dirpath=os.path.join(tmp_dir, "ckpts"), save_top_k=-1)
    cb = TMonCallback(url, sample_interval=0.1, run_name=model_kw.pop("run_name", None))
    trainer = lp.Trainer(
        max_epochs=epochs,
        callbacks=[cb, ckpt],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=str(tmp_dir),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            trainer.fit(Model(**model_kw), Data())
        except Exception:
            pass
    return cb.run_id


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two finished Lightning runs in one store (the second with sleeps, so it has hardware samples)."""
    d = tmp_path_factory.mktemp("recorded")
    url = f"sqlite:///{d}/tmon.db"
    a = lightning_fit(url, d / "a", epochs=2, run_name="first")
    b = lightning_fit(url, d / "b", epochs=2, run_name="second", lr=0.02, sleep=0.02)
    return url, a, b


def header_text(mon) -> str:
    """Everything the header shows as text: title and progress, each run's headline alert and the
    list behind its "+K more"."""
    rows = mon.header.rows.values()
    return mon.header.html.value + "".join(r.chip.value + r.listed_html for r in rows)


def line(mon, key, run_id=None):
    run_id = run_id or mon.runs[0].id
    for chart in mon.metrics.charts.values():
        if (run_id, key) in chart.lines:
            return chart.lines[(run_id, key)]
    raise KeyError(key)


# ---------------------------------------------------------------------------- pure parts
def test_import_error_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "bqplot", None)
    from tmon_widgets import _deps

    with pytest.raises(
        ImportError, match=r"tmon_widgets needs ipywidgets and bqplot: pip install 'tmon\[widgets\]'"
    ):
        _deps.require()
    with pytest.raises(ImportError, match="pip install 'tmon"):
        tmon_widgets.__getattr__("Monitor")


def test_downsampling_keeps_extremes_and_stable_buckets():
    rng = np.random.default_rng(0)
    x = np.arange(100_000, dtype=np.float64)
    y = rng.normal(size=len(x))
    y[12_345], y[77_777], y[500] = 50.0, -40.0, np.nan
    keep, width = min_max_indices(x, y, 2000)
    assert len(keep) <= 2000
    assert 12_345 in keep and 77_777 in keep
    assert np.all(np.diff(x[keep]) > 0)
    # growing the series never moves the old bucket edges (the width only doubles)
    keep2, width2 = min_max_indices(np.arange(150_000.0), np.r_[y, rng.normal(size=50_000)], 2000, width)
    assert width2 in (width, 2 * width) and math.log2(width2).is_integer()
    # a bucket of only NaN keeps one NaN point: a NaN loss stays visible
    y2 = np.ones(10_000)
    y2[4000:4400] = np.nan  # wider than a bucket (128 steps here)
    keep, w = min_max_indices(np.arange(10_000.0), y2, 200)
    assert np.isnan(y2[keep]).any()


def test_ema_and_epoch_axis():
    v = np.array([1.0, np.nan, 3.0, 5.0])
    s = series.ema(v, 0.5)
    assert s[0] == pytest.approx(1.0) and np.isnan(s[1])
    assert s[2] == pytest.approx((0.25 * 1 + 0.5 * 3) / 0.75)
    # integer epochs (Lightning): 10 steps per epoch -> fractions within each
    steps = np.arange(30.0)
    e = series.epoch_axis(steps, steps, np.floor(steps / 10))
    assert e[0] == 0 and e[5] == pytest.approx(0.5) and e[25] == pytest.approx(2.5)
    # fractional epochs (HF) are interpolated
    assert series.epoch_axis(np.array([5.0]), np.array([0.0, 10.0]), np.array([0.0, 1.0]))[
        0
    ] == pytest.approx(0.5)


def test_metric_families_and_groups():
    assert family("train_loss_step") == family("val_loss") == family("loss") == "loss"
    assert family("lr/pg1") == "lr" and family("eval/accuracy") == "accuracy"
    assert group("val_acc") == "val" and group("eval_loss") == "val" and group("lr/opt1/pg0") == "optimizer"
    assert group("step_time") == "system" and group("train_acc") == "train"
    keys = [
        "loss",
        "train_loss_step",
        "val_loss",
        "val_acc",
        "train_acc",
        "lr",
        "lr/pg1",
        "momentum",
        "step_time",
    ]
    assert default_keys(keys) == ["loss", "train_loss_step", "val_loss", "train_acc", "val_acc", "lr"]


# ---------------------------------------------------------------------------- a recorded run
def test_lines_match_the_store(recorded):
    url, a, _ = recorded
    mon = Monitor(a, store=url, interval=None)
    mon.metrics.show_markers.value = True
    run = open_store(url).run(a)
    assert mon.runs[0].status == "completed" and "first" in mon.header.html.value
    assert (
        "completed" in mon.header.html.value and f"<b>{run.info()['last_step']}</b>" in mon.header.html.value
    )
    shown = mon.metrics.selected
    assert {"loss", "val_loss", "lr"} <= set(shown)
    for key in shown:
        df = run.metrics(key)
        raw, smooth = line(mon, key)
        np.testing.assert_array_equal(arr(raw, "x"), df.step.to_numpy(np.float64))
        np.testing.assert_allclose(arr(raw, "y"), df.value.to_numpy())
        assert not smooth.visible
    assert set(mon.metrics.charts) == {family(k) for k in shown}
    # the latest-values table and the markers at the checkpoints
    assert "val_loss" in mon.metrics.latest.value
    rules = mon.metrics.charts["loss"].markers["checkpoint"]
    ev = run.events("checkpoint")
    # at the metric step each was saved after: Lightning records its global_step, one past it
    assert rules.visible and sorted(arr(rules, "x")[:, 0]) == sorted(ev.step.astype(float) - 1)
    mon.close()


def test_options_smoothing_axes_log_timeframe_and_export(recorded, tmp_path):
    url, a, _ = recorded
    mon = Monitor(a, store=url, interval=None, metrics=["loss", "epoch"])
    run = mon.runs[0].run
    df = run.metrics("loss")
    mon.metrics.smoothing.value = 0.6
    raw, smooth = line(mon, "loss")
    assert smooth.visible and raw.opacities == [0.3]
    np.testing.assert_allclose(arr(smooth, "y"), series.ema(df.value.to_numpy(), 0.6))
    mon.metrics.xaxis.value = "time"
    raw, _ = line(mon, "loss")
    np.testing.assert_allclose(arr(raw, "x"), df.wall_time.to_numpy() - run.info()["created_at"])
    mon.metrics.xaxis.value = "epoch"
    raw, _ = line(mon, "loss")
    ep = run.metrics("epoch")
    expect = series.epoch_axis(df.step.to_numpy(float), ep.step.to_numpy(float), ep.value.to_numpy())
    np.testing.assert_allclose(arr(raw, "x"), expect)
    assert arr(raw, "x").max() < 2 and arr(raw, "x").min() == 0
    mon.metrics.xaxis.value = "step"
    mon.metrics.yscale.value = "log"
    assert type(mon.metrics.charts["loss"].ys).__name__ == "LogScale"
    mon.metrics.yscale.value = "linear"
    mon.metrics.timeframe.options = list(mon.metrics.timeframe.options) + [("last 10 steps", 10)]
    mon.metrics.timeframe.value = 10
    raw, _ = line(mon, "loss")
    last = int(df.step.max())
    np.testing.assert_array_equal(arr(raw, "x"), np.arange(last - 9, last + 1, dtype=float))
    path = mon.export_csv(tmp_path / "out.csv")
    import pandas as pd

    out = pd.read_csv(path)
    assert set(out.key) == {"loss", "epoch"} and len(out[out.key == "loss"]) == 10
    assert "wrote" in mon.metrics.export_out.value
    mon.close()


def test_compare_runs_and_overlay(recorded):
    url, a, b = recorded
    mon = Monitor(runs=[a, b], store=url, interval=None)
    run_a, run_b = (open_store(url).run(r) for r in (a, b))
    ra, _ = line(mon, "loss", a)
    rb, _ = line(mon, "loss", b)
    np.testing.assert_allclose(arr(ra, "y"), run_a.metrics("loss").value.to_numpy())
    np.testing.assert_allclose(arr(rb, "y"), run_b.metrics("loss").value.to_numpy())
    assert ra.colors != rb.colors and ra.labels == ["first: loss"] and rb.labels == ["second: loss"]
    assert "first" in mon.header.html.value and "second" in mon.header.html.value
    mon.close()
    # the same from the overlay picker of a single-run Monitor
    mon = Monitor(a, store=url, interval=None)
    assert b in [v for _label, v in mon.metrics.overlay.options]
    mon.metrics.overlay.value = (b,)
    assert [rs.id for rs in mon.runs] == [a, b]
    np.testing.assert_allclose(arr(line(mon, "loss", b)[0], "y"), run_b.metrics("loss").value.to_numpy())
    mon.metrics.overlay.value = ()
    assert [rs.id for rs in mon.runs] == [a]
    mon.close()


def test_hardware_tab_draws_the_samples(recorded):
    url, _, b = recorded
    mon = Monitor(b, store=url, interval=None)
    mon.select("Hardware")
    s = mon.runs[0].run.samples()
    assert len(s) >= 2
    ram = mon.hardware.ram.lines["host used"]
    np.testing.assert_allclose(arr(ram, "y"), 100 * s.ram_used / s.ram_total)
    np.testing.assert_allclose(arr(ram, "x"), s.wall_time - mon.runs[0].info["created_at"])
    from tmon_core.analysis import Thresholds

    t = Thresholds()  # the widget draws (and alerts on) the report's thresholds
    assert [th.y[0] for th in mon.hardware.ram.thresholds] == pytest.approx(
        [100 * t.memory_warning, 100 * t.memory_critical]
    )
    if not len(mon.runs[0].run.gpu_samples()):
        assert "no GPU samples" in mon.hardware.gpu_box.children[1].value
    mon.close()


def test_report_and_diff_views_render(recorded):
    url, a, _ = recorded
    mon = Monitor(a, store=url, interval=None)
    mon.select("Report")
    mon.report._thread.join(60)
    body = mon.report.body.value
    assert "tmon report" in body and "the run is completed" in body
    assert mon.report.report.health in ("good", "warning", "critical")
    # the diff of two checkpoints picked in the list
    mon.select("Checkpoints")
    cks = mon.runs[0].run.checkpoints()
    assert len(cks) >= 2 and "epoch=0" in mon.checkpoints.table.value
    first, second = int(cks.id.iloc[0]), int(cks.id.iloc[1])
    mon.checkpoints.pick.value = (first, second)
    mon.checkpoints.diff.click()
    mon.checkpoints._diff_thread.join(60)
    d = mon.checkpoints.last_diff
    assert d is not None and d.summary["a"]["id"] == first and d.summary["b"]["id"] == second
    fig = mon.checkpoints.diff_out.children[1]
    bars = fig.marks[0]
    top = d.top(15)
    np.testing.assert_allclose(arr(bars, "y")[::-1], top.rel_change.to_numpy())
    assert list(bars.x[::-1]) == list(top.name)
    assert "metrics at each checkpoint" in mon.checkpoints.diff_out.children[2].value
    assert "e+09" not in mon.checkpoints.diff_out.children[2].value
    import pandas as pd

    from tmon_widgets import _format as fmt
    from tmon_widgets.checkpoints import _metric_rows

    rows = _metric_rows(
        pd.DataFrame(
            [
                {
                    "key": "wall_time",
                    "a": 1.796183e9,
                    "b": 1.796183e9 + 95,
                    "change": 5e-8,
                    "step_a": 100,
                    "step_b": 200,
                }
            ]
        )
    )
    assert rows[0]["a"] == fmt.clock(1.796183e9) and rows[0]["change"] == "+1m35s", (
        "wall times read as clock times"
    )
    mon.close()


def test_report_not_available(recorded, monkeypatch):
    url, a, _ = recorded
    from tmon_widgets import report as report_mod

    monkeypatch.setattr(report_mod, "report_function", lambda: None)
    mon = Monitor(a, store=url, interval=None)
    mon.select("Report")
    mon.report._thread.join(10)
    assert "report not available" in mon.report.body.value
    mon.close()


# ---------------------------------------------------------------------------- live: a Recorder stands in for the fit
CONTROL = {
    "level": "admin",
    "params": ["lr", "momentum", "weight_decay", "betas", "eps", "dropout"],
    "custom_params": {"dropout": {"bounds": [0.0, 0.9], "type": "float"}},
    "presets": {"cool-down": {"lr": 1e-5}},
    "schedule": [
        {"step": 5, "epoch": None, "ramp": 0, "mode": "scale", "params": {"lr": 0.01}},
        {"step": 5000, "epoch": None, "ramp": 100, "mode": "pin", "params": {"lr": 0.001}},
    ],
}


@pytest.fixture
def live(store_url):
    rec = Recorder(
        store_url,
        run_name="live",
        framework="test",
        config={"control": CONTROL, "batch_size": 32},
        flush_interval=0.05,
    )
    rec.update_run(total_steps=1000)
    for step in range(20):
        rec.log({"loss": 1.0 / (step + 1), "lr": 0.1, "momentum": 0.9, "epoch": 0}, step)
    rec.flush()
    yield rec
    if not rec.closed:
        rec.close()


def test_controls_create_the_right_requests(live, store_url, tmp_path):
    mon = Monitor(live.run_id, store=store_url, interval=None)
    mon.select("Parameters")
    run = mon.runs[0].run
    p = mon.parameters
    assert set(p.rows) == set(CONTROL["params"])
    assert "now <b>0.1</b>" in p.rows["lr"].current.value and p.rows["lr"].input.value == pytest.approx(0.1)
    p.rows["lr"].input.value = 0.05
    p.mode.value = "pin"
    p.rows["lr"].apply.click()
    p.rows["dropout"].input.value = 0.3
    p.rows["dropout"].apply.click()
    p.preset.value = "cool-down"
    p.apply_preset.click()
    p.stop_reason.value = "enough"
    p.stop.click()
    assert len(run.requests()) == 3, "stop asks for a second click"
    p.stop.click()
    # checkpoints: create one now; roll back to a recorded one (two clicks)
    ck_file = tmp_path / "a.ckpt"
    ck_file.write_bytes(b"x")
    live.checkpoint(ck_file, step=10, source="ModelCheckpoint")
    live.flush()
    mon.select("Checkpoints")
    c = mon.checkpoints
    c.description.value = "before the change"
    c.tags.value = "good, keep"
    c.create.click()
    cid = int(run.checkpoints().id.iloc[0])
    c.pick.value = (cid,)
    c.rollback.click()
    c.rollback.click()
    reqs = run.requests()
    got = [(r.kind, {k: v for k, v in r.payload.items() if k != "source"}) for r in reqs.itertuples()]
    assert got == [
        ("set_param", {"values": {"lr": 0.05}, "group": None, "mode": "pin"}),
        ("set_param", {"values": {"dropout": 0.3}, "group": None, "mode": "pin"}),
        ("preset", {"name": "cool-down"}),
        ("stop", {"reason": "enough"}),
        ("checkpoint", {"description": "before the change", "tags": ["good", "keep"]}),
        ("rollback", {"checkpoint_id": cid, "compatible": False}),
    ]
    assert set(reqs.status) == {"pending"} and all(r["source"] == "widget" for r in reqs.payload)
    # the outcome shows once the training records it
    live.resolve_request(
        int(reqs.id.iloc[0]),
        status="applied",
        applied_step=20,
        applied_at=time.time(),
        old_value='{"lr": 0.1}',
        new_value='{"lr": 0.05}',
    )
    live.resolve_request(
        int(reqs.id.iloc[2]),
        status="rejected",
        applied_step=20,
        applied_at=time.time(),
        reason="unknown preset",
    )
    live.flush()
    mon.select("Parameters")
    mon.refresh(slow=True)
    hist = p.history.value
    assert "applied at step 20" in hist and "rejected: unknown preset" in hist
    assert "<b>rejected</b>: unknown preset" in p.status.value  # the last three sent from here
    # tags edited in place; the schedule shows what is done and what is to come
    mon.select("Checkpoints")
    c.pick.value = (cid,)
    c.edit_tags.value = "best"
    c.save_tags.click()
    assert run.checkpoints().set_index("id").loc[cid, "tags"] == ["best"]
    assert "✓ done" in p.schedule.value and "to come in 4,981 steps" in p.schedule.value
    mon.close()


def test_controls_follow_the_policy_and_a_busy_kernel(store_url, monkeypatch):
    rec = Recorder(store_url, run_name="viewonly", config={"control": dict(CONTROL, level="view")})
    rec.log({"loss": 1.0}, 0)
    rec.flush()
    mon = Monitor(rec.run_id, store=store_url, interval=None)
    mon.select("Parameters")
    assert "control level is <b>view</b>" in mon.parameters.banner.value
    assert mon.parameters.rows["lr"].apply.disabled and mon.parameters.stop.disabled
    assert mon.checkpoints.create.disabled
    mon.close()
    rec.close()
    mon = Monitor(rec.run_id, store=store_url, interval=None)
    assert "there is no training to steer" in mon.parameters.banner.value
    mon.close()

    rec = Recorder(store_url, run_name="busy", config={"control": dict(CONTROL, level="manage")})
    rec.log({"loss": 1.0, "lr": 0.1}, 0)
    rec.flush()
    monkeypatch.setattr(monitor_mod, "BUSY_AFTER", 0.0)
    mon = Monitor(rec.run_id, store=store_url, interval=None)
    mon._busy_probe = lambda: True
    mon.refresh()
    banner = mon.parameters.banner.value
    assert "busy running a cell" in banner and "Jupyter queues clicks" in banner
    assert (
        f"tmon set {rec.run_id[:8]} lr=1e-4 --store {store_url}" in banner and "fit_in_background" in banner
    )
    assert "queued until the cell ends" in mon.header.html.value
    # the kernel does not hear tab clicks while busy: every tab is in the page, not only the first
    assert all(slot.children == (tab.widget,) for slot, tab in zip(mon._slots, mon._tabs))
    assert mon.parameters.rows["lr"].apply.disabled is False  # clickable: the banner says what a click does
    mon.close()
    rec.close()


def test_live_refresh_reads_only_new_rows_and_raises_alerts(store_url):
    rec = Recorder(store_url, run_name="growing", flush_interval=0.05)
    for step in range(3000):
        rec.log({"loss": math.sin(step / 50) + (40.0 if step == 1234 else 0.0)}, step)
    rec.flush()
    mon = Monitor(rec.run_id, store=store_url, interval=None, max_points=200, metrics=["loss"])
    s = mon.metrics.series[(rec.run_id, "loss")]
    assert len(s) <= 200 and s.value.max() == pytest.approx(40.0 + math.sin(1234 / 50))
    reads = []  # (what, rows) of each store read of points, per refresh
    run = s.run
    real_metrics, real_tail, real_since = run.metrics, run.tail, run.points_since

    def metrics(key, *a, **kw):
        df = real_metrics(key, *a, **kw)
        reads[-1].append(("metrics", len(df)))
        return df

    def tail(key, n):
        df = real_tail(key, n)
        reads[-1].append(("tail", len(df)))
        return df

    def points_since(cursor=None, **kw):
        got = real_since(cursor, **kw)
        reads[-1].append(("since", sum(len(a[0]) for a in got[1].values())))
        return got

    run.metrics, run.tail, run.points_since = metrics, tail, points_since
    for chunk in range(5):
        for step in range(3000 + 100 * chunk, 3100 + 100 * chunk):
            rec.log({"loss": -30.0 if step == 3333 else math.sin(step / 50)}, step)
        rec.flush()
        reads.append([])
        mon.refresh()
    # each refresh makes one read, of what arrived (100 rows), never of the 3,000+ rows of the series
    # (the Monitor's first refresh placed the cursor; the series read itself once, downsampled)
    assert reads == [[("since", 100)]] * 5, reads
    assert s.last_step == 3499 and s.reads == 1
    raw, _ = line(mon, "loss")
    y = arr(raw, "y")
    assert len(y) <= 200 and y.max() == pytest.approx(40.0 + math.sin(1234 / 50)) and y.min() == -30.0
    assert arr(raw, "x")[-1] == 3499
    # a NaN loss and a rejected request raise alerts in the header
    rec.log({"loss": float("nan")}, 3500)
    rec.event("request_rejected", step=3500, message="lr=20.0 is out of bounds")
    rec.flush()
    mon.refresh(slow=True)
    kinds = {a["kind"] for a in mon.alerts.items}
    assert {"nan_loss", "request_rejected"} <= kinds
    head = header_text(mon)
    assert "loss is NaN at step 3500" in head and "request rejected: lr=20.0 is out of bounds" in head
    rec.close()
    mon.close()


def test_refresh_thread_follows_a_run_and_stops_when_it_ends(store_url):
    rec = Recorder(store_url, run_name="threaded", flush_interval=0.05)
    mon = Monitor(store=store_url, interval=0.1, metrics=["loss"])
    assert mon.live
    for step in range(50):
        rec.log({"loss": float(step)}, step)
        time.sleep(0.01)
    rec.flush()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if arr(line(mon, "loss")[0], "x")[-1] == 49:
                break
        except KeyError:
            pass
        time.sleep(0.05)
    assert arr(line(mon, "loss")[0], "x")[-1] == 49
    rec.close()
    deadline = time.time() + 10
    while mon.live and time.time() < deadline:
        time.sleep(0.05)
    assert not mon.live and mon.runs[0].status == "completed"
    mon.close()


def test_monitor_waits_for_the_first_run(store_url):
    mon = Monitor(store=store_url, interval=None)
    assert "waiting for a run" in mon.header.html.value
    rec = Recorder(store_url, run_name="late")
    rec.log({"loss": 1.0}, 0)
    rec.flush()
    mon.refresh()
    assert mon.runs and mon.runs[0].name == "late"
    rec.close()
    mon.close()


# ---------------------------------------------------------------------------- fit_in_background, auto display
def test_fit_in_background_handle():
    fit = fit_in_background(lambda a, b=0: a + b, 1, b=2)
    assert fit.monitor is None  # no notebook here: nothing to display
    assert fit.wait(10) == 3 and fit.result() == 3 and fit.exception() is None and fit.done()

    def boom():
        raise ValueError("boom")

    fit = fit_in_background(boom)
    with pytest.raises(ValueError, match="boom"):
        fit.wait(10)
    assert isinstance(fit.exception(), ValueError)
    gate = threading.Event()
    fit = fit_in_background(gate.wait, 5)
    with pytest.raises(RuntimeError, match="still running"):
        fit.result()
    with pytest.raises(TimeoutError):
        fit.wait(0.1)
    gate.set()
    assert fit.wait(5) is True


def test_fit_in_background_stops_a_lightning_fit(store_url, tmp_path):
    lp = pytest.importorskip("lightning.pytorch")
    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback

    Model, Data = make()
    cb = TMonCallback(store_url, sample_interval=None)
    trainer = lp.Trainer(
        max_epochs=100,
        callbacks=[cb],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
    )
    fit = fit_in_background(trainer.fit, Model(sleep=0.01), Data())
    deadline = time.time() + 60
    while fit.run_id is None and time.time() < deadline:
        time.sleep(0.05)
    assert fit.run_id is not None and fit._store_url == store_url
    time.sleep(0.5)
    how = fit.stop()
    assert how == "trainer.should_stop = True"  # control="manage": no stop request, the framework's flag
    fit.wait(60)
    run = open_store(store_url).run(fit.run_id)
    assert run.status == "completed" and run.info()["last_step"] < 100 * 12


def test_auto_display_only_in_a_kernel(store_url, monkeypatch):
    from tmon_widgets import auto

    assert auto.maybe_display("abc", store_url) is None  # no kernel in pytest
    monkeypatch.setattr(auto._live, "in_kernel", lambda: True)
    assert auto.enabled()
    monkeypatch.setenv("TMON_WIDGET", "0")
    assert not auto.enabled()
    monkeypatch.delenv("TMON_WIDGET")
    shown = []
    monkeypatch.setattr(auto._live, "display", shown.append)
    rec = Recorder(store_url, run_name="auto")
    rec.flush()
    mon = auto.maybe_display(rec.run_id, store_url, interval=None)
    assert shown == [mon] and mon.runs[0].id == rec.run_id
    t = threading.Thread(target=lambda: shown.append(auto.maybe_display(rec.run_id, store_url)))
    t._tmon_background = True  # a fit_in_background thread shows its own Monitor
    t.start()
    t.join()
    assert shown[-1] is None
    # a run not in the store yet: the Monitor waits for it
    late = auto.maybe_display("not-yet", store_url, interval=None)
    assert late is not None and not late.runs and "waiting for run not-yet" in late.header.html.value
    late.close()

    def broken(*a, **kw):
        raise RuntimeError("no comm")

    monkeypatch.setattr(monitor_mod.Monitor, "__init__", broken)
    with pytest.warns(
        RuntimeWarning, match="could not be shown.*no comm"
    ):  # a widget problem never stops the fit
        assert auto.maybe_display(rec.run_id, store_url) is None
    mon.close()
    rec.close()


def test_pan_zoom_rereads_the_visible_range_in_detail(store_url):
    rec = Recorder(store_url, run_name="zoom")
    for step in range(20_000):
        rec.log({"loss": math.sin(step / 7.0)}, step)
    rec.close()
    mon = Monitor(rec.run_id, store=store_url, interval=None, max_points=400, metrics=["loss"])
    raw, _ = line(mon, "loss")
    assert len(arr(raw, "x")) <= 400 and arr(raw, "x")[-1] == 19_999
    mon.metrics.panzoom.value = True
    assert mon.metrics.charts["loss"].fig.interaction is not None
    with mon.metrics.xs.hold_sync():  # what the browser sends after a wheel zoom
        mon.metrics.xs.min, mon.metrics.xs.max = 1000.0, 1100.0
    mon.refresh()
    x = arr(line(mon, "loss")[0], "x")
    np.testing.assert_array_equal(
        x, np.arange(999, 1102, dtype=float)
    )  # every point of the range, not 400 of 20k
    mon.metrics.reset_zoom.click()
    assert mon.metrics.xs.min is None and len(arr(line(mon, "loss")[0], "x")) <= 400
    mon.close()


def test_gpu_samples_are_drawn_with_thresholds_and_alerts(store_url):
    rec = Recorder(store_url, run_name="gpu")
    t0 = time.time()
    for i in range(5):
        host = {
            "wall_time": t0 + i,
            "host": "h",
            "node_rank": 0,
            "cpu_percent": 50.0,
            "ram_total": 100,
            "ram_used": 40,
            "swap_used": 0,
            "proc_rss": 10,
            "children_rss": 5,
            "children_count": 2,
        }
        gpus = [
            {
                "wall_time": t0 + i,
                "host": "h",
                "node_rank": 0,
                "gpu": g,
                "name": "H100",
                "mem_used": used,
                "mem_total": 80,
                "util_percent": 90.0,
                "power_watts": 300.0,
                "temperature_c": 60.0 + 5 * i,
            }
            for g, used in ((0, 10 + 2 * i), (1, 70 + 2 * i))
        ]
        rec.sample(host, gpus)
    rec.flush()
    mon = Monitor(rec.run_id, store=store_url, interval=None)
    mon.select("Hardware")
    hw = mon.hardware
    assert hw.gpu_box.children[1] is hw.gpu_grid
    np.testing.assert_allclose(
        arr(hw.gpu_mem.lines["GPU 0"], "y"), [100 * (10 + 2 * i) / 80 for i in range(5)]
    )
    np.testing.assert_allclose(arr(hw.gpu_temp.lines["GPU 1"], "y"), [60.0 + 5 * i for i in range(5)])
    assert set(hw.gpu_util.lines) == {"GPU 0", "GPU 1"} and len(hw.gpu_mem.thresholds) == 2
    # GPU 1 ends at 78 of 80 GB (97.5 %): a memory alert in the header
    assert any(a["kind"] == "memory" and "GPU 1 memory at 98%" in a["message"] for a in mon.alerts.items)
    assert "GPU 1 memory at 98%" in header_text(mon)
    mon.close()
    rec.close()


def test_fit_in_background_finds_the_tmon_callback_of_each_framework():
    from tmon_widgets.background import _tmon_callbacks

    class TMonCallback:
        options = object()

    class Other:
        pass

    cb = TMonCallback()

    class LightningTrainer:  # trainer.fit: the callbacks are on the trainer
        callbacks = [Other(), cb]

        def fit(self):
            pass

    class Handler:
        callbacks = [cb]

    class HFTrainer:  # trainer.train: on its callback handler
        callback_handler = Handler()

        def train(self):
            pass

    class KerasModel:  # model.fit(..., callbacks=[...])
        def fit(self, x, callbacks=None):
            pass

    assert _tmon_callbacks(LightningTrainer().fit, (), {}) == [cb]
    assert _tmon_callbacks(HFTrainer().train, (), {}) == [cb]
    assert _tmon_callbacks(KerasModel().fit, (1,), {"callbacks": [Other(), cb]}) == [cb]
    assert _tmon_callbacks(lambda: None, (), {}) == []


def test_x_choice_gets_a_fresh_x_domain_and_echoes_are_not_zooms(store_url):
    """Item 1 of issue 18: a domain the browser sends back is not a zoom; step -> time starts a new scale."""
    rec = Recorder(store_url, run_name="xdomain")
    for step in range(3000):
        rec.log({"loss": 1.0 / (step + 1), "epoch": step // 100}, step)
    rec.close()
    mon = Monitor(rec.run_id, store=store_url, interval=None, metrics=["loss"])
    m = mon.metrics
    assert m.timeframe.get_state()["index"] == 0, "the timeframe dropdown shows 'all steps', not a blank"
    assert mon.events_tab.filter.get_state()["index"] == 0, "the events filter shows its first choice"
    old = m.xs
    with old.hold_sync():  # the browser echoes the step domain without a pan/zoom
        old.min, old.max = -76.0, 6795.0
    mon.refresh()
    assert m._zoom is None
    for mode, top in (("time", 60.0), ("epoch", 31.0)):
        m.xaxis.value = mode
        xs = m.charts["loss"].x_axis.scale
        assert xs is m.xs and xs is not old and xs.min is None and xs.max is None, mode
        assert arr(line(mon, "loss")[0], "x").max() < top, mode
        old = xs
    m.xaxis.value = "step"
    ticks = m.charts["loss"].x_axis.tick_values
    assert list(ticks) == [0, 500, 1000, 1500, 2000, 2500], "round ticks within the data, not -76, 320, 658"
    m.timeframe.value = 1000
    xs = m.charts["loss"].x_axis.scale
    assert xs.min is None and arr(line(mon, "loss")[0], "x").min() >= 2000
    mon.close()


def test_the_view_is_refreshed_once_more_after_the_run_ends(store_url):
    """Item 2 of issue 18: the header's epoch and the latest-values table show the run's end, not a read
    made up to SLOW_INTERVAL before it."""
    rec = Recorder(store_url, run_name="ends", flush_interval=0.05)
    rec.log({"loss": 1.0, "epoch": 0}, 0)
    rec.flush()
    mon = Monitor(rec.run_id, store=store_url, interval=0.1, metrics=["loss"])
    for step in range(1, 300):
        rec.log({"loss": 1.0 / (step + 1), "epoch": step // 30}, step)
    rec.close()
    deadline = time.time() + 10
    while mon.live and time.time() < deadline:
        time.sleep(0.05)
    assert not mon.live
    assert "step <b>299</b>" in mon.header.html.value and "epoch <b>9</b>" in mon.header.html.value
    assert mon.latest[rec.run_id]["epoch"] == (299, 9.0)
    mon.close()


def test_parameter_rows_are_the_runs_and_apply_waits_for_the_current_value(store_url):
    """Item 4 of issue 18: no 'apply' of a placeholder, no betas/eps rows on SGD, a custom Param's value shown."""
    sgd = [{"class": "SGD", "defaults": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}, "param_groups": 1}]
    rec = Recorder(
        store_url, run_name="sgd", config={"control": CONTROL, "optimizers": sgd}, flush_interval=0.05
    )
    rec.log({"loss": 1.0}, 0)
    rec.flush()
    mon = Monitor(rec.run_id, store=store_url, interval=None)
    mon.select("Parameters")
    p = mon.parameters
    assert list(p.rows) == ["lr", "momentum", "weight_decay", "dropout"]
    assert p.rows["lr"].apply.disabled and "waiting for the run's current lr" in p.rows["lr"].apply.tooltip
    assert p.rows["dropout"].apply.disabled
    p.rows["dropout"].input.value = 0.2  # a custom Param is not logged: a typed value may be sent
    assert not p.rows["dropout"].apply.disabled
    rec.log({"loss": 0.9, "lr": 0.1, "momentum": 0.9}, 1)
    rec.event(
        "param_change",
        step=1,
        message="dropout: 0.1 -> 0.3",
        data={"old": {"dropout": 0.1}, "new": {"dropout": 0.3}},
    )
    rec.flush()
    mon.refresh(slow=True)
    assert not p.rows["lr"].apply.disabled and p.rows["lr"].input.value == pytest.approx(0.1)
    assert "now <b>0.3</b>" in p.rows["dropout"].current.value
    rec.close()
    mon.close()


def test_a_constant_series_is_drawn_flat_with_a_readable_axis(store_url):
    """Item 5 of issue 18: smoothing a constant lr drew rounding noise on a zero-width y axis."""
    rec = Recorder(store_url, run_name="flat")
    for step in range(500):
        rec.log({"loss": 1.0 / (step + 1), "lr": 0.02}, step)
    rec.close()
    mon = Monitor(rec.run_id, store=store_url, interval=None, metrics=["loss", "lr"])
    mon.metrics.smoothing.value = 0.9
    _, smooth = line(mon, "lr")
    assert np.all(arr(smooth, "y") == 0.02)
    ys = mon.metrics.charts["lr"].ys
    assert ys.min < 0.015 and ys.max > 0.025, "a range around the value, ticks of distinct labels"
    assert mon.metrics.charts["loss"].ys.min is None, "a varying series keeps bqplot's own domain"
    mon.metrics.yscale.value = "log"
    ys = mon.metrics.charts["lr"].ys
    assert ys.min == pytest.approx(0.01) and ys.max == pytest.approx(0.04)
    mon.close()


def _widget_tree(root):
    """Every widget reachable from ``root`` through its widget-valued traits (what the page holds)."""
    import ipywidgets

    seen, todo = {}, [root]
    while todo:
        w = todo.pop()
        if id(w) in seen:
            continue
        seen[id(w)] = w
        for name in w.keys:
            v = getattr(w, name, None)
            for x in v if isinstance(v, (list, tuple)) else [v]:
                if isinstance(x, ipywidgets.Widget):
                    todo.append(x)
    return list(seen.values())


def test_a_run_of_one_point_gives_every_axis_a_format(store_url):
    """A line of one point has a zero-width x domain: an axis left to guess its format from the domain
    logs "invalid format: .undefinedg" in the browser (seen in the blocked-cell browser test)."""
    import bqplot as bq

    rec = Recorder(store_url, run_name="one point")
    rec.log({"loss": 0.5, "lr": 0.01}, 0)
    rec.flush()
    mon = Monitor(rec.run_id, store=store_url, interval=None)
    for xaxis in ("step", "epoch", "time"):
        mon.metrics.xaxis.value = xaxis
        mon.refresh()
        axes = [w for w in _widget_tree(mon) if isinstance(w, bq.Axis)]
        linear = [ax for ax in axes if not isinstance(ax.scale, bq.OrdinalScale)]
        assert linear and all(ax.tick_format for ax in linear), [
            (ax.label, ax.tick_format) for ax in linear if not ax.tick_format
        ]
    rec.close()
    mon.close()


def test_a_finished_run_with_nan_losses_does_not_wear_a_completed_badge(store_url):
    """Item 9 of issue 18: 199 non-finite losses, status 'completed': the badge says NaN; rates read 6.74 k."""
    rec = Recorder(store_url, run_name="nan", config={"batch_size": 64})
    for step in range(400):
        rec.log({"loss": float("nan") if step > 200 else 1.0}, step)
    rec.close()
    healthy = Recorder(store_url, run_name="healthy")
    healthy.log({"loss": 1.0}, 0)
    healthy.close()
    mon = Monitor(runs=[rec.run_id, healthy.run_id], store=store_url, interval=None)
    head = mon.header.html.value
    assert ">NaN</span>" in head and head.count(">completed</span>") == 1
    assert "loss is NaN at step" in header_text(mon)
    # the line ends at its last finite point: bqplot placed a NaN end at (x, undefined), an SVG error
    y = arr(line(mon, "loss", rec.run_id)[0], "y")
    assert len(y) and np.isfinite(y[-1])
    from tmon_widgets import _format as fmt

    assert fmt.human(6740.2) == "6.74 k" and fmt.human(3.4e-4) == "0.00034" and fmt.human(12.5) == "12.5"
    mon.close()


def test_legend_outside_the_plot_fixed_colours_and_identical_series_drawn_once(store_url):
    """Items 6, 7 and 10 of issue 18: the legend is HTML above the plot; a metric has the same colour in
    every Monitor; loss and train_loss (same values) are one line named by both; markers are short ticks
    at the top, off until asked for."""
    ids = []
    for name, shift in (("a", 0.0), ("b", 0.5)):
        rec = Recorder(store_url, run_name=name)
        for step in range(200):
            loss = 1.0 / (step + 1) + shift
            rec.log({"loss": loss, "train_loss": loss, "lr": 0.1}, step)
            if step % 50 == 49:
                rec.log({"val_loss": loss * 1.1}, step)
                rec.checkpoint(f"/nowhere/{name}-{step}.ckpt", step=step, source="ModelCheckpoint")
        rec.close()
        ids.append(rec.run_id)
    mons = [
        Monitor(i, store=store_url, interval=None, metrics=["loss", "train_loss", "val_loss"]) for i in ids
    ]
    charts = [m.metrics.charts["loss"] for m in mons]
    for m, c in zip(mons, charts):
        lines = c.lines
        raws = {k: lines[(m.runs[0].id, k)][0] for k in ("loss", "train_loss", "val_loss")}
        assert not any(r.display_legend for r in raws.values()), "no legend drawn over the data"
        assert raws["loss"].visible and not raws["train_loss"].visible and raws["val_loss"].visible
        assert "loss = train_loss" in c.legend.value and "val_loss" in c.legend.value
        assert m.metrics.grid.children[0].children == (c.legend, c.fig)
        assert not m.metrics.show_markers.value and not c.markers["checkpoint"].visible
    colours = [
        {k: c.lines[(m.runs[0].id, k)][0].colors[0] for k in ("loss", "val_loss")}
        for m, c in zip(mons, charts)
    ]
    assert colours[0] == colours[1] and colours[0]["loss"] != colours[0]["val_loss"]
    m = mons[0]
    m.metrics.show_markers.value = True
    rules = m.metrics.charts["loss"].markers["checkpoint"]
    y = arr(rules, "y")
    assert rules.visible and y.min() >= 0.9 and len(y) == 4, "four ticks in the top strip, not lines across"
    assert "checkpoint" in m.metrics.charts["loss"].legend.value
    for m in mons:
        m.close()


def test_export_button_gives_a_download_link_not_a_file_on_the_server(store_url, tmp_path, monkeypatch):
    """Item 11 of issue 18: the CSV reaches the browser (a data URL link); nothing is written in the kernel's cwd."""
    import base64
    import io

    import pandas as pd

    monkeypatch.chdir(tmp_path)
    rec = Recorder(store_url, run_name="export")
    for step in range(300):
        rec.log({"loss": 1.0 / (step + 1)}, step)
    rec.close()
    mon = Monitor(rec.run_id, store=store_url, interval=None, metrics=["loss"])
    mon.metrics.export.click()
    html = mon.metrics.export_out.value
    assert 'download="tmon-' in html and 'href="data:text/csv;base64,' in html
    data = html.split("base64,")[1].split('"')[0]
    df = pd.read_csv(io.BytesIO(base64.b64decode(data)))
    assert list(df.columns) == ["run_id", "run_name", "key", "step", "value", "wall_time"] and len(df) == 300
    assert not list(tmp_path.glob("*.csv"))
    mon.close()


def test_without_a_widget_front_end_the_monitor_shows_a_snapshot(store_url):
    """Outside JupyterLab (nbconvert HTML, GitHub): an HTML snapshot of the header and charts, not a bare repr."""
    rec = Recorder(store_url, run_name="snap")
    for step in range(300):
        rec.log({"loss": 1.0 / (step + 1), "val_loss": 1.2 / (step + 1), "lr": 0.02}, step)
    rec.close()
    mon = Monitor(rec.run_id, store=store_url, interval=None)
    bundle = mon._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == "Monitor(snap (completed))"
    html = bundle["text/html"]
    assert "snap" in html and "step <b>299</b>" in html
    assert html.count("<svg") == len(mon.metrics.charts) >= 2 and "<polyline" in html and "val_loss" in html
    mon.close()


def test_report_tab_of_a_comparison_has_a_card_per_run(recorded):
    """Item 9 of issue 18: the Report tab showed only the first of the compared runs."""
    url, a, b = recorded
    mon = Monitor(runs=[a, b], store=url, interval=None)
    mon.select("Report")
    mon.report._thread.join(60)
    body = mon.report.body.value
    assert body.count("tmon report") == 2 and "first" in body and "second" in body
    mon.close()


def test_only_the_shown_tab_is_in_the_page_while_the_kernel_listens(store_url):
    """Item 11 of issue 18: figures in hidden tabs logged hundreds of negative <rect> widths."""
    rec = Recorder(store_url, run_name="slots")
    rec.log({"loss": 1.0}, 0)
    rec.close()
    mon = Monitor(rec.run_id, store=store_url, interval=None)
    assert [bool(s.children) for s in mon._slots] == [True, False, False, False, False, False]
    mon.select("Hardware")
    assert [bool(s.children) for s in mon._slots] == [False, True, False, False, False, False]
    assert mon._slots[1].children == (mon.hardware.widget,)
    mon.close()


# ---------------------------------------------------------------------------- alerts in the header (issue 19, item 5)
def test_the_header_shows_the_runs_alerts_with_evidence_and_a_step_to_show(store_url):
    """The run's own alerts (its live rules) appear in the header as they are recorded: the most severe
    in its colour with the rule's evidence, "+K more" for the others, and "show step N" zooms the
    Metrics charts around that step. The Monitor's own NaN alert is not said a second time."""
    from tmon_core.alerts import Alert

    rec = Recorder(
        store_url,
        run_name="nan-live",
        flush_interval=0.05,
        alerts=["nonfinite", "lifecycle", Alert("loss", above=5.0)],
    )
    for step in range(2000):
        rec.log({"loss": 1.0 / (step + 1) + (9.0 if step == 700 else 0.0)}, step)
    rec.flush()
    mon = Monitor(rec.run_id, store=store_url, interval=0.1, metrics=["loss"])
    try:
        deadline = time.monotonic() + 10
        while not mon.header.alerts.children and time.monotonic() < deadline:
            time.sleep(0.05)
        row = mon.header.rows[rec.run_id]
        assert "<b>loss above 5</b>: loss = 9.001 at step 700" in row.chip.value.replace("9.00143", "9.001")
        assert "tmon-alert-warning" in row.chip.value and row.show.description == "show step 700"
        # NaN from step 2050 on, while the Monitor is open: the nonfinite rule's alert appears within a
        # refresh (the slow read, every SLOW_INTERVAL) and becomes the headline (critical beats warning)
        for step in range(2000, 2100):
            rec.log({"loss": float("nan") if step >= 2050 else 0.001}, step)
        rec.flush()
        t0 = time.monotonic()
        while "NaN loss at step 2050" not in row.chip.value and time.monotonic() - t0 < 10:
            time.sleep(0.05)  # (the Monitor's own "loss is NaN" from the points it drew may come first)
        seen_after = time.monotonic() - t0
        assert row.show.description == "show step 2,050", header_text(mon)
        assert seen_after <= monitor_mod.SLOW_INTERVAL + 1.5, f"the alert showed after {seen_after:.1f} s"
        chip = row.chip.value
        assert "tmon-alert-critical" in chip and "#d62728" in chip and "step 2,050" in chip
        assert "NaN loss at step 2050" in chip and "the last finite value was 0.001" in chip, chip
        assert row.more.description == "+1 more" and row.listing.layout.display == "none"
        row.more.value = True
        assert row.listing.layout.display == "" and "above 5" in row.listed_html
        (listed,) = row.listing.children  # the other alert, with its own "show step"
        assert listed.children[1].description == "show step 700"
        assert "hide the other 1" == row.more.description
        # the Monitor's own NaN alert (from the points it drew) is the same finding: said once, the rule's
        kinds = {a["kind"] for a in mon.alerts.shown(rec.run_id)}
        assert "nan_loss" in {a["kind"] for a in mon.alerts.items} and kinds == {"nonfinite", "metric.loss"}
        assert ">NaN</span>" in mon.header.html.value
        # "show step 2050": the Metrics charts' x domain is zoomed around that step and read in detail
        mon.select("Events")
        row.show.click()
        assert mon.tabs.selected_index == 0
        xs = mon.metrics.xs
        assert xs.min < 2050 < xs.max and xs.max - xs.min <= 0.15 * 2100, (xs.min, xs.max)
        x = arr(line(mon, "loss")[0], "x")
        assert x.min() >= xs.min - 2 and x.max() <= xs.max + 2 and np.all(np.diff(x) == 1), "raw points"
        mon.metrics.reset_zoom.click()
        assert mon.metrics.xs.min is None and mon.metrics._zoom is None
    finally:
        rec.close()
        mon.close()
    # the run's end is an alert too (info): the headline stays the critical one
    mon = Monitor(rec.run_id, store=store_url, interval=None)
    row = mon.header.rows[rec.run_id]
    assert "NaN loss" in row.chip.value and row.more.description == "+2 more"
    assert "The run finished" in row.listed_html
    mon.close()


def test_comparison_badges_and_alerts_per_run(store_url):
    """Item 9 of issue 18 in a comparison Monitor: the run with 199 non-finite losses wears NaN, a
    healthy one completed, side by side; each run's alerts are in its own row with its name."""
    bad = Recorder(store_url, run_name="bad", alerts=["nonfinite"])
    for step in range(400):
        bad.log({"loss": float("nan") if step > 200 else 1.0}, step)
    bad.close()
    good = Recorder(store_url, run_name="good", alerts=["nonfinite"])
    for step in range(400):
        good.log({"loss": 1.0 / (step + 1)}, step)
    good.close()
    mon = Monitor(runs=[bad.run_id, good.run_id], store=store_url, interval=None)
    states = {rs.name: mon.header.badge_status(rs) for rs in mon.runs}
    assert states == {"bad": "NaN", "good": "completed"}
    head = mon.header.html.value
    # the badges as drawn: one per run row, in the run's order
    assert head.count("tmon-table") == 1 and head.index(">NaN</span>") < head.index(">completed</span>")
    assert list(mon.header.rows) == [bad.run_id], "only the run with alerts has an alert row"
    chip = mon.header.rows[bad.run_id].chip.value
    assert "<b>bad</b>" in chip and "NaN loss at step 201" in chip
    mon.header.rows[bad.run_id].show.click()
    assert mon.metrics.xs.min < 201 < mon.metrics.xs.max
    mon.close()


def test_a_finished_runs_controls_are_off_and_say_why(store_url):
    """A completed run's Parameters and Checkpoints tabs: stop, create, roll back and apply are disabled,
    without the colour that makes a button look pressable, and their tooltip says why; a live run's
    buttons are as they were."""
    rec = Recorder(store_url, run_name="ends", config={"control": CONTROL}, flush_interval=0.05)
    rec.log({"loss": 1.0, "lr": 0.1, "momentum": 0.9}, 0)
    rec.flush()
    mon = Monitor(rec.run_id, store=store_url, interval=None)
    p, c = mon.parameters, mon.checkpoints
    live = [p.stop, p.apply_preset, p.rows["lr"].apply, c.create, c.rollback]
    assert not any(b.disabled for b in live)
    assert (p.stop.button_style, c.create.button_style, c.rollback.button_style) == (
        "danger",
        "primary",
        "warning",
    )
    assert p.stop.tooltip.startswith("stop the training") and c.create.tooltip.startswith("ask the training")
    rec.close()
    mon.refresh(slow=True)
    for b in live:
        assert b.disabled and b.tooltip == "run ended: completed" and b.button_style == "", b.description
    assert not c.delete.disabled and not c.diff.disabled, "files of a finished run can still be compared"
    mon.close()
    # opened after the end: the same from the first view
    mon = Monitor(rec.run_id, store=store_url, interval=None)
    assert mon.parameters.stop.disabled and mon.parameters.stop.tooltip == "run ended: completed"
    assert mon.checkpoints.create.tooltip == "run ended: completed"
    mon.close()


def test_steps_and_checkpoints_are_numbered_alike_in_the_header_table_markers_and_report(tmp_path):
    """Item 10 of issue 18: the header said "step 79 / 80" where the report says "80 of 80 steps", and a
    checkpoint saved after metric step 3 (the end of a 4-step epoch) was listed at step 4, Lightning's
    global_step. Now the header gives the last step and the steps done, as the report does, and the
    checkpoint's row, marker and the report's advice sit at step 3."""
    lp = pytest.importorskip("lightning.pytorch")
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from tmon_callbacks.lightning import TMonCallback
    from tmon_core.analysis import report

    class Overfits(lp.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(8, 1)

        def training_step(self, batch, _i):
            x, y = batch
            return nn.functional.mse_loss(self.net(x).squeeze(-1), y)

        def validation_step(self, batch, _i):  # best after epoch 0, then worse and worse
            self.log("val_loss", torch.tensor(0.5 + 0.1 * self.current_epoch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    x = torch.randn(32, 8)
    data = DataLoader(TensorDataset(x, x.sum(1)), batch_size=8)  # 4 steps per epoch
    url = f"sqlite:///{tmp_path}/tmon.db"
    cb = TMonCallback(url, sample_interval=None, report="off", widget=False)
    ckpt = lp.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpts"), save_top_k=-1)
    trainer = lp.Trainer(
        max_epochs=20,  # the report judges overfitting over a few 32-step blocks of the training loss
        callbacks=[cb, ckpt],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Overfits(), data, data)
    run = open_store(url).run(cb.run_id)
    cks = run.checkpoints()
    assert cks.step.tolist()[0] == 4 and cks.path.iloc[0].endswith("epoch=0-step=4.ckpt"), (
        "stored as Lightning counts"
    )
    assert run.metrics("val_loss").step.tolist()[0] == 3

    r = report(run, save=False)
    assert " · 80 of 80 steps" in str(r)
    keep = [x for x in r.recommendations if x.title.startswith("Keep the checkpoint")]
    assert [x.title for x in keep] == ["Keep the checkpoint saved after step 3"], [
        x.title for x in r.recommendations
    ]
    assert "Overfitting after step 3: val_loss was best at step 3" in str(r)

    mon = Monitor(run.id, store=url, interval=None, metrics=["loss", "val_loss"])
    assert "step <b>79</b> · <b>80</b> of 80 steps" in mon.header.html.value
    mon.select("Checkpoints")
    first = mon.checkpoints.pick.options[0][0]
    assert first.startswith(f"#{int(cks.id.iloc[0])} · after step 3 · epoch=0-step=4.ckpt"), first
    loss3 = float(run.metrics("loss", start=3, end=3).value.iloc[0])
    row = mon.checkpoints.table.value.split("<tbody>")[1].split("</tr>")[0]
    cells = [c.split(">", 1)[1].split("</td>")[0] for c in row.split("<td")[1:]]
    assert cells[:2] == [str(int(cks.id.iloc[0])), "3"] and f"{loss3:.4g}" in cells, cells
    mon.select("Metrics")
    mon.metrics.show_markers.value = True
    marks = mon.metrics.charts["loss"].markers["checkpoint"]
    assert sorted(set(arr(marks, "x")[:, 0].tolist())) == [4.0 * e + 3 for e in range(20)]
    mon.close()


def test_stop_on_a_finished_fit_says_there_is_nothing_to_stop(store_url, tmp_path):
    """Item 4 of issue 18: ``fit.stop()`` after the run ended said "already finished" when the thread was
    done, but while the fit was still finishing (a callback's teardown after tmon ended the run) it set
    ``trainer.should_stop`` and printed that, a stop that never happened. Both now say the run ended,
    with its status and last step, and nothing is recorded or set."""
    lp = pytest.importorskip("lightning.pytorch")
    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback

    gate = threading.Event()

    class FinishesSlowly(lp.Callback):  # listed after tmon: its teardown runs once the run has ended
        def teardown(self, trainer, pl_module, stage):
            gate.wait(30)

    Model, Data = make()
    for level in ("manage", "admin"):
        gate.clear()
        cb = TMonCallback(store_url, sample_interval=None, control=level, run_name=f"short-{level}")
        trainer = lp.Trainer(
            max_epochs=2,
            callbacks=[cb, FinishesSlowly()],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            default_root_dir=str(tmp_path),
        )
        fit = fit_in_background(trainer.fit, Model(), Data())
        run = fit.wait_for_run(60)
        deadline = time.time() + 60
        while run.status == "running" and time.time() < deadline:
            time.sleep(0.05)
        assert run.status == "completed" and not fit.done(), "the run ended, the fit is still finishing"
        last = run.info()["last_step"]
        expected = f"already finished: run short-{level} is completed at step {last}, nothing to stop"
        assert fit.stop() == expected
        assert trainer.should_stop is False and run.requests().empty, "no flag set, no request made"
        gate.set()
        fit.wait(60)
        assert fit.stop() == expected
        assert ev.STOPPED not in set(run.events().type)


KERAS_AND_HF = """
import os, sys
os.environ["KERAS_BACKEND"] = "torch"
import warnings
warnings.filterwarnings("ignore")
import numpy as np
import keras
from tmon_callbacks.keras import TMonCallback as KerasTMon
store, out = sys.argv[1], sys.argv[2]
x = np.random.default_rng(0).random((64, 4)).astype("float32")
y = (x.sum(1) > 2).astype("float32")
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
model.compile("adam", "binary_crossentropy")
model.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y), verbose=0, callbacks=[
    KerasTMon(store, run_name="keras", widget=False, sample_interval=None),
    keras.callbacks.ModelCheckpoint(os.path.join(out, "k-{epoch}.keras"))])
from transformers import Trainer, TrainingArguments
from tests.callbacks.test_hf import TokenData, tiny_bert
from tmon_callbacks.hf import TMonCallback as HFTMon
args = TrainingArguments(output_dir=os.path.join(out, "hf"), per_device_train_batch_size=8, num_train_epochs=1,
                         logging_steps=1, save_steps=2, report_to="none", disable_tqdm=True, use_cpu=True)
Trainer(model=tiny_bert(), args=args, train_dataset=TokenData(32),
        callbacks=[HFTMon(store, run_name="hf", widget=False, sample_interval=None)]).train()
"""


@pytest.mark.slow
def test_keras_and_hf_checkpoints_sit_at_the_metric_step_they_were_saved_after(store_url, tmp_path):
    """The same placement on the other frameworks: Keras records a checkpoint at its iterations (steps
    done: 4 after the steps 0-3 of a 4-step epoch), HF at its global_step, which is the step it logs its
    metrics at (it counts from 1). The Checkpoints tab and the markers put both at their metric step."""
    import subprocess

    pytest.importorskip("keras")
    pytest.importorskip("transformers")
    script = tmp_path / "fit.py"
    script.write_text(KERAS_AND_HF)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, str(script), store_url, str(tmp_path)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = open_store(store_url)
    expect = {"keras": ([4, 8], [3, 7], "val_loss"), "hf": ([2, 4], [2, 4], "loss")}
    for name, (recorded, after, key) in expect.items():
        run = store.run(name)
        assert run.checkpoints().step.tolist() == recorded, name
        assert set(after) <= set(run.metrics(key).step), f"{name}: {key} was logged at those steps"
        mon = Monitor(run.id, store=store_url, interval=None, metrics=["loss"])
        mon.select("Checkpoints")
        shown = [o[0].split(" · ")[1] for o in mon.checkpoints.pick.options]
        assert shown == [f"after step {s}" for s in after], (name, shown)
        mon.select("Metrics")
        mon.metrics.show_markers.value = True
        marks = mon.metrics.charts["loss"].markers["checkpoint"]
        assert sorted(arr(marks, "x")[:, 0].tolist()) == [float(s) for s in after], name
        mon.close()
    store.close()


def test_show_step_on_the_epoch_and_time_axes(store_url):
    """'show step N' places the step where the charts draw it: by the run's own epochs or seconds."""
    rec = Recorder(store_url, run_name="axes")
    t0 = time.time()
    for step in range(1000):
        rec.log({"loss": 1.0 / (step + 1), "epoch": step // 100}, step, wall_time=t0 + step * 0.5)
    rec.close()
    for x, at in (("epoch", 6.0), ("time", 300.0)):  # step 600: epoch 6, 300 s after the first step
        mon = Monitor(rec.run_id, store=store_url, interval=None, metrics=["loss"], x=x)
        lo, hi = mon.show_step(600)
        xs = mon.metrics.xs
        assert (xs.min, xs.max) == (lo, hi) and lo < at < hi, (x, lo, hi)
        assert hi - lo < 0.15 * (10.0 if x == "epoch" else 500.0), (x, lo, hi)
        mon.close()


def test_a_checkpoint_made_from_the_widget_says_the_step_its_row_says(store_url, tmp_path):
    """The request is applied at the step boundary before step 145 (Lightning's global_step 145, the
    number in the file's name); the checkpoint holds steps 0-144: its outcome and its row say 144."""
    rec = Recorder(
        store_url, run_name="ck", framework="lightning", config={"control": CONTROL}, flush_interval=0.05
    )
    for step in range(145):
        rec.log({"loss": 1.0 / (step + 1)}, step)
    rec.flush()
    mon = Monitor(rec.run_id, store=store_url, interval=None)
    mon.select("Checkpoints")
    mon.checkpoints.create.click()
    req = int(mon.runs[0].run.requests().id.iloc[0])
    path = tmp_path / f"tmon-{rec.run_id}-step=145.ckpt"
    path.write_bytes(b"x")
    rec.checkpoint(path, step=145, source="manual")
    rec.resolve_request(
        req, status="applied", applied_step=145, applied_at=time.time(), new={"path": str(path)}
    )
    rec.flush()
    mon.refresh(slow=True)
    assert (
        f"applied at step 145</b>: saved after step 144 to <code>{path}</code>"
        in mon.checkpoints.status.value
    )
    assert mon.checkpoints.pick.options[0][0].startswith("#1 · after step 144 · ")
    rec.close()
    mon.close()
