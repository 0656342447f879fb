"""A real CUDA out-of-memory error in a Lightning fit on a GPU, and the batch size the report derives
from PyTorch's own figures. Skipped without an NVIDIA GPU (marker ``gpu``)."""

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU on this machine", allow_module_level=True)
pytest.importorskip("lightning")

from lightning.pytorch import Trainer  # noqa: E402

from examples.tiny_lightning import make  # noqa: E402
from tests.reportkit import by_rule, rec_for  # noqa: E402
from tmon_callbacks.lightning import TMonCallback  # noqa: E402

TinyRegressor, SyntheticData = make("lightning.pytorch")
pytestmark = pytest.mark.gpu


class _Hog(TinyRegressor):
    """From step 2 on, holds on to 1 GiB blocks until the device runs out, as a growing activation would."""

    def training_step(self, batch, batch_idx):
        if self.global_step >= 2:
            self._held = getattr(self, "_held", [])
            while True:
                self._held.append(torch.empty(2**28, dtype=torch.float32, device=self.device))
        return super().training_step(batch, batch_idx)


def test_a_real_cuda_oom_gets_a_batch_size_estimated_from_pytorchs_figures(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=0.2)
    t = Trainer(
        accelerator="gpu",
        devices=1,
        max_epochs=1,
        callbacks=[cb],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    try:
        with pytest.raises(torch.OutOfMemoryError):
            t.fit(_Hog(), SyntheticData(n=512, batch_size=64))
    finally:
        torch.cuda.empty_cache()
    r = cb.session.report
    (oom,) = by_rule(r, "memory.oom")
    assert (
        oom.severity == "critical"
        and oom.evidence["device"] == "GPU"
        and oom.evidence["estimate"] == "estimate"
    )
    total = torch.cuda.get_device_properties(0).total_memory
    assert oom.evidence["capacity_bytes"] == pytest.approx(total, rel=0.02)
    assert oom.evidence["tried_bytes"] == pytest.approx(2**30, rel=0.01)
    bs = rec_for(r, "DataLoader(batch_size")
    assert bs.current_value == 64 and 1 <= bs.recommended_value < 64 and 64 % bs.recommended_value == 0
    assert rec_for(r, "accumulate_grad_batches").recommended_value == 64 // bs.recommended_value
    assert r.summary["memory"]["gpus"], "NVML samples of the GPU"
