"""The Monitor in a real JupyterLab, in headless Debian chromium driven by playwright's Python API.

A notebook trains a small Lightning model with ``fit_in_background``; the test watches the bqplot
line being drawn with the run's points and redrawn during training, moves the lr slider, clicks
"apply lr" and "create checkpoint", and checks in the store and on the optimizer that both were
applied mid-run; then stops the run from the widget. A second notebook trains in the cell itself
(``fit()`` blocks it): the Monitor must say that clicks are queued, and a click made then must not
reach the training. Screenshots are saved in the test's tmp dir (the path is printed).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.console import ConsoleErrors
from tests.widgets.widgets_harness import (
    CHROMIUM,
    JupyterLab,
    cells_running,
    dismiss_notifications,
    kernel_env,
    launch_chromium,
    need,
    need_modules,
    notebook,
    open_notebook,
    run_all,
)

pytestmark = pytest.mark.slow

SETUP = '''
import json, logging, time, warnings
warnings.filterwarnings("ignore")
import torch
import lightning.pytorch as pl
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tmon_callbacks.lightning import TMonCallback
torch.set_num_threads(1)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

class Slow(pl.LightningModule):
    def __init__(self, sleep=0.05):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        self.sleep = sleep
    def training_step(self, batch, i):
        time.sleep(self.sleep)
        x, y = batch
        return nn.functional.mse_loss(self.net(x).squeeze(-1), y)
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

class Probe(pl.Callback):
    """Writes what the optimizer holds when the fit ends: the test compares it with the store."""
    def on_train_end(self, trainer, module):
        with open("final.json", "w") as fh:
            json.dump({"lr": trainer.optimizers[0].param_groups[0]["lr"], "step": trainer.global_step}, fh)

g = torch.Generator().manual_seed(0)
x = torch.randn(512, 8, generator=g)
data = DataLoader(TensorDataset(x, x.mean(1)), batch_size=8)
'''

BACKGROUND = """
from tmon_widgets import fit_in_background
trainer = pl.Trainer(max_epochs=40, callbacks=[TMonCallback(control="admin", run_name="steered"), Probe()],
                     logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=".")
fit = fit_in_background(trainer.fit, Slow(), data)
"""

BLOCKED = '''
from tmon_widgets.auto import maybe_display
tmon = TMonCallback(run_name="blocked")

class ShowMonitor(pl.Callback):
    """What the adapters do in a notebook (the Monitor appears by itself)."""
    def on_train_start(self, trainer, module):
        maybe_display(tmon.run_id, tmon.options.store)

trainer = pl.Trainer(max_epochs=3, callbacks=[tmon, ShowMonitor()], logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, default_root_dir=".")
trainer.fit(Slow(sleep=0.08), data)
'''

LINE = ".bqplot.figure svg path.line"
SCREENS = Path(__file__).parent / "_screens"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    need_modules("jupyterlab", "playwright", "ipywidgets", "bqplot", "nbformat")
    need(
        CHROMIUM is not None, "no chromium here: apt-get install chromium (make system-deps does it as root)"
    )
    root = tmp_path_factory.mktemp("lab")
    server = JupyterLab(root, kernel_env(root))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = launch_chromium(p, lab.root / ".chromium")
        yield ctx
        ctx.close()


def _store(lab):
    from tmon_core import open_store

    return open_store(f"sqlite:///{lab.root}/tmon.db")


def _run(store, name):
    df = store.runs()
    df = df[df.name == name]
    return store.run(df.id.iloc[0]) if len(df) else None


def _wait(cond, timeout, what, poll=0.25):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v is not None and v is not False:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def _count_redraws(page) -> None:
    page.evaluate(
        """sel => {
        window.__tmon_redraws = 0;
        const obs = new MutationObserver(ms => { for (const m of ms) if (m.attributeName === 'd') window.__tmon_redraws++; });
        document.querySelectorAll(sel).forEach(p => obs.observe(p, {attributes: true}));
        window.__tmon_obs = obs;
    }""",
        LINE,
    )


def _shot(page, path) -> None:
    """A screenshot of the Monitor itself (scrolled into view), kept as a test artifact."""
    dismiss_notifications(page)
    mon = page.locator(".tmon-monitor").first
    mon.scroll_into_view_if_needed()
    time.sleep(0.5)
    mon.screenshot(path=str(path))
    # kept where CI collects artifacts and where a person looks at them after a widget change
    SCREENS.mkdir(exist_ok=True)
    shutil.copyfile(path, SCREENS / Path(path).name)
    print(f"\nscreenshot: {SCREENS / Path(path).name}")


def _tab(page, title):
    page.locator(".tmon-monitor .lm-TabBar-tab", has_text=title).first.click()


def test_steer_a_background_fit_from_the_widget(lab, browser, tmp_path):
    notebook([SETUP, BACKGROUND], lab.root / "steer.ipynb")
    page = browser.new_page()
    open_notebook(page, lab, "steer.ipynb")
    run_all(page)
    store = _store(lab)
    try:
        # the line is drawn with the run's points, and keeps being redrawn while the fit runs
        page.wait_for_function(
            "sel => [...document.querySelectorAll(sel)].some(p => (p.getAttribute('d') || '').length > 200)",
            arg=LINE,
            timeout=120_000,
        )
        run = _wait(lambda: _run(store, "steered"), 60, "the run to open")
        _wait(lambda: not cells_running(page), 30, "the cell to return (the fit runs in a thread)")
        _count_redraws(page)
        time.sleep(4)
        redraws = page.evaluate("() => window.__tmon_redraws")
        assert redraws >= 3, f"the chart was redrawn {redraws} times in 4 s of training"
        drawn = page.evaluate(
            "sel => Math.max(...[...document.querySelectorAll(sel)].map("
            "p => (p.getAttribute('d') || '').split('L').length))",
            LINE,
        )
        recorded = len(run.metrics("loss"))
        assert drawn >= 20 and drawn >= 0.6 * recorded, f"{drawn} points drawn of {recorded} recorded"
        _shot(page, tmp_path / "monitor-training.png")

        # move the lr slider (4 steps of 10**0.05) and apply it
        _tab(page, "Parameters")
        handle = page.locator(".tmon-monitor .tmon-param-lr .noUi-handle").first
        handle.wait_for(state="visible", timeout=20_000)
        handle.focus()
        for _ in range(4):
            handle.press("ArrowRight")
        time.sleep(0.5)
        page.locator("button.widget-button", has_text="apply lr").first.click()

        # and ask for a checkpoint now
        _tab(page, "Checkpoints")
        page.locator(".tmon-monitor input[placeholder='description']").first.fill("from the browser")
        page.locator("button.widget-button", has_text="create checkpoint").first.click()

        reqs = _wait(
            lambda: (lambda df: df if (len(df) >= 2 and (df.status != "pending").all()) else None)(
                run.requests()
            ),
            60,
            "both requests to be applied",
        )
        setp = reqs[reqs.kind == "set_param"].iloc[0]
        ckpt = reqs[reqs.kind == "checkpoint"].iloc[0]
        assert setp.status == "applied", setp.reason
        assert ckpt.status == "applied", ckpt.reason
        assert setp.payload["source"] == "widget" and ckpt.payload["source"] == "widget"
        new_lr = setp.payload["values"]["lr"]
        assert new_lr == pytest.approx(0.01 * 10**0.2, rel=1e-3)
        assert run.status == "running", "both applied while the fit was still running"
        _shot(page, tmp_path / "monitor-checkpoint.png")

        # the optimizer used the new lr from the step the request was applied at (the store reads it there)
        lr = _wait(
            lambda: (lambda df: df if len(df) else None)(run.metrics("lr", start=int(setp.applied_step) + 1)),
            30,
            "steps after the change",
        )
        assert lr.value.to_numpy() == pytest.approx(new_lr)
        before = run.metrics("lr", end=int(setp.applied_step) - 1)
        assert before.value.to_numpy() == pytest.approx(0.01)
        cks = run.checkpoints()
        manual = cks[cks.source == "manual"]
        assert len(manual) == 1 and manual.description.iloc[0] == "from the browser"
        assert int(manual.step.iloc[0]) == int(ckpt.applied_step)
        import os

        assert os.path.exists(manual.path.iloc[0])

        # the history shows both outcomes; then stop the run from the widget (two clicks)
        _tab(page, "Parameters")
        page.wait_for_function("() => document.body.innerText.includes('applied at step')", timeout=20_000)
        stop = page.locator("button.widget-button", has_text="stop run").first
        stop.click()
        time.sleep(0.3)
        stop.click()
        _wait(lambda: run.status == "completed", 60, "the run to stop")
        stopped = run.requests()
        assert stopped[stopped.kind == "stop"].status.iloc[0] == "applied"
        final = json.loads((lab.root / "final.json").read_text())
        assert final["lr"] == pytest.approx(new_lr), "the optimizer holds the lr set from the widget"
        assert final["step"] < 40 * 64, "stopped before its 40 epochs"
        page.wait_for_function("() => document.body.innerText.includes('completed')", timeout=20_000)
        # the header ends on the store's last step (one last refresh after the run ended; it used to freeze)
        last = run.info()["last_step"]
        page.wait_for_function(
            "s => document.querySelector('.tmon-monitor .tmon-header').innerText.includes(s)",
            arg=f"step {last:,}",
            timeout=3_000,
        )
        _shot(page, tmp_path / "monitor-stopped.png")
    finally:
        page.close()
        store.close()


def test_blocked_cell_says_clicks_queue_and_they_never_reach_the_run(lab, browser, tmp_path):
    notebook([SETUP, BLOCKED], lab.root / "blocked.ipynb")
    page = browser.new_page()
    console = ConsoleErrors(page, phase="running")
    open_notebook(page, lab, "blocked.ipynb")
    run_all(page)
    store = _store(lab)
    try:
        page.wait_for_function(
            "sel => [...document.querySelectorAll(sel)].some(p => (p.getAttribute('d') || '').length > 100)",
            arg=LINE,
            timeout=120_000,
        )
        run = _wait(lambda: _run(store, "blocked"), 30, "the run to open")
        assert cells_running(page), "fit() blocks the cell"
        # the charts move although the cell is busy
        _count_redraws(page)
        time.sleep(3)
        assert page.evaluate("() => window.__tmon_redraws") >= 2
        page.wait_for_function(
            "() => document.body.innerText.includes('clicks on the controls are queued')", timeout=20_000
        )
        _tab(page, "Parameters")
        page.wait_for_function(
            "() => document.body.innerText.includes('Jupyter queues clicks')", timeout=20_000
        )
        assert "tmon set" in page.inner_text(".tmon-monitor")
        # the tab the kernel cannot see being shown still follows the run
        page.wait_for_function(
            "() => document.querySelector('.tmon-param-lr').innerText.includes('now 0.01')", timeout=20_000
        )
        _shot(page, tmp_path / "monitor-blocked.png")
        page.locator("button.widget-button", has_text="apply lr").first.click()
        time.sleep(2)
        assert run.status == "running"
        assert len(run.requests()) == 0, "a click in a busy kernel does not reach the training while it runs"
        # every tab shown, while the cell is busy if the fit still runs (all tabs are in the page then,
        # filled when the kernel turned busy; the browser alone switches)
        for title in ("Hardware", "Checkpoints", "Report", "Events", "Metrics"):
            console.phase = f"{'busy' if cells_running(page) else 'idle'} {title}"
            _tab(page, title)
            time.sleep(0.5)
        console.phase = "after the cell"
        _wait(lambda: not cells_running(page), 120, "the fit to end")
        # the queued click is handled after the cell: its request is rejected, the run being over
        reqs = _wait(lambda: (lambda df: df if len(df) else None)(run.requests()), 30, "the queued click")
        assert reqs.status.iloc[0] == "rejected" and "completed" in reqs.reason.iloc[0]
        assert not (run.events().type == "param_change").any()
        # figures drawn in tabs hidden while the kernel was busy: 42 negative <rect> sizes before the fix
        assert not console.errors, console.summary()
    finally:
        page.close()
        store.close()


FINISHED = """
import math, time
from tmon_core import Recorder
from tmon_widgets import Monitor
rec = Recorder("sqlite:///tmon.db", run_name="finished")
t0 = time.time()
for step in range(3000):
    rec.log({"loss": 1.0 / (1 + step / 300) + 0.01 * math.sin(step), "lr": 0.02, "epoch": step // 100}, step)
rec.close()
mon = Monitor(rec.run_id, store="sqlite:///tmon.db", metrics=["loss"])
mon
"""

AXIS_TICKS = """() => {
    // the x axis of the first visible chart: the tick labels that share one screen row
    const fig = [...document.querySelectorAll('.tmon-monitor .bqplot.figure')].find(f => f.getBoundingClientRect().width > 0);
    if (!fig) return null;
    const out = [];
    for (const ax of fig.querySelectorAll('g.axis')) {
        const labels = [...ax.querySelectorAll('.tick text')].map(t => [t.textContent, t.getBoundingClientRect()]);
        if (labels.length > 1 && labels.every(l => Math.abs(l[1].top - labels[0][1].top) < 1))
            out.push(labels.map(l => l[0]));
    }
    return out[0] || null;
}"""


def _num(label: str) -> float:
    s = label.replace(",", "").replace("−", "-").strip()
    mult = 1.0
    if s[-1:] in "kKM":
        mult, s = {"k": 1e3, "K": 1e3, "M": 1e6}[s[-1]], s[:-1]
    return float(s) * mult


def _toggle(page, text):
    page.locator(".tmon-monitor .widget-toggle-buttons button", has_text=text).first.click()


def test_x_axis_follows_the_x_choice_and_timeframe(lab, browser, tmp_path):
    """The axis shows the chosen x (step, time, epoch, last N steps), never the step domain left over."""
    notebook([FINISHED], lab.root / "xaxis.ipynb")
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    open_notebook(page, lab, "xaxis.ipynb")
    run_all(page)
    try:
        page.wait_for_function(
            "sel => [...document.querySelectorAll(sel)].some(p => (p.getAttribute('d') || '').length > 200)",
            arg=LINE,
            timeout=120_000,
        )
        time.sleep(1)
        ticks = [_num(t) for t in page.evaluate(AXIS_TICKS)]
        assert max(ticks) >= 2000, ticks
        _shot(page, tmp_path / "x-step.png")
        # the whole run spans well under a minute of wall time: the time axis must say so
        _toggle(page, "time")
        page.wait_for_function(
            f"() => {{ const t = ({AXIS_TICKS})(); return t && Math.max(...t.map("
            f"s => parseFloat(s.replace(/[,k]/g, '')))) < 500; }}",
            timeout=20_000,
        )
        _shot(page, tmp_path / "x-time.png")
        _toggle(page, "epoch")
        page.wait_for_function(
            f"() => {{ const t = ({AXIS_TICKS})(); return t && Math.max(...t.map("
            f"s => parseFloat(s.replace(/[,k]/g, '')))) <= 31; }}",
            timeout=20_000,
        )
        _shot(page, tmp_path / "x-epoch.png")
        _toggle(page, "step")
        page.locator(".tmon-monitor .widget-dropdown select").first.select_option(label="last 1,000 steps")
        page.wait_for_function(
            f"() => {{ const t = ({AXIS_TICKS})(); return t && Math.min(...t.map("
            f"s => parseFloat(s.replace(/,/g, '').replace('k', 'e3')))) >= 1900; }}",
            timeout=20_000,
        )
        _shot(page, tmp_path / "x-last1000.png")
        ours = [
            e for e in errors if "bqplot" in e.lower() or "tmon" in e.lower() or "Error setting state" in e
        ]
        assert not ours, ours
    finally:
        page.close()


TABS_NB = """
import math, os, time
import torch
from tmon_core import Recorder
from tmon_widgets import Monitor
ids = []
os.makedirs("ckpts", exist_ok=True)
for name, shift in (("healthy", 0.0), ("nan", 0.3)):
    rec = Recorder("sqlite:///tmon.db", run_name=name, config={"batch_size": 32})
    rec.start_sampler(0.2)
    for step in range(1500):
        loss = float("nan") if name == "nan" and step > 1300 else 1.0 / (1 + step / 100) + shift
        rec.log({"loss": loss, "train_loss": loss, "lr": 0.02, "epoch": step // 100}, step)
        if step % 100 == 99:
            rec.log({"val_loss": loss * 1.1}, step)
            # real files; the first two identical (a diff whose every change is 0)
            k = max(step, 199) / 100
            path = f"ckpts/{name}-{step}.pt"
            torch.save({"encoder.layers.0.attention.output.dense.weight": torch.full((8, 8), k),
                        "head.bias": torch.full((4,), k * k)}, path)
            rec.checkpoint(path, step=step, source="ModelCheckpoint")
        if step % 300 == 0:
            time.sleep(0.2)
    rec.close()
    ids.append(rec.run_id)
one = Monitor(ids[0], store="sqlite:///tmon.db")
one.metrics.show_markers.value = True
one
"""
COMPARE_CELL = """
both = Monitor(runs=ids, store="sqlite:///tmon.db")
both
"""

CLIPPED = """root => {
    // tick labels of visible axes that stick out of their figure, or overlap the next label
    const bad = [];
    for (const fig of root.querySelectorAll('.bqplot.figure')) {
        const box = fig.getBoundingClientRect();
        if (box.width === 0) continue;
        for (const t of fig.querySelectorAll('.tick text')) {
            const r = t.getBoundingClientRect();
            if (r.width === 0 || !t.textContent) continue;
            if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1)
                bad.push(t.textContent);
        }
    }
    return bad;
}"""


@pytest.mark.parametrize("which", ["one", "compare"])
def test_every_tab_of_a_finished_run_and_a_comparison(lab, browser, tmp_path, which):
    """Each tab opened and looked at: no console error at all over the whole notebook run (while its
    cells run, every tab is in the page), no tick label cut off, a checkpoint diff drawn (two
    identical checkpoints for one run, the first and the last for the comparison); a screenshot of
    each tab in tests/e2e/_screens/."""
    cells = [TABS_NB] + ([COMPARE_CELL] if which == "compare" else [])
    notebook(cells, lab.root / f"tabs-{which}.ipynb")
    page = browser.new_page()
    page.set_viewport_size({"width": 1280, "height": 1600})  # the whole Monitor in its screenshots
    console = ConsoleErrors(page, phase="running")
    open_notebook(page, lab, f"tabs-{which}.ipynb")
    run_all(page)
    try:
        page.wait_for_function(
            "n => document.querySelectorAll('.tmon-monitor').length >= n",
            arg=2 if which == "compare" else 1,
            timeout=120_000,
        )
        _wait(lambda: not cells_running(page), 120, "the cells to finish")
        time.sleep(2)
        root = page.locator(".tmon-monitor").last
        for title in ("Metrics", "Hardware", "Checkpoints", "Parameters", "Report", "Events"):
            console.phase = title
            root.locator(".lm-TabBar-tab", has_text=title).first.click()
            time.sleep(2.5 if title == "Report" else 1.0)
            if title == "Checkpoints":
                pick = root.locator("select[multiple]").last
                n = pick.locator("option").count()
                pick.select_option(index=[0, 1] if which == "one" else [0, n - 1])
                time.sleep(0.5)
                root.locator("button.widget-button", has_text="diff the two selected").first.click()
                root.locator("text=most-changed tensors").first.wait_for(timeout=60_000)
                time.sleep(1.0)
                bars = root.evaluate("r => r.querySelectorAll('.bqplot.figure .bar').length")
                assert bars == 2, f"{bars} bars in the diff chart (two tensors)"
                SCREENS.mkdir(exist_ok=True)
                chart = root.locator(".bqplot.figure").last
                chart.scroll_into_view_if_needed()
                chart.screenshot(path=str(SCREENS / f"{which}-diff.png"))
                clipped = root.evaluate(CLIPPED)
                assert not clipped, f"diff chart: tick labels cut off: {clipped}"
            dismiss_notifications(page)
            root.scroll_into_view_if_needed()
            path = tmp_path / f"{which}-{title.lower()}.png"
            root.screenshot(path=str(path))
            SCREENS.mkdir(exist_ok=True)
            shutil.copyfile(path, SCREENS / path.name)
            clipped = root.evaluate(CLIPPED)
            assert not clipped, f"{title}: tick labels cut off: {clipped}"
        # while the cells run every tab is in the page (the busy kernel does not hear tab clicks): a
        # figure drawn in a hidden tab used to log negative <rect> sizes (51 in this notebook)
        assert not console.errors, console.summary()
    finally:
        page.close()
