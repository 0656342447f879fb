"""Make the README's screenshots from a real run in a real browser, so they show the Monitor as it is.

    python scripts/screenshots.py            # or: make screenshots
    python scripts/screenshots.py --out /tmp/shots --keep

A notebook trains a small Lightning model with ``TMonCallback`` (in a thread: ``fit_in_background``)
in a JupyterLab started here, opened in headless Debian chromium (playwright's Python API; nothing
is downloaded: no internet needed). Its data loader is slow on purpose (every sample takes a
millisecond and a half to load, with no worker processes), so the report has something to say.
Saved:

- ``docs/img/monitor.png``: the live Monitor, Metrics tab, halfway through the run;
- ``docs/img/report.png``: the report card of the finished run (Report tab).

Needs ``make setup`` (the test extra: JupyterLab, playwright) and chromium (``make system-deps``).
Takes about a minute.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.widgets.widgets_harness import (  # noqa: E402  (the repo's root on the path first)
    CHROMIUM,
    JupyterLab,
    cells_running,
    dismiss_notifications,
    kernel_env,
    launch_chromium,
    notebook,
    open_notebook,
    run_all,
)

SETUP = '''
import logging, time, warnings
import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
torch.set_num_threads(1)


class SlowData(Dataset):
    """A dataset that takes its time to load each sample (decoding, augmenting...)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        time.sleep(0.0015)
        return self.x[i], self.y[i]


class Regressor(pl.LightningModule):
    def __init__(self, lr=0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x).squeeze(-1), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x).squeeze(-1), y))

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


g = torch.Generator().manual_seed(0)
x = torch.randn(4096, 16, generator=g)
y = torch.sin(x[:, 0]) + 0.5 * x[:, 1] + 0.1 * torch.randn(4096, generator=g)
train = DataLoader(SlowData(x[:3584], y[:3584]), batch_size=32, shuffle=True)
val = DataLoader(TensorDataset(x[3584:], y[3584:]), batch_size=256)
'''

TRAIN = """
from tmon_callbacks.lightning import TMonCallback
from tmon_widgets import fit_in_background

trainer = pl.Trainer(max_epochs=4, callbacks=[TMonCallback(run_name="regressor")], logger=False,
                     enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
fit = fit_in_background(trainer.fit, Regressor(), train, val)
"""


def _last_step(store_path: Path) -> tuple[str | None, int]:
    from tmon_core import open_store

    if not store_path.exists():
        return None, -1
    store = open_store(f"sqlite:///{store_path}")
    try:
        runs = store.runs()
        if not len(runs):
            return None, -1
        run = store.run(runs.id.iloc[0])
        return run.status, int(run.info().get("last_step") or -1)
    finally:
        store.close()


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="folder for the PNGs")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (notebook, store, logs)")
    args = ap.parse_args(argv)
    if CHROMIUM is None:
        print(
            "screenshots: no chromium here (apt-get install chromium, or make system-deps)", file=sys.stderr
        )
        return 2
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tmon-screens-"))
    notebook([SETUP, TRAIN], work / "demo.ipynb")
    lab = JupyterLab(work, kernel_env(work))
    try:
        with sync_playwright() as p:
            ctx = launch_chromium(p, work / ".chromium")
            page = ctx.new_page()
            page.set_viewport_size({"width": 1200, "height": 1400})
            open_notebook(page, lab, "demo.ipynb")
            page.evaluate("() => window.jupyterapp.shell.collapseLeft()")  # the notebook gets the width
            run_all(page)
            page.wait_for_selector(".tmon-monitor .bqplot.figure", timeout=180_000)
            # the live Monitor halfway through (448 steps in all)
            _wait(lambda: _last_step(work / "tmon.db")[1] >= 220, 180, "the run to reach step 220")
            time.sleep(1.5)  # a refresh or two: the charts draw what the store holds
            dismiss_notifications(page)
            mon = page.locator(".tmon-monitor").first
            mon.scroll_into_view_if_needed()
            mon.screenshot(path=str(args.out / "monitor.png"))
            # the finished run's report card
            # (the fit runs in a thread: the cell has returned and the kernel hears the tab click)
            _wait(lambda: _last_step(work / "tmon.db")[0] == "completed", 240, "the run to finish")
            _wait(lambda: not cells_running(page), 60, "the cells to finish")
            mon.locator(".lm-TabBar-tab", has_text="Report").first.click()
            card = mon.locator(".tmon-report").first
            card.wait_for(state="visible", timeout=60_000)
            page.wait_for_function(
                "() => { const c = document.querySelector('.tmon-monitor .tmon-report');"
                " return c && c.innerText.includes('completed'); }",
                timeout=60_000,
            )
            time.sleep(0.5)
            dismiss_notifications(page)
            card.scroll_into_view_if_needed()
            card.screenshot(path=str(args.out / "report.png"))
            ctx.close()
    finally:
        lab.stop()
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for name in ("monitor.png", "report.png"):
        path = args.out / name
        print(f"{path}: {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
