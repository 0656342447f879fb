"""The Monitor in Jupyter Notebook 7 (the ``notebook`` package), in headless Debian chromium.

Notebook 7 is built from JupyterLab's components but is its own application (its own page, shell and
widget manager set-up): a user who opens a shipped notebook there must get the same Monitor. The
test opens ``notebooks/01-quickstart-lightning.ipynb`` as shipped, runs all its cells (a live
``fit_in_background`` run, then a Monitor of the finished run), clicks every tab of both Monitors, and
asserts that each renders (its tab bar, a drawn line on Metrics, the Hardware charts) with no console
or page error; a screenshot of every tab goes to ``tests/e2e/_screens/``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.console import ConsoleErrors
from tests.widgets.widgets_harness import (
    CHROMIUM,
    REPO,
    cells_running,
    dismiss_notifications,
    free_port,
    kernel_env,
    launch_chromium,
    need,
    need_modules,
)

pytestmark = pytest.mark.slow

SCREENS = Path(__file__).parent / "_screens"
TABS = ("Metrics", "Hardware", "Checkpoints", "Parameters", "Report", "Events")
LINE = ".bqplot.figure svg path.line"
#: what a widget view's error says (bqplot's SVG and state errors, tmon's or the widget manager's)
VIEWS = re.compile(r"bqplot|tmon|widget|<rect>|<path>|translate\(|Error setting state|invalid format", re.I)


class Notebook7:
    """A Jupyter Notebook 7 server on 127.0.0.1 serving ``root`` with no token and private dirs."""

    def __init__(self, root: Path, env: dict):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        private = root / ".jupyter-private"
        for d in ("config", "runtime", "workspaces"):
            (private / d).mkdir(parents=True, exist_ok=True)
        env = dict(
            env,
            JUPYTER_CONFIG_DIR=str(private / "config"),
            JUPYTER_RUNTIME_DIR=str(private / "runtime"),
            JUPYTERLAB_WORKSPACES_DIR=str(private / "workspaces"),
        )
        jupyter = Path(sys.executable).with_name("jupyter")
        cmd = [
            str(jupyter) if jupyter.exists() else "jupyter",
            "notebook",
            "--no-browser",
            "--allow-root",
            "--ServerApp.token=",
            "--ServerApp.password=",
            "--ServerApp.ip=127.0.0.1",
            f"--port={self.port}",
            f"--ServerApp.root_dir={root}",
            "--expose-app-in-browser",
            "--ServerApp.disable_check_xsrf=True",
        ]
        self.log = open(root / "notebook7.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/api/status", timeout=2):
                    break
            except Exception as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        "Notebook 7 did not start:\n" + (root / "notebook7.log").read_text()[-3000:]
                    ) from exc
                time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def server(tmp_path):
    need_modules("notebook", "playwright", "ipywidgets", "bqplot", "lightning")
    need(
        CHROMIUM is not None, "no chromium here: apt-get install chromium (make system-deps does it as root)"
    )
    srv = Notebook7(tmp_path, kernel_env(tmp_path))
    yield srv
    srv.stop()


def test_quickstart_notebook_in_notebook7(server, tmp_path):
    from playwright.sync_api import sync_playwright

    name = "01-quickstart-lightning.ipynb"
    shutil.copy(REPO / "notebooks" / name, tmp_path / name)
    with sync_playwright() as p:
        ctx = launch_chromium(p, tmp_path / ".chromium")
        page = ctx.new_page()
        page.set_viewport_size({"width": 1280, "height": 1100})
        console = ConsoleErrors(page)
        try:
            page.goto(f"{server.url}/notebooks/{name}", timeout=120_000)
            # Notebook 7's app (expose_app_in_browser): the notebook panel is the shell's current widget
            page.wait_for_function(
                "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                " return k && k.status === 'idle'; }",
                timeout=120_000,
                polling=250,
            )
            console.phase = "running"
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            # the live Monitor appears and draws the run's loss while it trains
            page.wait_for_function(
                "sel => [...document.querySelectorAll(sel)].some(p => (p.getAttribute('d') || '').length > 200)",
                arg=LINE,
                timeout=180_000,
            )
            console.phase = "live"
            live = page.locator(".tmon-monitor").first
            for title in TABS:  # clicked while the run trains
                live.locator(".lm-TabBar-tab", has_text=title).first.click()
                time.sleep(0.8)
            live.locator(".lm-TabBar-tab", has_text="Metrics").first.click()
            deadline = time.monotonic() + 240
            time.sleep(2)
            while cells_running(page) and time.monotonic() < deadline:
                time.sleep(1)
            assert not cells_running(page), "the notebook's cells did not finish in 4 minutes"
            page.wait_for_function(
                "() => document.querySelectorAll('.tmon-monitor').length >= 2", timeout=30_000
            )
            time.sleep(2)
            SCREENS.mkdir(exist_ok=True)
            mons = page.locator(".tmon-monitor")
            for i, which in enumerate(("live", "finished")):
                mon = mons.nth(i)
                for title in TABS:
                    console.phase = f"{which} {title}"
                    mon.locator(".lm-TabBar-tab", has_text=title).first.click()
                    time.sleep(1.5 if title in ("Report", "Hardware") else 0.8)
                    dismiss_notifications(page)
                    mon.scroll_into_view_if_needed()
                    shot = SCREENS / f"notebook7-{which}-{title.lower()}.png"
                    mon.screenshot(path=str(shot))
                    if title == "Metrics":
                        drawn = mon.evaluate(
                            "(m, sel) => [...m.querySelectorAll(sel)].filter(p => (p.getAttribute('d') || '').length > 200).length",
                            LINE,
                        )
                        assert drawn >= 2, f"{which}: {drawn} lines drawn on the Metrics tab"
                    if title == "Hardware":
                        figs = mon.evaluate(
                            "m => [...m.querySelectorAll('.bqplot.figure')].filter(f => f.getBoundingClientRect().width > 300).length"
                        )
                        assert figs >= 3, f"{which}: {figs} hardware charts shown"
                assert "completed" in mon.locator(".tmon-header").inner_text()
            print(f"\nscreenshots: {SCREENS}/notebook7-*.png")
            # Notebook 7.6 itself throws one page error while it loads its settings, before any cell
            # runs ("Cannot read properties of undefined (reading 'schema')"): not a view's error
            ours = [e for e in console.errors if e[0] != "loading" or VIEWS.search(e[1])]
            assert not ours, console.summary()
        finally:
            page.close()
            ctx.close()
