"""The Hardware tab's CPU chart: its axis is the share of all cores, 0 to 100 %, whatever the samples
are. A run at a steady 100 % (one busy core on a one-core box, or a flat series) used to get an axis up
to 200 %, the range a flat series gets, which reads as "twice the machine"."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("bqplot")

from tmon_core import Recorder  # noqa: E402
from tmon_widgets import Monitor  # noqa: E402


def test_cpu_axis_is_0_to_100_percent(tmp_path):
    url = f"sqlite:///{tmp_path}/tmon.db"
    rec = Recorder(url, run_name="hw")
    rec.start_sampler(0.1)
    for step in range(20):
        rec.log({"loss": 1.0}, step)
        time.sleep(0.03)
    rec.close()
    mon = Monitor(rec.run_id, store=url, interval=None)
    mon.select("Hardware")
    mon.refresh(slow=True)
    cpu = mon.hardware.cpu
    assert len(cpu.lines) and all(len(ln.y) for ln in cpu.lines.values()), "the CPU samples are drawn"
    assert (cpu.ys.min, cpu.ys.max) == (0.0, 100.0)
    mon.close()


def test_a_line_never_ends_on_a_missing_value(tmp_path):
    """bqplot puts a line's end at (x, undefined) when its last y is NaN (a console error in the browser:
    translate(378,undefined)); a gap inside the line is kept."""
    import numpy as np

    url = f"sqlite:///{tmp_path}/tmon.db"
    rec = Recorder(url, run_name="hw")
    rec.log({"loss": 1.0}, 0)
    rec.close()
    mon = Monitor(rec.run_id, store=url, interval=None)
    chart = mon.hardware.ram
    x = np.arange(6, dtype=np.float64)
    chart.set_line("workers", x, np.array([1.0, 2.0, np.nan, 3.0, np.nan, np.nan]), "#000000", 2000)
    line = chart.lines["workers"]
    assert list(line.x) == [0.0, 1.0, 2.0, 3.0]
    assert np.isnan(line.y[2]) and line.y[-1] == 3.0
    chart.set_line("empty", x, np.full(6, np.nan), "#000000", 2000)
    assert len(chart.lines["empty"].x) == 0 == len(chart.lines["empty"].y)
    mon.close()
