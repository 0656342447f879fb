"""The Monitor in a real kernel (jupyter_client, no browser): the test reads the kernel's iopub
channel as a frontend would and acts as the browser on the shell channel.

- A cell trains with the callback and a Monitor shown the way the adapters show it
  (``tmon_widgets.auto.maybe_display`` at train start): chart updates arrive *during* the cell,
  at least once a second, not only at the end.
- ``fit_in_background``: the cell returns at once, updates keep arriving, and a slider move plus a
  click sent as comm messages become control requests the training applies.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.widgets.widgets_harness import kernel_env, need_modules

pytestmark = pytest.mark.slow

SETUP = '''
import logging, time, warnings
warnings.filterwarnings("ignore")
import torch
import lightning.pytorch as pl
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tmon_callbacks.lightning import TMonCallback
from tmon_widgets.auto import maybe_display
torch.set_num_threads(1)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

class Slow(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(8, 1)
    def training_step(self, batch, i):
        time.sleep(0.03)
        x, y = batch
        return nn.functional.mse_loss(self.net(x).squeeze(-1), y)
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

class ShowMonitor(pl.Callback):
    """What the adapters do in a notebook: the Monitor appears by itself at train start."""
    def __init__(self, tmon):
        self.tmon = tmon
    def on_train_start(self, trainer, module):
        maybe_display(self.tmon.run_id, self.tmon.options.store)

x = torch.randn(512, 8)
data = DataLoader(TensorDataset(x, x.mean(1)), batch_size=8)

def trainer(epochs, tmon, show=True):
    return pl.Trainer(max_epochs=epochs, callbacks=[tmon] + ([ShowMonitor(tmon)] if show else []), logger=False,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      default_root_dir=".")
'''


class Frontend:
    """Reads iopub like a frontend: widget models opened, and when each state update arrived."""

    def __init__(self, kc):
        self.kc = kc
        self.models: dict[str, dict] = {}  # comm id -> initial state
        self.updates: list[tuple[float, str, list[str]]] = []  # (time, comm id, traits)
        self.outputs: list[str] = []

    def pump(self, until=None, timeout: float = 120.0, parent: str | None = None) -> float | None:
        """Read iopub until ``parent`` goes idle (returns that time) or ``until`` (a time) passes."""
        deadline = time.monotonic() + timeout
        while True:
            left = (until if until is not None else deadline) - time.monotonic()
            if left <= 0:
                if until is None:
                    raise AssertionError("the cell did not finish in time")
                return None
            try:
                msg = self.kc.get_iopub_msg(timeout=min(left, 0.5))
            except Exception:
                continue
            now = time.monotonic()
            t, c = msg["msg_type"], msg["content"]
            if t == "comm_open":
                self.models[c["comm_id"]] = c["data"].get("state", {})
            elif t == "comm_msg" and c["data"].get("method") == "update":
                state = c["data"].get("state", {})
                self.updates.append((now, c["comm_id"], list(state)))
                self.models.setdefault(c["comm_id"], {}).update(state)  # the model as the browser has it now
            elif t in ("stream", "error"):
                self.outputs.append(c.get("text") or "\n".join(c.get("traceback", [])))
            elif (
                t == "status"
                and c["execution_state"] == "idle"
                and parent is not None
                and msg["parent_header"].get("msg_id") == parent
            ):
                return now

    def run(self, code: str, timeout: float = 180.0) -> tuple[float, float]:
        """Execute ``code``; return (start, end) monotonic times of the cell."""
        start = time.monotonic()
        mid = self.kc.execute(code)
        end = self.pump(parent=mid, timeout=timeout)
        reply = self.kc.get_shell_msg(timeout=30)
        assert reply["content"]["status"] == "ok", "\n".join(self.outputs)[-3000:]
        return start, end

    def lines(self) -> set[str]:
        return {cid for cid, st in self.models.items() if st.get("_model_name") == "LinesModel"}

    def line_updates(self, start: float, end: float) -> list[float]:
        lines = self.lines()
        return [t for t, cid, traits in self.updates if cid in lines and "y" in traits and start <= t <= end]

    def html(self, contains: str) -> list[str]:
        """The values of the HTML widgets whose text contains ``contains``, as the browser has them."""
        return [
            st["value"]
            for st in self.models.values()
            if st.get("_model_name") == "HTMLModel" and contains in (st.get("value") or "")
        ]

    def find(self, model: str, **state) -> str:
        for cid, st in self.models.items():
            if st.get("_model_name") == model and all(st.get(k) == v for k, v in state.items()):
                return cid
        raise KeyError(f"no {model} with {state}")

    def send(self, comm_id: str, data: dict) -> None:
        """Act as the browser: a comm message on the shell channel."""
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.kc.shell_channel.send(msg)


@pytest.fixture
def kernel(tmp_path):
    need_modules("jupyter_client", "ipykernel", "ipywidgets", "bqplot")
    pytest.importorskip("lightning")
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env=kernel_env(tmp_path), cwd=str(tmp_path))
    try:
        fe = Frontend(kc)
        fe.run(SETUP)
        yield fe, tmp_path
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_chart_updates_arrive_while_fit_blocks_the_cell(kernel):
    fe, tmp = kernel
    start, end = fe.run("tmon = TMonCallback(run_name='blocking')\ntrainer(4, tmon).fit(Slow(), data)")
    assert end - start > 5, "the fit lasts a few seconds"
    during = fe.line_updates(start, end - 0.3)
    assert fe.lines(), "the Monitor's bqplot lines were opened"
    assert len(during) >= 5, f"{len(during)} line updates during a {end - start:.1f} s cell"
    first, last = during[0], during[-1]
    assert last - first >= 0.6 * (end - start - 3), (
        "updates spread over the whole fit, not bunched at the end"
    )
    gaps = [b - a for a, b in zip(during, during[1:])]
    assert max(gaps) <= 1.5, (
        f"a chart update at least once a second while training (largest gap {max(gaps):.2f} s)"
    )


def test_background_fit_is_steered_through_widget_messages(kernel):
    fe, tmp = kernel
    start, end = fe.run(
        "from tmon_widgets import fit_in_background\n"
        "tmon = TMonCallback(run_name='background')\n"
        "fit = fit_in_background(trainer(30, tmon, show=False).fit, Slow(), data)"
    )
    assert end - start < 10, "the cell returns while the fit runs in its thread"
    fe.pump(until=time.monotonic() + 4)
    after = fe.line_updates(end, time.monotonic())
    assert len(after) >= 3, "the charts keep updating after the cell returned"
    # act as the browser: move the lr slider, click "apply lr", click "create checkpoint"
    slider = fe.find("FloatLogSliderModel")
    fe.send(slider, {"method": "update", "state": {"value": 0.02}, "buffer_paths": []})
    fe.send(
        fe.find("ButtonModel", description="apply lr"), {"method": "custom", "content": {"event": "click"}}
    )
    fe.send(
        fe.find("ButtonModel", description="create checkpoint"),
        {"method": "custom", "content": {"event": "click"}},
    )
    from tmon_core import open_store

    store = open_store(f"sqlite:///{tmp}/tmon.db")
    run = store.run("background")
    deadline = time.monotonic() + 60
    while True:
        fe.pump(until=time.monotonic() + 0.5)
        reqs = run.requests()
        if len(reqs) == 2 and (reqs.status != "pending").all():
            break
        assert time.monotonic() < deadline, f"requests not applied: {reqs}"
    assert list(reqs.kind) == ["set_param", "checkpoint"] and set(reqs.status) == {"applied"}
    assert reqs.payload.iloc[0]["values"] == {"lr": 0.02} and run.status == "running"
    lr = run.metrics("lr", start=int(reqs.applied_step.iloc[0]) + 1)
    assert len(lr) and lr.value.to_numpy() == pytest.approx(0.02)
    fe.run("fit.stop(); fit.wait(60)")
    store.close()


NAN_MODEL = """
class GoesNaN(Slow):
    def training_step(self, batch, i):
        loss = super().training_step(batch, i)
        return loss * float("nan") if self.global_step >= 40 else loss
"""


def test_a_nan_alert_reaches_the_header_and_show_step_zooms_the_charts(kernel):
    """Issue 19, item 5 in a real kernel: a run whose loss goes NaN at step 40 records the nonfinite
    alert; the Monitor's header shows it (critical, with the rule's evidence) and a click on its
    "show step 40" button, sent as the browser sends it, zooms the charts' x scale around step 40."""
    fe, tmp = kernel
    fe.run(NAN_MODEL)
    fe.run("tmon = TMonCallback(run_name='nan', alerts=True)\ntrainer(2, tmon).fit(GoesNaN(), data)")
    fe.pump(until=time.monotonic() + 3)  # the Monitor's last refresh after the run ended
    chips = fe.html("tmon-alert-critical")
    assert chips and "NaN loss at step 40" in chips[-1], fe.html("tmon-alert")
    assert "the last finite value was" in chips[-1]
    scales = {cid for cid, st in fe.models.items() if st.get("_model_name") == "LinearScaleModel"}
    show = fe.find("ButtonModel", description="show step 40")
    t0 = time.monotonic()
    fe.send(show, {"method": "custom", "content": {"event": "click"}})
    fe.pump(until=time.monotonic() + 3)
    zoomed = [
        fe.models[cid]
        for t, cid, traits in fe.updates
        if t >= t0 and cid in scales and {"min", "max"} <= set(traits)
    ]
    assert zoomed, "the x scale's domain was sent to the browser"
    lo, hi = zoomed[-1]["min"], zoomed[-1]["max"]
    assert lo < 40 < hi and hi - lo <= 60, (lo, hi)


def test_the_latest_values_table_says_the_headers_step_while_the_run_trains(kernel):
    """The latest-values table lagged the header by up to the slow read (2 s): after each refresh, and
    between refreshes, the table's newest step is the step the header says."""
    fe, tmp = kernel
    fe.run(
        "from tmon_widgets import fit_in_background\n"
        "tmon = TMonCallback(run_name='table')\n"
        "fit = fit_in_background(trainer(30, tmon, show=False).fit, Slow(), data)\n"
        "fit.wait_for_run(60)"
    )
    fe.run(
        """
import re
def shown(mon):
    with mon.lock:
        head, table = mon.header.html.value, mon.metrics.latest.value
    m = re.search(r"step <b>([\\d,]+)</b>", head)
    if m is None:  # no step written yet
        return None
    header = int(m.group(1).replace(",", ""))
    steps = [int(s.replace(",", "")) for s in re.findall(r"<td[^>]*>(?:loss|lr|step_time)</td><td[^>]*>[^<]*</td><td[^>]*>([\\d,]+)</td>", table)]
    return header, steps
seen = []
for i in range(16):
    time.sleep(0.35)
    if i % 2:
        fit.monitor.refresh()
    now = shown(fit.monitor)
    if now is not None:
        seen.append(now)
import json
with open("seen.json", "w") as fh:
    json.dump(seen, fh)
"""
    )
    fe.run("fit.stop(); fit.wait(60)")
    assert (tmp / "seen.json").exists(), "\n".join(fe.outputs)[-3000:]
    seen = json.loads((tmp / "seen.json").read_text())
    assert len({h for h, _ in seen}) >= 4, f"the run moved on: {seen}"
    for header, steps in seen:
        assert len(steps) >= 2 and set(steps) == {header}, seen  # loss, lr (and step_time once read)
