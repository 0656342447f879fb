"""The report of real Lightning fits on CPU: a healthy run, a NaN loss, an out-of-memory error raised by a
training step, dataloader workers, a run that waits for its data; and log capture in a real fit."""

import logging
import math
import os
import time
import warnings

import pytest

pytest.importorskip("lightning")
import torch  # noqa: E402
from lightning.pytorch import LightningDataModule, Trainer  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

import tmon_core  # noqa: E402
from examples.tiny_lightning import make  # noqa: E402
from tests.reportkit import by_rule, rec_for  # noqa: E402
from tmon_callbacks.lightning import TMonCallback  # noqa: E402
from tmon_core.analysis import load_report  # noqa: E402

TinyRegressor, SyntheticData = make("lightning.pytorch")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:lightning")


def fit(tmp_path, store_url, model, data, *, max_epochs=2, **cb_kw):
    cb = TMonCallback(
        store_url, flush_interval=0.1, sample_interval=cb_kw.pop("sample_interval", 0.2), **cb_kw
    )
    t = Trainer(
        max_epochs=max_epochs,
        callbacks=[cb],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        enable_checkpointing=False,
    )
    t.fit(model, data)
    return cb


def test_a_healthy_fit_gets_good_health_and_its_report_when_it_ends(tmp_path, store_url):
    cb = fit(tmp_path, store_url, TinyRegressor(lr=0.01), SyntheticData(n=512, batch_size=16), max_epochs=4)
    r = cb.session.report  # made when the run ended, from the store
    assert r is not None and r.run_id == cb.run_id
    assert r.health == "good", str(r)
    assert not [f for f in r.findings if f.severity in ("critical", "warning")]
    assert not [x for x in r.recommendations if x.severity in ("critical", "warning")]
    assert r.summary["status"] == "completed" and r.summary["steps"] == 96
    assert r.summary["best"]["val_loss"]["step"] == 95 and r.summary["config"]["batch_size"] == 16
    assert r.summary["memory"]["host_peak_bytes"] > 0 and r.summary["throughput"]["steps_per_s"] > 0
    assert load_report(cb.run_id, store=store_url).to_dict() == r.to_dict()


def test_nan_loss_in_a_real_fit(tmp_path, store_url):
    cb = fit(
        tmp_path,
        store_url,
        TinyRegressor(lr=0.05, nan_at_step=5),
        SyntheticData(n=256, batch_size=16),
        max_epochs=1,
    )
    r = cb.session.report
    (f,) = by_rule(r, "stability.nonfinite")
    assert f.severity == "critical" and f.step == 5 and f.evidence["lr_at_step"] == pytest.approx(0.05)
    assert r.health == "critical"
    lr = rec_for(r, "lr=...")
    assert lr.code == "torch.optim.SGD(params, lr=0.005) in configure_optimizers()"
    assert rec_for(r, "gradient_clip_val").code == "Trainer(gradient_clip_val=1.0)"
    assert not [x for x in r.recommendations if "precision" in (x.config_path or "")]  # fp32: no bf16 advice


def test_out_of_memory_in_a_training_step_halves_the_batch_and_keeps_the_effective_batch(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=0.2)
    t = Trainer(
        max_epochs=1,
        callbacks=[cb],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with pytest.raises(torch.OutOfMemoryError):
        t.fit(
            TinyRegressor(fail_at_step=3, fail_with="OutOfMemoryError"), SyntheticData(n=256, batch_size=16)
        )
    r = cb.session.report
    assert r.summary["status"] == "failed" and r.health == "critical"
    (oom,) = by_rule(r, "memory.oom")
    assert oom.severity == "critical" and oom.step == 3 and oom.evidence["estimate"] == "halving"
    bs = rec_for(r, "DataLoader(batch_size")
    assert (bs.current_value, bs.recommended_value, bs.code) == (16, 8, "DataLoader(batch_size=8)")
    acc = rec_for(r, "accumulate_grad_batches")
    assert (acc.current_value, acc.recommended_value) == (1, 2)
    assert rec_for(r, "Trainer(precision").code == 'Trainer(precision="bf16-mixed")'
    assert rec_for(r, "checkpoint").recommended_value is True
    assert by_rule(r, "lifecycle.failed")
    (entry,) = [e for e in r.log_errors if e["source"] == "exception"]
    assert entry["category"] == "oom" and "OutOfMemoryError" in entry["traceback"] and entry["step"] == 3
    assert entry["memory"]["ram_used_bytes"] > 0  # the host sample nearest the error


class _RealisticOOM(TinyRegressor):
    def training_step(self, batch, batch_idx):
        if self.global_step >= 2:
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 8.00 GiB. GPU 0 has a total capacity of 79.20 GiB of which "
                "1.30 GiB is free. Including non-PyTorch memory, this process has 77.90 GiB memory in use. Of the "
                "allocated memory 75.10 GiB is allocated by PyTorch, and 1.50 GiB is reserved by PyTorch but "
                "unallocated."
            )
        return super().training_step(batch, batch_idx)


def test_out_of_memory_with_pytorchs_figures_estimates_the_batch_that_fits(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    t = Trainer(
        max_epochs=1,
        callbacks=[cb],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with pytest.raises(torch.OutOfMemoryError):
        t.fit(_RealisticOOM(), SyntheticData(n=512, batch_size=64))
    r = cb.session.report
    (oom,) = by_rule(r, "memory.oom")
    assert oom.evidence["estimate"] == "estimate" and oom.evidence["device"] == "GPU"
    assert oom.evidence["needed_bytes"] == pytest.approx((77.9 + 8) * 2**30)
    # ~0.5 GiB fixed; (85.9 - 0.5) / 64 = 1.33 GiB a sample; 80 % of 79.2 GiB holds 47 → 32 divides 64
    bs = rec_for(r, "DataLoader(batch_size")
    assert (bs.current_value, bs.recommended_value) == (64, 32)
    assert rec_for(r, "accumulate_grad_batches").recommended_value == 2


def test_dataloader_workers_memory_from_a_real_fit(tmp_path, store_url):
    cb = fit(
        tmp_path,
        store_url,
        TinyRegressor(sleep=0.01),
        SyntheticData(n=256, batch_size=16, num_workers=2),
        sample_interval=0.1,
    )
    r = cb.session.report
    assert r.summary["memory"]["workers"] == 2 and r.summary["memory"]["workers_peak_rss_bytes"] > 10 * 2**20
    # this machine's RAM is not short: a threshold far below what was used makes it so
    r = tmon_core.report(
        cb.run_id,
        store=store_url,
        save=False,
        thresholds={"memory_warning": 0.01, "memory_critical": 0.99, "memory_target": 0.01},
    )
    (h,) = by_rule(r, "memory.host")
    assert (
        h.severity == "warning"
        and h.evidence["max_workers"] == 2
        and h.evidence["per_worker_rss_bytes"] > 2**20
    )
    nw = rec_for(r, "num_workers")
    assert (nw.current_value, nw.recommended_value, nw.code) == (2, 0, "DataLoader(num_workers=0)")
    assert "frees up to" in nw.impact


class _SlowSet(Dataset):
    """Each item takes 3 ms to load, as a decoded image or a tokenized document might."""

    def __init__(self, n=120):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 8, generator=g), torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        time.sleep(0.003)
        return self.x[i], self.y[i]


class _SlowData(LightningDataModule):
    def train_dataloader(self):
        return DataLoader(_SlowSet(), batch_size=4, num_workers=0, persistent_workers=False)


def test_a_fit_that_waits_for_its_data_is_input_bound(tmp_path, store_url):
    cb = fit(tmp_path, store_url, TinyRegressor(), _SlowData(), max_epochs=2)
    r = cb.session.report
    (f,) = by_rule(r, "throughput.input_bound")
    assert f.severity == "warning" and f.evidence["data_share"] > 0.5 and f.evidence["median_data_s"] >= 0.01
    nw = rec_for(r, "num_workers")
    assert (nw.current_value, nw.recommended_value) == (0, min(4, max(1, os.cpu_count() - 1)))
    assert rec_for(r, "persistent_workers").recommended_value is True  # two epochs
    assert not [x for x in r.recommendations if "pin_memory" in (x.config_path or "")]  # no GPU


class _Chatty(TinyRegressor):
    def training_step(self, batch, batch_idx):
        if self.global_step == 3:
            warnings.warn("user warning at step 3", UserWarning, stacklevel=1)
            logging.getLogger("mymodel").error("bad batch at step 3")
        return super().training_step(batch, batch_idx)


def test_a_real_fit_keeps_its_warnings_and_errors_and_the_user_still_sees_them(tmp_path, store_url, caplog):
    before = warnings.showwarning
    with pytest.warns(UserWarning, match="user warning at step 3"):
        cb = fit(tmp_path, store_url, _Chatty(), SyntheticData(n=128, batch_size=16), max_epochs=1)
    assert any(rec.getMessage() == "bad batch at step 3" for rec in caplog.records)  # logging as before
    assert warnings.showwarning is before
    assert not [h for h in logging.getLogger().handlers if type(h).__name__ == "_Handler"]
    logs = tmon_core.open_store(store_url).run(cb.run_id).logs()
    w = logs[logs.message.str.contains("user warning at step 3")]
    assert (w.source.tolist(), w.level.tolist(), w.step.tolist()) == (["warnings"], ["WARNING"], [3])
    e = logs[logs.logger == "mymodel"]
    assert (e.level.tolist(), e.source.tolist(), e.step.tolist()) == (["ERROR"], ["logging"], [3])
    r = cb.session.report
    (errs,) = by_rule(r, "logs.errors")
    assert "bad batch at step 3" in errs.detail
    entry = next(x for x in r.log_errors if "bad batch" in x["message"])
    assert entry["memory"] is not None and not math.isnan(entry["memory"]["ram_used_bytes"])


def test_the_callback_takes_the_capture_and_report_options(tmp_path, store_url, capsys):
    cb = fit(
        tmp_path,
        store_url,
        _Chatty(),
        SyntheticData(n=64, batch_size=16),
        max_epochs=1,
        report="off",
        capture_logs=False,
    )
    assert cb.session.report is None and tmon_core.open_store(store_url).run(cb.run_id).logs().empty
    cb = fit(
        tmp_path,
        store_url,
        _Printing(),
        SyntheticData(n=64, batch_size=16),
        max_epochs=1,
        capture_output=True,
    )
    assert "batch 2 printed" in capsys.readouterr().out
    logs = tmon_core.open_store(store_url).run(cb.run_id).logs()
    assert logs[logs.source == "stdout"].message.tolist() == ["batch 2 printed"]
    assert cb.session.report is not None
    with pytest.raises(ValueError, match="report must be 'auto' or 'off'"):
        TMonCallback(store_url, report="later")


class _Printing(TinyRegressor):
    def training_step(self, batch, batch_idx):
        if batch_idx == 2:
            print("batch 2 printed")
        return super().training_step(batch, batch_idx)


# ---------------------------------------------------------------------------- trust (issue 17)
@pytest.mark.slow
def test_a_healthy_fit_with_noisy_small_batches_is_rated_good_with_every_seed(tmp_path, store_url):
    """Batch size 8 makes the per-batch loss jump around; no seed may turn that into a warning."""
    for seed in range(5):
        torch.manual_seed(seed)
        cb = fit(
            tmp_path,
            store_url,
            TinyRegressor(lr=0.01),
            SyntheticData(n=512, batch_size=8, seed=seed),
            max_epochs=3,
            sample_interval=None,
        )
        r = cb.session.report
        assert r.summary["steps"] == 144
        assert r.health == "good", f"seed {seed}:\n{r}"
        assert not [x for x in r.recommendations if "gradient_clip" in (x.config_path or "")]


@pytest.mark.slow
def test_nan_injected_at_step_60_is_critical_at_step_60(tmp_path, store_url):
    torch.manual_seed(0)
    cb = fit(
        tmp_path,
        store_url,
        TinyRegressor(lr=0.01, nan_at_step=60),
        SyntheticData(n=512, batch_size=8),
        max_epochs=2,
        sample_interval=None,
    )
    r = cb.session.report
    (f,) = by_rule(r, "stability.nonfinite")
    assert r.health == "critical" and f.severity == "critical" and f.step == 60
    assert "step 60" in f.title and f.confidence == 1.0
