"""Support for the widget tests: a real kernel (jupyter_client), a JupyterLab server, headless Debian
chromium driven by playwright's Python API, notebooks written from cell lists.

Recipe and measured facts: ../shared/NOTEBOOK-TESTING.md. Never ``playwright install``: the browser
is Debian's ``chromium`` (``make system-deps``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI") == "true"


def need(condition: bool, reason: str) -> None:
    """Skip with ``reason`` when ``condition`` fails; under CI=true fail instead: these tests must run there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(reason + " (CI runs `make test`, whose system-deps and test extras provide it)")
    pytest.skip(reason)


def need_modules(*names: str) -> None:
    import importlib.util

    missing = [n for n in names if importlib.util.find_spec(n) is None]
    need(not missing, f"needs {', '.join(missing)}: pip install -e '.[test]'")


def notebook(cells: list[str], path: Path) -> Path:
    """Write a notebook of code cells (a cell starting with ``# md`` is markdown)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    for src in cells:
        if src.startswith("# md\n"):
            nb.cells.append(nbformat.v4.new_markdown_cell(src[5:]))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(src))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def kernel_env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env["TMON_STORE"] = f"sqlite:///{tmp_path}/tmon.db"
    env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    env["OMP_NUM_THREADS"] = "1"
    env["MPLBACKEND"] = "agg"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """A JupyterLab server on 127.0.0.1 serving ``root`` with no token, private config and runtime dirs."""

    def __init__(self, root: Path, env: dict):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        private = root / ".jupyter-private"
        for d in ("config", "runtime", "workspaces", "data"):
            (private / d).mkdir(parents=True, exist_ok=True)
        # no "Would you like to get notified about official Jupyter news?" toast over the screenshots
        news = private / "settings" / "@jupyterlab" / "apputils-extension"
        news.mkdir(parents=True, exist_ok=True)
        (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
        env = dict(
            env,
            JUPYTERLAB_SETTINGS_DIR=str(private / "settings"),
            JUPYTER_CONFIG_DIR=str(private / "config"),
            JUPYTER_RUNTIME_DIR=str(private / "runtime"),
            JUPYTERLAB_WORKSPACES_DIR=str(private / "workspaces"),
        )
        jupyter = Path(sys.executable).with_name("jupyter")
        cmd = [
            str(jupyter) if jupyter.exists() else "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.token=",
            "--ServerApp.password=",
            "--ServerApp.ip=127.0.0.1",
            f"--port={self.port}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
            "--ServerApp.disable_check_xsrf=True",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        self.log = open(root / "jupyterlab.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/api/status", timeout=2) as r:
                    json.load(r)
                break
            except Exception as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        "JupyterLab did not start:\n" + (root / "jupyterlab.log").read_text()[-3000:]
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


def launch_chromium(playwright, user_data_dir: Path):
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=CHROMIUM,
        headless=True,
        viewport={"width": 1400, "height": 1000},
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ],
    )


def open_notebook(page, lab: JupyterLab, name: str, timeout_s: float = 120) -> None:
    """Open ``name`` in JupyterLab and wait until its kernel is idle."""
    page.goto(f"{lab.url}/lab/tree/{name}?reset", timeout=timeout_s * 1000)
    page.wait_for_function(
        "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
        " return k && k.status === 'idle'; }",
        timeout=timeout_s * 1000,
        polling=250,
    )


def run_all(page) -> None:
    # not returning the promise: playwright would wait for every cell
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def cells_running(page) -> bool:
    """True while a cell of the open notebook is queued or running (its prompt shows ``[*]``).

    The kernel's status is no guide: with ipykernel 7 the widget comm messages handled beside a
    busy cell report ``idle`` while the cell still runs.
    """
    return page.evaluate(
        "() => [...document.querySelectorAll('.jp-InputPrompt')].some(p => p.textContent.includes('*'))"
    )


def dismiss_notifications(page) -> None:
    """Close JupyterLab's 'news' toast so it does not cover screenshots."""
    try:
        page.locator(".jp-Notification-Toast-Close, .Toastify__close-button").first.click(timeout=1000)
    except Exception:
        pass
