"""tmon_core.report(): each rule on a store that reproduces its situation, written through the real
Recorder (hardware a CPU machine cannot produce: a full GPU, swap, an idle GPU), plus the report's
forms (text, HTML, JSON, the store, the CLI). Real trainings are in test_report_training.py."""

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tmon_core
from tests.reportkit import GiB, build_run, by_rule, decaying, event, gpu, host, log, rec_for
from tmon_core import events as ev
from tmon_core.analysis import Report, Thresholds, load_report
from tmon_core.analysis.rules.memory import parse_oom_message

HF_CFG = {
    "framework": "transformers",
    "per_device_train_batch_size": 32,
    "train_batch_size": 32,
    "gradient_accumulation_steps": 1,
    "accumulate_grad_batches": 1,
    "gradient_checkpointing": False,
    "bf16": False,
    "fp16": False,
    "precision": "32-true",
    "dataloader_num_workers": 2,
    "max_grad_norm": 1.0,
    "num_parameters": 100_000_000,
    "param_dtypes": ["float32"],
    "world_size": 1,
    "optimizers": [{"class": "AdamW", "defaults": {"lr": 5e-5, "weight_decay": 0.0}}],
    "training_args": {
        "learning_rate": 5e-5,
        "weight_decay": 0.0,
        "dataloader_pin_memory": True,
        "dataloader_persistent_workers": False,
        "ddp_timeout": 1800,
    },
}
PL_CFG = {
    "framework": "lightning.pytorch",
    "precision": "32-true",
    "accumulate_grad_batches": 1,
    "gradient_clip_val": None,
    "batch_size": 64,
    "num_workers": 2,
    "pin_memory": False,
    "persistent_workers": False,
    "prefetch_factor": 2,
    "num_parameters": 10_000,
    "param_dtypes": ["float32"],
    "accelerator": "CUDAAccelerator",
    "world_size": 1,
    "optimizers": [{"class": "SGD", "defaults": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0}}],
}
KERAS_CFG = {
    "framework": "keras",
    "batch_size": 64,
    "dtype_policy": "float32",
    "precision": "32-true",
    "accumulate_grad_batches": 1,
    "num_parameters": 10_000_000,
    "world_size": 1,
    "optimizers": [
        {"class": "Adam", "config": {"learning_rate": 0.001, "clipnorm": None, "weight_decay": None}}
    ],
}


def report(store_url, run_id, **kw):
    return tmon_core.report(run_id, store=store_url, **kw)


# ---------------------------------------------------------------------------- memory
def test_gpu_memory_near_full_gives_the_batch_that_fits_with_accumulation_in_hf_terms(store_url):
    rid = build_run(
        store_url,
        framework="hf",
        config=HF_CFG,
        steps=40,
        series={"loss": decaying(40)},
        samples=[(host(20 * GiB), [gpu(u * GiB, alloc=(u - 1) * GiB)]) for u in (60, 75, 78, 78, 77)],
    )
    r = report(store_url, rid)
    assert r.health == "critical"
    (f,) = by_rule(r, "memory.gpu")
    assert f.severity == "critical" and f.evidence["peak_fraction"] == pytest.approx(78 / 80)
    # fixed = 0.5 GiB context + 1e8 params × (4 weight + 4 grad + 8 AdamW state) B = 1.99 GiB;
    # per sample (78 - 1.99) / 32 = 2.375 GiB; under 80 % of 80 GiB: (64 - 1.99) / 2.375 = 26 → 16 divides 32
    bs = rec_for(r, "per_device_train_batch_size")
    assert (bs.current_value, bs.recommended_value) == (32, 16)
    assert bs.code == "TrainingArguments(per_device_train_batch_size=16)"
    acc = rec_for(r, "gradient_accumulation_steps")
    assert (acc.current_value, acc.recommended_value) == (1, 2) and "effective batch at 32" in acc.impact
    gc = rec_for(r, "gradient_checkpointing")
    assert gc.recommended_value is True and gc.current_value is False
    bf16 = rec_for(r, "bf16")  # an A100 has bf16
    assert bf16.code == "TrainingArguments(bf16=True)"
    assert [x.severity for x in r.recommendations[:3]] == ["critical"] * 3
    assert r.recommendations[0] is bs  # the batch size first


def test_gpu_memory_full_of_allocator_cache_is_only_info(store_url):
    rid = build_run(
        store_url,
        framework="hf",
        config=HF_CFG,
        steps=20,
        series={"loss": decaying(20)},
        samples=[(host(20 * GiB), [gpu(77 * GiB, alloc=30 * GiB)])] * 4,
    )
    r = report(store_url, rid)
    (f,) = by_rule(r, "memory.gpu")
    assert f.severity == "info" and "cache" in f.title
    assert r.health == "good" and not [x for x in r.recommendations if x.rule.startswith("memory")]


def test_host_ram_swap_and_workers_recommend_fewer_workers_with_the_memory_saved(store_url):
    samples = [
        (host(u * GiB, swap=s * GiB, rss=20 * GiB, workers_rss=24 * GiB, workers=8), [])
        for u, s in ((40, 0), (55, 0.5), (62, 2), (61, 2))
    ]
    rid = build_run(
        store_url,
        config=PL_CFG | {"num_workers": 8},
        steps=30,
        series={"loss": decaying(30)},
        samples=samples,
    )
    r = report(store_url, rid)
    (h,) = by_rule(r, "memory.host")
    assert h.severity == "critical" and h.evidence["fraction"] == pytest.approx(62 / 64)
    (s,) = by_rule(r, "memory.swap")
    assert s.severity == "warning" and s.evidence["swap_growth_bytes"] == 2 * GiB
    (w,) = by_rule(r, "memory.workers")
    assert w.severity == "info" and w.evidence["per_worker_rss_bytes"] == 3 * GiB  # 24 of 44 GiB
    # to get to 80 % of 64 GiB: free 62 - 51.2 = 10.8 GiB, 3 GiB per worker → drop 4 of 8
    nw = rec_for(r, "num_workers")
    assert (nw.current_value, nw.recommended_value, nw.code) == (8, 4, "DataLoader(num_workers=4)")
    assert "12.0 GiB" in nw.impact and nw.severity == "critical"


def test_gpu_headroom_suggests_a_larger_batch_in_keras_terms(store_url):
    rid = build_run(
        store_url,
        framework="keras",
        config=KERAS_CFG,
        steps=30,
        series={"loss": decaying(30)},
        samples=[(host(10 * GiB), [gpu(u * GiB)]) for u in (12, 20, 19, 20)],
    )
    r = report(store_url, rid)
    assert r.health == "good"
    (f,) = by_rule(r, "memory.headroom")
    assert f.severity == "info"
    # fixed = 0.5 GiB + 1e7 × 16 B = 0.649 GiB; per sample (20 - 0.649) / 64 = 0.302 GiB;
    # (64 - 0.649) / 0.302 = 209 → 208 (a multiple of 8)
    bs = rec_for(r, "model.fit(batch_size")
    assert (bs.current_value, bs.recommended_value, bs.code) == (64, 208, "model.fit(batch_size=208)")


def test_headroom_with_activation_checkpointing_on_suggests_switching_it_off(store_url):
    cfg = HF_CFG | {"gradient_checkpointing": True, "training_args": {"activation_checkpointing": True}}
    rid = build_run(
        store_url,
        framework="hf",
        config=cfg,
        steps=20,
        series={"loss": decaying(20)},
        samples=[(host(10 * GiB), [gpu(20 * GiB)])] * 4,
    )
    r = report(store_url, rid)
    off = rec_for(r, "activation_checkpointing")  # transformers 5 spells it this way
    assert off.recommended_value is False and off.code == "TrainingArguments(activation_checkpointing=False)"


def test_an_oom_the_hf_trainer_recovered_from_starts_the_next_run_at_the_batch_that_worked(store_url):
    cfg = HF_CFG | {"train_batch_size": 16}  # auto_find_batch_size settled on 16 after an OOM at 32
    msg = "out of memory: the Trainer retries with train_batch_size=16 (auto_find_batch_size)"
    rid = build_run(
        store_url,
        framework="hf",
        config=cfg,
        steps=30,
        series={"loss": decaying(30)},
        at={0: [event(ev.OOM, 0, msg)]},
    )
    r = report(store_url, rid)
    (oom,) = by_rule(r, "memory.oom")
    assert oom.severity == "warning" and "went on and completed" in oom.detail
    assert r.log_errors[0]["category"] == "oom" and r.log_errors[0]["source"] == "event"
    bs = rec_for(r, "per_device_train_batch_size")
    assert (bs.current_value, bs.recommended_value) == (32, 16)
    assert rec_for(r, "gradient_accumulation_steps").recommended_value == 2


def test_oom_message_numbers_are_read():
    msg = (
        "CUDA out of memory. Tried to allocate 8.00 GiB. GPU 0 has a total capacity of 79.25 GiB of which 1.2 GiB "
        "is free. Including non-PyTorch memory, this process has 77.90 GiB memory in use."
    )
    p = parse_oom_message(msg)
    assert p == {"tried": 8 * GiB, "capacity": 79.25 * GiB, "free": 1.2 * GiB, "in_use": 77.9 * GiB, "gpu": 0}


# ---------------------------------------------------------------------------- throughput
def test_idle_gpu_with_a_saturated_cpu_recommends_workers_pinned_memory_persistent_workers(store_url):
    rid = build_run(
        store_url,
        config=PL_CFG,
        steps=60,
        series={"loss": decaying(60), "step_time": [0.05] * 60, "data_time": [0.004] * 60},
        samples=[(host(10 * GiB, cpu=97.0, workers=2, workers_rss=GiB), [gpu(30 * GiB, util=12.0)])] * 6,
        at={0: [event(ev.EPOCH_START, 0)], 30: [event(ev.EPOCH_START, 30)]},
        host_name="gpu-node-7",
    )  # not this machine: its core count is unknown here
    r = report(store_url, rid)
    (f,) = by_rule(r, "throughput.gpu_idle")
    assert f.severity == "warning" and f.evidence["gpu_util_mean_percent"] == pytest.approx(12.0)
    assert f.evidence["cpu_mean_percent"] == pytest.approx(97.0)
    assert not by_rule(r, "throughput.input_bound")  # 7 % of the step waits: not input-bound
    nw = rec_for(r, "num_workers")
    assert (nw.current_value, nw.recommended_value) == (2, 4)
    assert rec_for(r, "pin_memory").recommended_value is True
    assert rec_for(r, "persistent_workers").code == "DataLoader(persistent_workers=True)"


def test_an_underused_gpu_without_a_host_bottleneck_is_info(store_url):
    rid = build_run(
        store_url,
        config=PL_CFG,
        steps=40,
        series={"loss": decaying(40), "step_time": [0.05] * 40, "data_time": [0.001] * 40},
        samples=[(host(10 * GiB, cpu=30.0), [gpu(60 * GiB, util=20.0)])] * 5,
    )
    (f,) = by_rule(report(store_url, rid), "throughput.gpu_idle")
    assert f.severity == "info"


def test_stalls_away_from_epoch_boundaries_and_a_deeper_prefetch(store_url):
    n = 200
    data = [0.01] * n
    for s in (40, 80, 120, 160, 150):
        data[s] = 3.0
    rid = build_run(
        store_url,
        config=PL_CFG,
        steps=n,
        series={"loss": decaying(n), "step_time": [0.05] * n, "data_time": data},
        at={150: [event(ev.EPOCH_START, 150)]},
    )
    r = report(store_url, rid)
    (f,) = by_rule(r, "throughput.stalls")
    assert f.evidence["count"] == 4 and f.evidence["steps"] == [40, 80, 120, 160]  # 150 is an epoch start
    assert f.severity == "warning" and f.evidence["data_share_of_stalls"] > 0.9
    pf = rec_for(r, "prefetch_factor")
    assert (pf.current_value, pf.recommended_value) == (2, 4)


def test_uneven_step_times(store_url):
    st = [0.02, 0.02, 0.1, 0.02, 0.1] * 20
    rid = build_run(
        store_url,
        config=PL_CFG,
        steps=100,
        series={"loss": decaying(100), "step_time": st, "data_time": [0.001] * 100},
    )
    (f,) = by_rule(report(store_url, rid), "throughput.uneven")
    assert f.severity == "info" and f.evidence["spread"] == pytest.approx(4.0)


# ---------------------------------------------------------------------------- optimization dynamics
def test_nan_loss_in_fp16_recommends_lower_lr_and_bf16(store_url):
    loss = decaying(50)
    loss[30:] = [math.nan] * 20
    cfg = HF_CFG | {"fp16": True, "precision": "16-mixed"}
    rid = build_run(
        store_url,
        framework="hf",
        config=cfg,
        steps=50,
        series={"loss": loss, "lr": [5e-5] * 30 + [4e-5] * 20},
    )
    r = report(store_url, rid)
    (f,) = by_rule(r, "stability.nonfinite")
    assert f.severity == "critical" and f.step == 30 and f.evidence["lr_at_step"] == pytest.approx(4e-5)
    assert f.evidence["count"] == 20 and f.evidence["recovered"] is False
    lr = rec_for(r, "learning_rate")
    assert lr.current_value == pytest.approx(4e-5) and lr.recommended_value == pytest.approx(4e-6)
    assert rec_for(r, "bf16").recommended_value is True
    assert not [x for x in r.recommendations if "max_grad_norm" in (x.config_path or "")]  # HF clips at 1.0


def test_loss_spikes_recommend_gradient_clipping(store_url):
    loss = decaying(600, noise=0.005)
    for s in (200, 300, 400):
        loss[s] = loss[s] * 8
    rid = build_run(store_url, config=PL_CFG, steps=600, series={"loss": loss, "lr": [0.1] * 600})
    r = report(store_url, rid)
    (f,) = by_rule(r, "stability.spikes")
    assert f.severity == "warning" and f.evidence["steps"] == [200, 300, 400]
    clip = rec_for(r, "gradient_clip_val")
    assert (clip.current_value, clip.recommended_value, clip.code) == (
        None,
        1.0,
        "Trainer(gradient_clip_val=1.0)",
    )


def test_divergence_recommends_lower_lr_clipping_and_the_checkpoint_before(store_url, tmp_path):
    ckpt = tmp_path / "best.weights.h5"
    ckpt.write_bytes(b"x")
    loss = [2.0 - 1.8 * s / 300 for s in range(300)] + [0.2 + 1.5 * s / 300 for s in range(300)]
    rid = build_run(
        store_url,
        framework="keras",
        config=KERAS_CFG,
        steps=600,
        series={"loss": loss, "lr": [0.001] * 600},
        at={299: [lambda rec: rec.checkpoint(ckpt, step=299, source="ModelCheckpoint")]},
    )
    r = report(store_url, rid)
    (f,) = by_rule(r, "stability.divergence")
    assert f.severity == "warning" and 250 <= f.evidence["best_step"] <= 320
    lr = rec_for(r, "learning_rate")
    assert lr.code == "keras.optimizers.Adam(learning_rate=0.0005)"
    assert rec_for(r, "clipnorm").recommended_value == 1.0
    back = rec_for(r, "load_weights")
    assert back.recommended_value == str(ckpt) and back.code == f'model.load_weights("{ckpt}")'
    assert not by_rule(r, "stability.plateau")


def test_plateau_at_a_constant_lr_recommends_a_schedule(store_url):
    n = 1000
    rng = np.random.default_rng(1)
    loss = [0.5 + 1.5 * math.exp(-s / 60) + 0.002 * rng.standard_normal() for s in range(n)]
    rid = build_run(
        store_url, framework="hf", config=HF_CFG, steps=n, series={"loss": loss, "lr": [5e-5] * n}
    )
    r = report(store_url, rid)
    (f,) = by_rule(r, "stability.plateau")
    # flat from the knee of the curve (0.5 + 1.5·e^(-s/60) is within 7 % of its level at step 225, 2 % at 260),
    # not from "the last quarter"
    assert (
        f.severity == "info" and 200 <= f.evidence["from_step"] <= 360 and f.step == f.evidence["from_step"]
    )
    assert 0.5 < f.confidence <= 1 and abs(f.evidence["improvement"]) < 0.02
    rec = rec_for(r, "reduce_lr_on_plateau")
    assert rec.recommended_value == pytest.approx(5e-6)
    assert (
        rec.code
        == 'TrainingArguments(lr_scheduler_type="reduce_lr_on_plateau", lr_scheduler_kwargs={"factor": 0.1})'
    )


def test_a_loss_that_never_improves_is_a_warning(store_url):
    rng = np.random.default_rng(2)
    rid = build_run(
        store_url, config=PL_CFG, steps=600, series={"loss": (2.3 + 0.01 * rng.standard_normal(600)).tolist()}
    )
    (f,) = by_rule(report(store_url, rid), "stability.no_progress")
    assert f.severity == "warning"


def test_overfitting_recommends_early_stopping_the_best_checkpoint_and_weight_decay(store_url, tmp_path):
    vals = {99: 1.0, 199: 0.7, 299: 0.6, 399: 0.66, 499: 0.75, 599: 0.9}
    paths = {}
    for s in vals:
        paths[s] = tmp_path / f"epoch-step={s}.ckpt"
        paths[s].write_bytes(b"x")

    def ckpt(s):
        return lambda rec: rec.checkpoint(paths[s], step=s, monitor="val_loss", monitor_value=vals[s])

    cfg = PL_CFG | {
        "optimizers": [{"class": "AdamW", "defaults": {"lr": 1e-3, "weight_decay": 0.0}}],
        "model_class": "my.models.Classifier",
    }
    rid = build_run(
        store_url,
        config=cfg,
        steps=600,
        series={"loss": decaying(600, 2.0, 0.05), "val_loss": vals},
        at={s: [ckpt(s)] for s in vals},
    )
    r = report(store_url, rid)
    (f,) = by_rule(r, "stability.overfitting")
    assert (
        f.severity == "warning"
        and f.evidence["best_step"] == 299
        and f.evidence["evaluations_after_best"] == 3
    )
    es = rec_for(r, "EarlyStopping")
    assert es.code == 'Trainer(callbacks=[EarlyStopping(monitor="val_loss", patience=2)])'
    keep = rec_for(r, "load_from_checkpoint")
    assert keep.recommended_value == str(paths[299]) and keep.code.startswith(
        "Classifier.load_from_checkpoint("
    )
    wd = rec_for(r, "weight_decay")
    assert (wd.current_value, wd.recommended_value) == (0.0, 0.01)


def test_a_noisy_but_improving_validation_loss_is_not_overfitting(store_url):
    rng = np.random.default_rng(5)
    vals = {s: 0.3 + 2.0 * math.exp(-s / 300) + 0.03 * rng.standard_normal() for s in range(49, 2000, 50)}
    rid = build_run(
        store_url, config=PL_CFG, steps=2000, series={"loss": decaying(2000, 2.0, 0.25), "val_loss": vals}
    )
    assert not by_rule(report(store_url, rid), "stability.overfitting")


def test_exploding_gradient_norm_recommends_clipping_at_the_typical_norm(store_url):
    rng = np.random.default_rng(3)
    gn = (1.0 + 0.05 * rng.standard_normal(300)).tolist()
    gn[200:] = [30.0 + s for s in range(100)]
    rid = build_run(store_url, config=PL_CFG, steps=300, series={"loss": decaying(300), "grad_norm": gn})
    r = report(store_url, rid)
    (f,) = by_rule(r, "stability.grad_explode")
    assert f.severity == "warning" and f.evidence["late_median"] > 10 * f.evidence["early_median"]
    clip = rec_for(r, "gradient_clip_val")
    assert clip.recommended_value == 1.0  # the p90 of the early norms, one significant digit


def test_vanishing_gradient_norm_in_fp16_recommends_bf16(store_url):
    gn = [10 ** (-s / 50) for s in range(300)]  # 1 → 1e-6
    cfg = PL_CFG | {"precision": "16-mixed"}
    rid = build_run(
        store_url,
        config=cfg,
        steps=300,
        series={"loss": [2.0 - 0.001 * s for s in range(300)], "grad_norm": gn},
    )
    r = report(store_url, rid)
    (f,) = by_rule(r, "stability.grad_vanish")
    assert f.severity == "warning"
    assert rec_for(r, "precision").code == 'Trainer(precision="bf16-mixed")'


def _lr_change(step, old, new):
    return event(
        "param_change",
        step,
        f"lr: {old} -> {new}",
        old={"lr": old},
        new={"lr": new},
        source="widget",
        request_id=7,
        mode="scale",
    )


def test_an_lr_decay_that_helped_becomes_a_schedule(store_url):
    rng = np.random.default_rng(4)
    loss = [1.0 + 0.01 * rng.standard_normal() for _ in range(100)] + [
        0.6 + 0.01 * rng.standard_normal() for _ in range(100)
    ]
    rid = build_run(
        store_url, config=PL_CFG, steps=200, series={"loss": loss}, at={99: [_lr_change(100, 0.1, 0.01)]}
    )
    r = report(store_url, rid)
    (f,) = by_rule(r, "control.lr_change")
    assert f.severity == "info" and f.evidence["verdict"] == "helped" and f.step == 100
    rec = rec_for(r, "MultiStepLR")
    assert rec.recommended_value == pytest.approx(0.1) and "milestones=[100], gamma=0.1" in rec.code


def test_an_lr_raise_that_hurt_is_undone(store_url):
    loss = [1.0 - 0.001 * s for s in range(100)] + [3.0 + 0.01 * s for s in range(100)]
    rid = build_run(
        store_url,
        framework="hf",
        config=HF_CFG,
        steps=200,
        series={"loss": loss},
        at={99: [_lr_change(100, 5e-5, 5e-4)]},
    )
    r = report(store_url, rid)
    (f,) = by_rule(r, "control.lr_change")
    assert f.severity == "warning" and f.evidence["verdict"] == "hurt"
    rec = rec_for(r, "learning_rate")
    assert (rec.current_value, rec.recommended_value) == (5e-4, 5e-5)


# ---------------------------------------------------------------------------- precision
@pytest.mark.parametrize(
    "name,framework,cfg,path,code",
    [
        (
            "NVIDIA A100-SXM4-80GB",
            "lightning",
            PL_CFG,
            "Trainer(precision=",
            'Trainer(precision="bf16-mixed")',
        ),
        ("Tesla V100-SXM2-16GB", "lightning", PL_CFG, "Trainer(precision=", 'Trainer(precision="16-mixed")'),
        (
            "NVIDIA H100 80GB HBM3",
            "keras",
            KERAS_CFG,
            "set_global_policy",
            'keras.mixed_precision.set_global_policy("mixed_bfloat16")',
        ),
    ],
)
def test_fp32_on_tensor_cores_recommends_mixed_precision(store_url, name, framework, cfg, path, code):
    rid = build_run(
        store_url,
        framework=framework,
        config=cfg,
        steps=20,
        series={"loss": decaying(20)},
        samples=[(host(10 * GiB), [gpu(60 * GiB, name=name)])] * 4,
    )
    r = report(store_url, rid)
    (f,) = by_rule(r, "precision.fp32")
    assert f.severity == "info" and f.evidence["gpus"] == [name]
    assert rec_for(r, path).code == code


def test_mixed_precision_or_an_old_gpu_gets_no_precision_advice(store_url):
    rid = build_run(
        store_url,
        config=PL_CFG | {"precision": "bf16-mixed"},
        steps=10,
        series={"loss": decaying(10)},
        samples=[(host(10 * GiB), [gpu(60 * GiB)])] * 4,
    )
    assert not by_rule(report(store_url, rid), "precision.fp32")
    rid = build_run(
        store_url,
        config=PL_CFG,
        steps=10,
        series={"loss": decaying(10)},
        samples=[(host(10 * GiB), [gpu(6 * GiB, total=12 * GiB, name="Tesla K80")])] * 4,
    )
    assert not by_rule(report(store_url, rid), "precision.fp32")


# ---------------------------------------------------------------------------- logs
def test_log_errors_are_categorised_and_tied_to_the_memory_at_their_time(store_url):
    cfg = HF_CFG | {"fp16": True, "precision": "16-mixed", "dataloader_num_workers": 4}
    at = {
        5: [log("WARNING", "Gradient overflow. Skipping step, loss scaler 0 reducing loss scale to 32768")]
        * 3,
        10: [log("ERROR", "RuntimeError: CUDA error: device-side assert triggered", logger="torch")],
        12: [
            log(
                "ERROR",
                "[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7, "
                "OpType=ALLREDUCE, Timeout(ms)=1800000) ran for 1800005 milliseconds before timing out.",
            )
        ],
        14: [
            log(
                "INFO",
                "RuntimeError: DataLoader worker (pid 4242) is killed by signal: Killed.",
                source="stderr",
                logger=None,
                step=14,
            )
        ],
        16: [log("WARNING", "some deprecation"), log("ERROR", "could not reach the metrics server")],
        18: [
            log(
                "WARNING",
                "tmon could not write to sqlite:///x.db (OperationalError: disk I/O error)",
                source="tmon",
                logger="tmon",
            )
        ],
    }
    samples = [(host(u * GiB, workers=4, workers_rss=8 * GiB), [gpu(40 * GiB)]) for u in (10, 20, 30, 40, 50)]
    rid = build_run(
        store_url,
        framework="hf",
        config=cfg,
        steps=20,
        series={"loss": decaying(20)},
        samples=samples,
        at=at,
        status=ev.FAILED,
        error={
            "type": "torch.AcceleratorError",
            "message": "CUDA error: device-side assert triggered",
            "traceback": "Traceback...\ntorch.AcceleratorError: CUDA error",
            "oom": False,
        },
    )
    r = report(store_url, rid)
    cats = [(e["category"], e["count"]) for e in r.log_errors]
    assert ("nonfinite", 3) in cats and ("nccl", 1) in cats and ("dataloader", 1) in cats
    assert ("warning", 1) in cats and ("error", 1) in cats and ("tmon", 1) in cats
    assert [c for c, _ in cats].count("cuda") == 2  # the log line, and the exception that ended the run
    exc = next(e for e in r.log_errors if e["source"] == "exception")
    assert "Traceback" in exc["traceback"] and exc["category"] == "cuda"
    worker = next(e for e in r.log_errors if e["category"] == "dataloader")
    assert worker["step"] == 14 and worker["memory"]["workers"] == 4
    assert worker["memory"]["ram_used_bytes"] in [u * GiB for u in (10, 20, 30, 40, 50)]
    assert abs(worker["memory"]["offset_s"]) < 1

    assert by_rule(r, "logs.cuda")[0].severity == "critical"  # the run failed
    assert rec_for(r, "CUDA_LAUNCH_BLOCKING").recommended_value == 1
    (nccl,) = by_rule(r, "logs.nccl")
    assert nccl.evidence["timeout"] is True
    assert (rec_for(r, "ddp_timeout").current_value, rec_for(r, "ddp_timeout").recommended_value) == (
        1800,
        3600,
    )
    (dl,) = by_rule(r, "logs.dataloader")
    assert "out-of-memory killer" in dl.evidence["cause"]
    assert (
        rec_for(r, "dataloader_num_workers").current_value,
        rec_for(r, "dataloader_num_workers").recommended_value,
    ) == (4, 2)
    assert by_rule(r, "logs.nonfinite") and rec_for(r, "bf16").recommended_value is True
    (errs,) = by_rule(r, "logs.errors")
    assert errs.evidence["count"] == 1 and "metrics server" in errs.detail
    (failed,) = by_rule(r, "lifecycle.failed")
    assert failed.severity == "critical" and "AcceleratorError" in failed.detail


def test_store_outage_and_dropped_points_are_reported(store_url):
    at = {
        10: [
            event(
                ev.STORE_GAP,
                None,
                "the store could not be written for 4.0 s",
                since=100.0,
                until=104.0,
                dropped_points=0,
            )
        ],
        None: [lambda rec: rec.update_run(dropped_points=1234)],
    }
    rid = build_run(store_url, config=PL_CFG, steps=20, series={"loss": decaying(20)}, at=at)
    (f,) = by_rule(report(store_url, rid), "lifecycle.store")
    assert f.severity == "warning" and f.evidence["dropped_points"] == 1234 and f.evidence["outage_s"] == 4.0


# ---------------------------------------------------------------------------- lifecycle
def test_a_lost_run_whose_host_ran_out_of_ram(store_url, tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {os.getcwd()!r})
        sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))!r})
        from tests.reportkit import GiB, build_run, host
        rec = build_run({store_url!r}, steps=30, series={{"loss": [1.0] * 30}}, status=None, heartbeat_timeout=1.0,
                        samples=[(host(u * GiB, workers=6, workers_rss=30 * GiB), []) for u in (40, 55, 63)])
        os._exit(0)  # as a SIGKILL would: the run is never closed
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    time.sleep(1.2)
    r = tmon_core.report(store=store_url)
    assert r.summary["status"] == "lost"
    (f,) = by_rule(r, "lifecycle.lost")
    assert f.severity == "critical" and "out-of-memory killer" in f.detail
    assert by_rule(r, "memory.host")[0].severity == "critical"
    assert rec_for(r, "num_workers").recommended_value < 6


def test_interrupted_and_empty_runs_report_without_alarms(store_url):
    rid = build_run(store_url, config=PL_CFG, steps=5, series={"loss": decaying(5)}, status=ev.INTERRUPTED)
    r = report(store_url, rid)
    assert r.health == "good" and by_rule(r, "lifecycle.interrupted")[0].severity == "info"
    rid = build_run(store_url, framework=None, steps=0)
    r = report(store_url, rid)
    assert r.health == "good" and not r.recommendations and r.summary["steps"] is None


# ---------------------------------------------------------------------------- the report's forms
def test_saved_with_the_run_json_round_trip_text_and_html(store_url):
    loss = decaying(50)
    loss[40] = math.nan
    rid = build_run(
        store_url,
        framework="hf",
        config=HF_CFG,
        steps=50,
        series={"loss": loss, "lr": [5e-5] * 50},
        samples=[(host(20 * GiB), [gpu(78 * GiB)])] * 4,
        at={20: [log("WARNING", 'a <b>html</b> & "quoted" warning')]},
    )
    r = report(store_url, rid)
    saved = load_report(rid, store=store_url)
    assert saved is not None and saved.to_dict() == json.loads(r.to_json())
    again = Report.from_json(r.to_json())
    assert again.to_dict() == r.to_dict() and again.to_json() == r.to_json()
    assert r.summary["best"]["loss"]["step"] < 50 and r.summary["steps"] == 49  # HF numbers its steps from 1
    assert json.loads(r.to_json())["findings"][0]["evidence"]  # plain JSON all the way down (no NaN tokens)

    text = str(r)
    assert text.startswith(f"tmon report · run {rid}") and "health: CRITICAL" in text
    assert "Recommendations" in text and "TrainingArguments(per_device_train_batch_size=" in text
    card = r._repr_html_()
    assert card.startswith('<div class="tmon-report"') and card.endswith("</div>")
    assert "CRITICAL" in card and "TrainingArguments(bf16=True)" in card
    assert "&lt;b&gt;html&lt;/b&gt; &amp; &quot;quoted&quot;" in card and "<b>html</b>" not in card
    assert repr(r).startswith(f"Report(run='{rid}', health='critical'")

    with open_db(store_url) as conn:
        ((health, body),) = conn.execute(
            "SELECT health, body FROM tmon_reports WHERE run_id = ?", (rid,)
        ).fetchall()
    assert health == "critical" and json.loads(body)["run_id"] == rid


def open_db(store_url):
    import sqlite3
    from contextlib import closing

    return closing(sqlite3.connect(store_url.removeprefix("sqlite:///")))


def test_thresholds_are_configurable_and_checked(store_url):
    rid = build_run(
        store_url, config=PL_CFG, steps=10, series={"loss": decaying(10)}, samples=[(host(40 * GiB), [])] * 4
    )  # 62.5 % of RAM
    assert not by_rule(report(store_url, rid), "memory.host")
    r = report(store_url, rid, thresholds={"memory_warning": 0.6, "memory_critical": 0.7}, save=False)
    assert by_rule(r, "memory.host")[0].severity == "warning" and r.thresholds["memory_warning"] == 0.6
    r = report(store_url, rid, thresholds=Thresholds(memory_warning=0.5, memory_critical=0.6))
    assert by_rule(r, "memory.host")[0].severity == "critical"
    with pytest.raises(ValueError, match="memory_warnin"):
        report(store_url, rid, thresholds={"memory_warnin": 0.5})
    with pytest.raises(ValueError, match="memory_warning must be <= memory_critical"):
        Thresholds(memory_warning=0.9, memory_critical=0.8)
    with pytest.raises(ValueError, match="memory_critical must be a fraction"):
        Thresholds(memory_critical=95)


def test_latest_run_default_store_and_unknown_runs(store_url, monkeypatch):
    with pytest.raises(KeyError, match="holds no runs"):
        tmon_core.report(store=store_url)
    rid = build_run(store_url, config=PL_CFG, steps=5, series={"loss": decaying(5)})
    assert tmon_core.report(store=store_url).run_id == rid
    assert tmon_core.report(rid[:6], store=store_url).run_id == rid
    monkeypatch.setenv("TMON_STORE", store_url)
    assert tmon_core.report().run_id == rid and isinstance(tmon_core.report("latest"), tmon_core.Report)
    with pytest.raises(KeyError, match="no run"):
        tmon_core.report("nope", store=store_url)


def test_a_rule_that_breaks_costs_only_itself(store_url, monkeypatch):
    from tmon_core.analysis.rules import throughput

    def broken(d):
        raise ZeroDivisionError("boom")
        yield

    monkeypatch.setattr(throughput, "check", broken)
    loss = decaying(20)
    loss[10] = math.nan
    rid = build_run(store_url, config=PL_CFG, steps=20, series={"loss": loss})
    r = report(store_url, rid)
    assert (
        by_rule(r, "throughput.error")[0].severity == "info"
        and "boom" in by_rule(r, "throughput.error")[0].detail
    )
    assert by_rule(r, "stability.nonfinite")


TMON = shutil.which("tmon", path=os.path.dirname(sys.executable)) or "tmon"


def test_cli_report_text_and_json(store_url):
    rid = build_run(
        store_url,
        config=PL_CFG,
        steps=30,
        series={"loss": decaying(30)},
        samples=[(host(62 * GiB, workers=8, workers_rss=16 * GiB, rss=20 * GiB), [])] * 4,
    )
    out = subprocess.run([TMON, "--store", store_url, "report"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (
        f"run {rid}" in out.stdout
        and "health: CRITICAL" in out.stdout
        and "DataLoader(num_workers=" in out.stdout
    )
    out = subprocess.run(
        [TMON, "report", rid[:5], "--json", "--no-save", "--store", store_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["run_id"] == rid and doc["health"] == "critical"
    assert doc["recommendations"][0]["config_path"] == "DataLoader(num_workers=...)"
    with open_db(store_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM tmon_reports").fetchone()[0] == 1  # --no-save saved nothing
    out = subprocess.run(
        [TMON, "report", "nope", "--store", store_url], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1 and "no run 'nope'" in out.stderr


def test_a_host_memory_error_is_a_host_oom_even_with_gpus(store_url):
    rid = build_run(
        store_url,
        config=PL_CFG,
        steps=10,
        series={"loss": decaying(10)},
        samples=[(host(30 * GiB), [gpu(20 * GiB)])] * 3,
        status=ev.FAILED,
        error={"type": "builtins.MemoryError", "message": "", "traceback": "MemoryError", "oom": True},
    )
    r = report(store_url, rid)
    (oom,) = by_rule(r, "memory.oom")
    assert oom.evidence["device"] == "host" and oom.severity == "critical"
    assert rec_for(r, "DataLoader(batch_size").recommended_value == 32  # no figures: halve 64


@pytest.mark.parametrize(
    "message,path,value",
    [
        (
            "RuntimeError: DataLoader worker (pid 77) is killed by signal: Bus error. It is possible that dataloader's "
            "workers are out of shared memory. Please try to raise your shared memory limit.",
            "--shm-size",
            "8g",
        ),
        (
            "RuntimeError: Too many open files. Communication with the workers is no longer possible.",
            "set_sharing_strategy",
            "file_system",
        ),
    ],
)
def test_dataloader_crash_causes_get_their_own_advice(store_url, message, path, value):
    rid = build_run(
        store_url,
        config=PL_CFG,
        steps=10,
        series={"loss": decaying(10)},
        status=ev.FAILED,
        error={"type": "builtins.RuntimeError", "message": message, "traceback": "", "oom": False},
    )
    r = report(store_url, rid)
    (f,) = by_rule(r, "logs.dataloader")
    assert f.severity == "critical"
    assert rec_for(r, path).recommended_value == value


def test_a_run_still_going_reports_what_it_has_so_far(store_url):
    rec = build_run(store_url, config=PL_CFG, steps=20, series={"loss": decaying(20)}, status=None)
    try:
        r = report(store_url, rec.run_id, save=False)
        assert r.summary["status"] == "running" and by_rule(r, "lifecycle.running")[0].severity == "info"
        assert load_report(rec.run_id, store=store_url) is None
    finally:
        rec.close()


def test_the_headline_gives_rates_as_people_read_them():
    from tmon_core.analysis import render
    from tmon_core.analysis.report import Report

    summary = {
        "status": "completed",
        "duration_s": 42.0,
        "steps": 448,
        "total_steps": 448,
        "throughput": {"steps_per_s": 1370.2, "samples_per_s": 43860.3},
    }
    line = render.text(Report("r1", "good", summary, [], [], [])).splitlines()
    head = next(x for x in line if "steps/s" in x)
    assert "1,370 steps/s" in head and "43,860 samples/s" in head and "e+" not in head
