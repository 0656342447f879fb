"""The Monitor's header in a real JupyterLab and headless chromium: a run's NaN alert as a person sees
it, and its "show step" button clicked in the page.

A notebook trains a tiny Lightning model whose loss goes NaN at step 40 (``alerts=True``), then shows
a Monitor of that run and a comparison with a healthy one. The test reads the header's alert in the
page, clicks "show step 40" and reads the loss chart's x tick labels (they cover about 40 steps around
it, not the run's 0-128), checks the comparison's badges (NaN beside completed) and that the console
has no errors from the views. Screenshots go to tests/e2e/_screens/ (ignored by git); look at them.
"""

from __future__ import annotations

import re
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

SCREENS = Path(__file__).resolve().parents[1] / "e2e" / "_screens"

CELLS = [
    """
import logging, warnings
warnings.filterwarnings("ignore")
import torch
import lightning.pytorch as pl
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tmon_callbacks.lightning import TMonCallback
from tmon_widgets import Monitor
torch.set_num_threads(1)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

class Tiny(pl.LightningModule):
    def __init__(self, nan_from=None):
        super().__init__()
        self.net = nn.Linear(8, 1)
        self.nan_from = nan_from
    def training_step(self, batch, i):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x).squeeze(-1), y)
        return loss * float("nan") if self.nan_from is not None and self.global_step >= self.nan_from else loss
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

x = torch.randn(512, 8)
data = DataLoader(TensorDataset(x, x.mean(1)), batch_size=8)

def fit(name, nan_from=None):
    tmon = TMonCallback(run_name=name, alerts=True, widget=False, sample_interval=None)
    pl.Trainer(max_epochs=2, callbacks=[tmon], logger=False, enable_progress_bar=False,
               enable_model_summary=False, enable_checkpointing=False, default_root_dir=".").fit(
        Tiny(nan_from), data)
    return tmon.run_id

bad, good = fit("goes-nan", nan_from=40), fit("healthy")
""",
    "Monitor(bad)",
    "Monitor(runs=[bad, good])",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    need_modules("jupyterlab", "playwright", "ipywidgets", "bqplot", "nbformat", "lightning")
    need(
        CHROMIUM is not None, "no chromium here: apt-get install chromium (make system-deps does it as root)"
    )
    root = tmp_path_factory.mktemp("lab")
    server = JupyterLab(root, kernel_env(root))
    yield server
    server.stop()


def _shot(locator, path: Path) -> None:
    locator.scroll_into_view_if_needed()
    time.sleep(0.5)
    locator.screenshot(path=str(path))
    SCREENS.mkdir(exist_ok=True)
    shutil.copyfile(path, SCREENS / path.name)
    print(f"\nscreenshot: {SCREENS / path.name}")


X_TICKS = """mon => {
    // the bottom axis of the Monitor's first chart: its tick labels share the lowest top
    const fig = mon.querySelector('.bqplot.figure');
    const ticks = [...fig.querySelectorAll('.tick text')].map(t => [t.getBoundingClientRect().top, t.textContent]);
    const bottom = Math.max(...ticks.map(t => t[0]));
    return ticks.filter(t => Math.abs(t[0] - bottom) < 2).map(t => t[1]);
}"""


def _numbers(labels: list[str]) -> list[float]:
    return [float(s.replace(",", "").replace("−", "-")) for s in labels if re.fullmatch(r"[−\-\d.,]+", s)]


def test_the_nan_alert_in_the_header_and_show_step_in_a_real_browser(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    notebook(CELLS, lab.root / "alerts.ipynb")
    with sync_playwright() as p:
        ctx = launch_chromium(p, lab.root / ".chromium")
        page = ctx.new_page()
        console = ConsoleErrors(page)
        try:
            open_notebook(page, lab, "alerts.ipynb")
            run_all(page)
            deadline = time.monotonic() + 180
            while cells_running(page) and time.monotonic() < deadline:
                time.sleep(0.5)
            page.wait_for_function(
                "() => document.querySelectorAll('.tmon-monitor .tmon-alert-critical').length >= 2",
                timeout=60_000,
            )
            dismiss_notifications(page)
            console.phase = "looking"
            single, compare = page.locator(".tmon-monitor").nth(0), page.locator(".tmon-monitor").nth(1)
            alert = single.locator(".tmon-alerts").first
            text = alert.inner_text()
            assert "NaN loss at step 40" in text and "the last finite value was" in text, text
            color = single.locator(".tmon-alert-critical").first.evaluate(
                "e => getComputedStyle(e).borderLeftColor"
            )
            assert color == "rgb(214, 39, 40)", "the critical alert in red"
            before = _numbers(single.evaluate(X_TICKS))
            assert before and max(before) >= 100, f"the whole run (0-127) before: {before}"
            _shot(single, tmp_path / "header-alert.png")

            single.locator("button.tmon-show-step", has_text="show step 40").click()
            page.wait_for_function(
                f"mon => ({X_TICKS})(mon).length > 1 && Math.max(...({X_TICKS})(mon).map(s => parseFloat(s))) < 100",
                arg=single.element_handle(),
                timeout=20_000,
            )
            after = _numbers(single.evaluate(X_TICKS))
            assert min(after) >= 10 and max(after) <= 70 and min(after) <= 40 <= max(after), after
            _shot(single, tmp_path / "header-show-step.png")

            more = single.locator("button.tmon-more-alerts")
            more.click()
            page.wait_for_function(
                "mon => mon.innerText.includes('The run finished')",
                arg=single.element_handle(),
                timeout=10_000,
            )
            _shot(single.locator(".tmon-alerts").first, tmp_path / "header-more-alerts.png")

            # the comparison: each run's badge in its row, the alert named by its run
            head = compare.locator(".tmon-header").first.inner_text()
            rows = [r for r in head.splitlines() if "goes-nan" in r or "healthy" in r]
            assert any("goes-nan" in r and "NaN" in r for r in rows), head
            assert any("healthy" in r and "completed" in r for r in rows), head
            assert "goes-nan: " in compare.locator(".tmon-alerts").first.inner_text()
            _shot(compare.locator(".tmon-head").first, tmp_path / "header-compare.png")

            # the finished run's controls: disabled, saying why
            single.locator(".lm-TabBar-tab", has_text="Parameters").first.click()
            stop = single.locator("button.widget-button", has_text="stop run").first
            stop.wait_for(timeout=10_000)
            assert stop.is_disabled() and stop.get_attribute("title") == "run ended: completed"
            _shot(single, tmp_path / "parameters-ended.png")
            single.locator(".lm-TabBar-tab", has_text="Checkpoints").first.click()
            create = single.locator("button.widget-button", has_text="create checkpoint").first
            create.wait_for(timeout=10_000)
            assert create.is_disabled() and create.get_attribute("title") == "run ended: completed"
            _shot(single, tmp_path / "checkpoints-ended.png")
            errors = [(ph, t) for ph, t in console.errors if ph == "looking"]
            assert not errors, errors
        finally:
            page.close()
            ctx.close()
