"""Faults a long run meets: the store's disk fills up mid-run. Training must finish; nothing
recorded is lost silently; the run record shows the gap."""

import os
import subprocess
import tempfile
import warnings

import pytest

pytest.importorskip("lightning")
from lightning.pytorch import Callback, Trainer  # noqa: E402

from examples.tiny_lightning import make  # noqa: E402
from tmon_callbacks.lightning import TMonCallback  # noqa: E402
from tmon_core import open_store  # noqa: E402

TinyRegressor, SyntheticData = make("lightning.pytorch")


@pytest.fixture
def tiny_disk():
    """A 2 MiB file system of its own (tmpfs; needs root, as in CI)."""
    path = tempfile.mkdtemp(prefix="tmon-tinyfs-")
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", path], capture_output=True, text=True
    )
    if out.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a small tmpfs for the disk-full test: {out.stderr.strip()}")
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {out.stderr.strip()}")
    yield path
    subprocess.run(["umount", "-l", path], capture_output=True)
    os.rmdir(path)


def fill(path: str) -> str:
    """Take every free byte of the file system holding ``path``."""
    filler = os.path.join(path, "filler")
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_disk_full_mid_run_training_completes_and_the_gap_is_recorded(tiny_disk, tmp_path):
    url = f"sqlite:///{tiny_disk}/tmon.db"
    state = {}

    class Disk(Callback):
        def on_train_batch_start(self, trainer, module, batch, idx):
            if trainer.global_step == 5:
                state["filler"] = fill(tiny_disk)
            if trainer.global_step == 30:
                state["problems_while_full"] = list(cb.session.recorder.problems)
                os.remove(state["filler"])  # the user frees space; tmon writes its backlog

    cb = TMonCallback(url, flush_interval=0.05, sample_interval=0.1)
    model = TinyRegressor(sleep=0.02)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(
            max_epochs=4,
            callbacks=[cb, Disk()],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            log_every_n_steps=1,
            default_root_dir=tmp_path,
        ).fit(model, SyntheticData(n=256, batch_size=16))
    assert model.trainer.state.finished and model.trainer.global_step == 48
    assert any("full" in p for p in state["problems_while_full"]), state["problems_while_full"]
    assert any("tmon" in str(w.message) for w in caught)  # the user was told
    run = open_store(url).run(cb.run_id)
    assert run.status == "completed"
    assert run.metrics("loss").step.tolist() == list(range(48))  # nothing lost: held, then written
    gap = run.events("store_gap")
    assert len(gap) == 1 and gap.data[0]["dropped_points"] == 0
