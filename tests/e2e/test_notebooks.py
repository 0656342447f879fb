"""Every notebook in notebooks/ runs top to bottom (nbclient, a real kernel, CPU), each in its own
tmp dir with its own store, and is stored without outputs."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.widgets.widgets_harness import REPO, kernel_env, need_modules

pytestmark = pytest.mark.slow

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
#: what each notebook needs beyond tmon[widgets] and lightning
NEEDS = {"02-quickstart-hf.ipynb": ("transformers", "accelerate"), "03-quickstart-keras.ipynb": ("keras",)}


def test_there_are_notebooks_and_they_are_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    names = {p.name for p in NOTEBOOKS}
    assert {
        "01-quickstart-lightning.ipynb",
        "02-quickstart-hf.ipynb",
        "03-quickstart-keras.ipynb",
        "04-steering-a-run.ipynb",
        "05-after-the-run.ipynb",
        "06-watching-another-process.ipynb",
    } <= names
    for path in NOTEBOOKS:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, (
                    f"{path.name} is stored with outputs"
                )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path, monkeypatch):
    need_modules("nbclient", "nbformat", "ipykernel", "ipywidgets", "bqplot", "lightning")
    for module in NEEDS.get(path.name, ()):  # optional frameworks skip, as their own tests do
        pytest.importorskip(module)
    import nbformat
    from nbclient import NotebookClient

    for k, v in kernel_env(tmp_path).items():
        if os.environ.get(k) != v:
            monkeypatch.setenv(k, v)
    work = tmp_path / path.name
    shutil.copy(path, work)
    nb = nbformat.read(str(work), as_version=4)
    t0 = time.perf_counter()
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    took = time.perf_counter() - t0
    print(f"\n{path.name}: {took:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # every notebook that trains shows a Monitor (a widget view in its outputs)
    views = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert views, f"{path.name} displayed no widget"
    if path.name in PROMISES:
        PROMISES[path.name](tmp_path, nb)


def _steering_did_what_it_says(tmp_path: Path, nb) -> None:
    """Notebook 04, Run All: every request from code applied while the run ran, lr=50 rejected as out of
    bounds (not because the run had ended), and the stop recorded as a stop."""
    from tmon_core import open_store

    store = open_store(f"sqlite:///{tmp_path}/tmon.db")
    try:
        run = store.run("steered")
        reqs = run.requests()
        by = {
            (r.kind, str((r.payload or {}).get("values") or (r.payload or {}).get("name") or "")): r
            for r in reqs.itertuples()
        }
        for kind, what in (
            ("set_param", "{'lr': 0.005}"),
            ("set_param", "{'dropout': 0.1}"),
            ("preset", "cool-down"),
            ("checkpoint", ""),
            ("stop", ""),
        ):
            r = by[(kind, what)]
            assert r.status == "applied", (kind, what, r.status, r.reason)
        bad = by[("set_param", "{'lr': 50.0}")]
        assert bad.status == "rejected" and "completed" not in bad.reason and "50" in bad.reason, bad.reason
        assert run.status == "completed"
        stopped = run.events("stopped")
        assert len(stopped) == 1 and int(stopped.step.iloc[0]) < 30 * 112, "stopped before its 30 epochs"
        ckpt = by[("checkpoint", "")]
        assert Path(ckpt.new_value["path"]).is_file(), ckpt.new_value
    finally:
        store.close()


def _one_monitor_per_picture(tmp_path: Path, nb) -> None:
    """Notebook 05: the cell that trains two runs shows no Monitor of its own (it showed two full ones);
    the Monitors come in the cells that ask for them."""
    train = next(c for c in nb.cells if c.cell_type == "code" and "def train_once" in c.source)
    assert not [o for o in train.outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]


PROMISES = {
    "04-steering-a-run.ipynb": _steering_did_what_it_says,
    "05-after-the-run.ipynb": _one_monitor_per_picture,
}
