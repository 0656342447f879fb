"""The points a chart holds: fed by one run-wide read per tick (``Run.points_since``), they are the
points its own reads of the store gave before, and a fold of the new points only keeps what a fold
of all of them keeps."""

import math

import numpy as np
import pytest

from tmon_core import Recorder
from tmon_core.store.downsample import min_max_indices
from tmon_widgets import Monitor
from tmon_widgets._series import Series


class WholeFold(Series):
    """The fold as it was: every point held, at every fold."""

    def _fold(self) -> None:
        if len(self.step) <= self.max_points:
            return
        keep, self.width = min_max_indices(
            self.step.astype(np.float64), self.value, self.max_points, self.width
        )
        self._set(self.step[keep], self.value[keep], self.wall[keep])


def same(a: dict, b: dict) -> bool:
    """Two latest-values tables alike, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        a[k][0] == b[k][0] and (a[k][1] == b[k][1] or (math.isnan(a[k][1]) and math.isnan(b[k][1])))
        for k in a
    )


@pytest.mark.parametrize("seed", range(4))
def test_folding_the_new_points_keeps_what_folding_them_all_keeps(seed):
    rng = np.random.default_rng(seed)
    folds = 0
    for _ in range(120):
        mp = int(rng.integers(4, 300))
        window = int(rng.integers(50, 3000)) if rng.random() < 0.3 else None
        a, b = (
            Series(None, "k", max_points=mp, window=window),
            WholeFold(None, "k", max_points=mp, window=window),
        )
        a.last_step = b.last_step = -1
        step = 0
        for _ in range(int(rng.integers(1, 80))):
            st = step + np.arange(int(rng.integers(1, 120))) * int(rng.integers(1, 3))
            step = int(st[-1]) + 1 + int(rng.integers(0, 3))
            v = rng.normal(size=len(st)) * 10.0 ** rng.integers(-3, 4)
            v[rng.random(len(st)) < 0.02] = np.nan
            v[rng.random(len(st)) < 0.01] = np.inf
            a._append(st, v, st.astype(float))
            b._append(st, v, st.astype(float))
            assert np.array_equal(a.step, b.step) and np.array_equal(a.value, b.value, equal_nan=True)
            assert a.width == b.width and len(a.step) <= mp
            folds += a._folded > 0
    assert folds > 100  # the incremental path ran


def test_a_fed_chart_holds_what_its_own_reads_held(store_url):
    """A live run with a NaN, a rollback (steps logged again), a metric that starts late and an epoch
    axis: after every tick the Monitor's series equal series that read the store themselves, and the
    latest-values table equals ``Run.latest()``."""
    rec = Recorder(store_url, run_name="fed", flush_interval=20)
    for s in range(500):
        rec.log({"loss": math.sin(s / 30), "lr": 0.1, "epoch": s // 100}, s)
    rec.flush()
    mon = Monitor(
        rec.run_id, store=store_url, interval=None, max_points=64, metrics=["loss", "lr", "val_loss"]
    )
    run = mon.runs[0].run
    own = {k: Series(run, k, 64) for k in ("loss", "lr", "val_loss")}
    for s in own.values():
        try:
            s.update()
        except KeyError:
            pass
    step = 500
    for tick in range(12):
        steps = range(step - 40, step + 30) if tick == 6 else range(step, step + 70)  # tick 6: a rollback
        for s in steps:
            rec.log(
                {
                    "loss": math.nan if s == 620 else math.sin(s / 30),
                    "lr": 0.1 / (1 + tick),
                    "epoch": s // 100,
                },
                s,
            )
        if tick >= 3:
            rec.log({"val_loss": 1.0 / tick}, steps[-1])
        step = steps[-1] + 1
        rec.flush()
        mon.refresh(slow=tick % 4 == 3)
        for key, s in own.items():
            try:
                s.update(step)
            except KeyError:
                continue
            fed = mon.metrics.series[(rec.run_id, key)]
            assert np.array_equal(fed.step, s.step) and np.array_equal(fed.value, s.value, equal_nan=True), (
                tick,
                key,
            )
            assert fed.last_step == s.last_step
        assert same(mon.latest[rec.run_id], run.latest()), tick
    assert (rec.run_id, "loss", 620) in {(a["run_id"], "loss", a.get("step")) for a in mon.alerts.items}
    # the epoch axis follows the epoch series as it is fed
    mon.metrics.xaxis.value = "epoch"
    mon.refresh()
    for s in range(step, step + 100):
        rec.log({"loss": 0.0, "lr": 0.01, "epoch": s // 100}, s)
    rec.flush()
    mon.refresh()
    epochs = mon.metrics.epochs[rec.run_id]
    assert epochs.last_step == step + 99 and epochs.last_value == (step + 99) // 100
    rec.close()
    mon.refresh(slow=True)
    assert same(mon.latest[rec.run_id], run.latest())
    mon.close()


def test_a_tab_hidden_long_reloads_instead_of_reading_every_point(store_url):
    rec = Recorder(store_url, run_name="gap", flush_interval=20)
    for s in range(100):
        rec.log({"loss": float(s)}, s)
    rec.flush()
    mon = Monitor(rec.run_id, store=store_url, interval=None, max_points=50, metrics=["loss"])
    s = mon.metrics.series[(rec.run_id, "loss")]
    reads = s.reads
    for step in range(100, 5000):  # far more than 4 x max_points steps since the last read
        rec.log({"loss": float(step)}, step)
    rec.flush()
    mon.refresh()
    assert s.reads == reads + 1 and s.last_step == 4999 and len(s) <= 50  # one downsampled reload
    for step in range(5000, 5010):
        rec.log({"loss": -1.0}, step)
    rec.flush()
    mon.refresh()
    assert s.reads == reads + 1 and s.last_step == 5009 and s.value.min() == -1.0  # fed again
    rec.close()
    mon.close()
