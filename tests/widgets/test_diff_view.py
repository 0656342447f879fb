"""The Checkpoints tab's diff view on the checkpoints a person gets wrong at first: two identical files
(every change 0: a zero-width bar domain) and tensors with long names (cut off at the axis' margin).
Real files (``torch.save``) diffed by the real engine; asserted on the figure the browser is sent."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("bqplot")
torch = pytest.importorskip("torch")

import tmon_core  # noqa: E402
from tmon_core import Recorder  # noqa: E402
from tmon_widgets import Monitor  # noqa: E402
from tmon_widgets.checkpoints import _bar_labels  # noqa: E402

LONG = "model.encoder.layers.11.self_attention.attention_output.dense.weight"


def _run_with(tmp_path, states):
    url = f"sqlite:///{tmp_path}/tmon.db"
    rec = Recorder(url, run_name="diffs")
    for i, state in enumerate(states):
        rec.log({"loss": 1.0 / (i + 1)}, i)
        path = tmp_path / f"ck{i}.pt"
        torch.save(state, path)
        rec.checkpoint(str(path), step=i, source="manual")
    rec.close()
    return url, rec.run_id


def _show(url, run_id):
    mon = Monitor(run_id, store=url, interval=None)
    ids = [int(i) for i in mon.runs[0].run.checkpoints().id]
    d = tmon_core.diff(ids[0], ids[1], store=url)
    mon.checkpoints.show_diff(d)
    fig = mon.checkpoints.diff_out.children[1]
    return mon, d, fig


def test_identical_checkpoints_get_a_bar_range(tmp_path):
    state = {"w": torch.ones(3, 3), "b": torch.zeros(3)}
    url, rid = _run_with(tmp_path, [state, {k: v.clone() for k, v in state.items()}])
    mon, d, fig = _show(url, rid)
    assert d.summary["changed"] == 0
    bars, axis = fig.marks[0], fig.axes[1]
    assert list(bars.y) == [0.0, 0.0]
    scale = bars.scales["y"]
    # a zero-width domain would make bqplot's axis fail in the browser ("invalid format: .undefinedg")
    assert scale.min == 0.0 and scale.max == 1.0
    assert axis.tick_format == ".2~g"
    assert list(axis.tick_values) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    mon.close()


def test_bars_span_their_values_and_long_names_keep_their_end(tmp_path):
    a = {LONG: torch.ones(4, 4), "head.bias": torch.ones(4)}
    b = {LONG: torch.ones(4, 4) * 1.5, "head.bias": torch.ones(4) * 3.0}
    url, rid = _run_with(tmp_path, [a, b])
    mon, d, fig = _show(url, rid)
    bars = fig.marks[0]
    assert max(bars.y) == pytest.approx(2.0)  # head.bias: |3 - 1| / 1
    assert bars.scales["y"].max == pytest.approx(2.1)
    assert list(fig.axes[1].tick_values) == [0.0, 0.5, 1.0, 1.5, 2.0]  # round values, not 0, 0.42, 0.84...
    labels = list(bars.x)
    assert "head.bias" in labels
    long = [x for x in labels if x != "head.bias"][0]
    assert long.startswith("…") and len(long) <= 40 and long.endswith("attention_output.dense.weight")
    assert not long.startswith("….")
    mon.close()


def test_cut_names_that_collide_stay_whole():
    names = ["a" * 50 + ".weight", "b" * 50 + ".weight"]
    assert _bar_labels(names) == ["…" + names[0][-39:].lstrip("."), "…" + names[1][-39:].lstrip(".")]
    same_end = ["x." + "a" * 50, "y." + "a" * 50]
    assert _bar_labels(same_end) == same_end


def test_the_diff_header_numbers_checkpoints_as_the_table_does(tmp_path):
    """Lightning records a checkpoint at its steps done (4 after a 4-step epoch); the table shows it
    after metric step 3, and so does the diff's header."""
    url = f"sqlite:///{tmp_path}/tmon.db"
    rec = Recorder(url, run_name="epochs", framework="lightning")
    for step in range(8):
        rec.log({"loss": 1.0 / (step + 1)}, step)
        if step in (3, 7):
            path = tmp_path / f"epoch-step={step + 1}.ckpt"
            torch.save({"w": torch.ones(2) * step}, path)
            rec.checkpoint(str(path), step=step + 1, source="ModelCheckpoint")
    rec.close()
    mon, d, _ = _show(url, rec.run_id)
    head = mon.checkpoints.diff_out.children[0].value
    assert "(after step 3) → " in head and "(after step 7)" in head
    assert "step 4" not in head and "step 8" not in head
    mon.close()
