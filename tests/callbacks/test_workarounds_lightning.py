"""What ``tmon_callbacks._workarounds.lightning`` relies on, checked against the installed Lightning.

Each test names the private piece of Lightning a workaround reads; when a Lightning release changes
it, the test here fails with that name (instead of tmon silently recording less).
"""

from __future__ import annotations

import importlib

import pytest

pytest.importorskip("lightning")
import torch  # noqa: E402

from examples.tiny_lightning import make  # noqa: E402
from tmon_callbacks._workarounds import lightning as wa  # noqa: E402

PACKAGES = [
    "lightning.pytorch",
    pytest.param(
        "pytorch_lightning",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("pytorch_lightning") is None, reason="pytorch_lightning is not installed"
        ),
    ),
]


def _trainer(pl, tmp_path, callbacks, **kw):
    return pl.Trainer(
        callbacks=callbacks,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        **kw,
    )


def test_the_version_gate_reads_versions():
    assert wa.SKIPS_NON_CALLABLE_HOOKS_SINCE == (1, 6)
    assert wa.skips_non_callable_hooks("2.6.0") and wa.skips_non_callable_hooks("1.6.0rc1")
    assert not wa.skips_non_callable_hooks("1.5.10")
    assert not wa.skips_non_callable_hooks(None) and not wa.skips_non_callable_hooks("not a version")


@pytest.mark.parametrize("package", PACKAGES)
def test_the_installed_dispatcher_skips_a_hook_that_is_not_callable(package, tmp_path):
    # the premise of skip_unused_hooks: _call_callback_hooks passes over `None` and calls the rest
    pl = importlib.import_module(package)
    call = importlib.import_module(f"{package}.trainer.call")
    assert wa.skips_non_callable_hooks(pl.__version__), f"{package} {pl.__version__} is older than the gate"
    calls = []

    class Probe(pl.Callback):
        def on_before_zero_grad(self, trainer, pl_module, optimizer):
            calls.append(optimizer)

    probe = Probe()
    probe.on_after_backward = None
    trainer = _trainer(pl, tmp_path, [probe])
    call._call_callback_hooks(trainer, "on_after_backward")  # Lightning raised TypeError before 1.6
    call._call_callback_hooks(trainer, "on_before_zero_grad", "opt")
    assert calls == ["opt"]


@pytest.mark.parametrize("package", PACKAGES)
def test_skip_unused_hooks_leaves_what_a_subclass_defines(package):
    pl = importlib.import_module(package)

    class Base(pl.Callback):
        pass

    class Mine(Base):
        def on_after_backward(self, trainer, pl_module):
            pass

    cb = Mine()
    wa.skip_unused_hooks(cb, wa.UNUSED_BATCH_HOOKS, pl.Callback, Base)
    assert callable(cb.on_after_backward) and cb.on_before_backward is None
    assert all(hasattr(pl.Callback, name) for name in wa.UNUSED_BATCH_HOOKS), (
        "a batch hook Lightning no longer has"
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_the_result_collection_holds_the_steps_self_log_values(package, tmp_path):
    # trainer.fit_loop.epoch_loop._results, its _forked_name, and each metric's meta, has_reset
    # and _forward_cache: what tmon records between Lightning's logging steps
    pl = importlib.import_module(package)
    TinyRegressor, SyntheticData = make(package)
    seen = []

    class Reader(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            results = wa.result_collection(trainer)
            assert results is not None, "trainer.fit_loop.epoch_loop._results is gone or has another shape"
            values = {"loss": "tmon's"}
            wa.logged_now(results, values, {})
            seen.append((values, outputs["loss"].detach().clone()))

    _trainer(pl, tmp_path, [Reader()], max_epochs=1, limit_val_batches=0).fit(
        TinyRegressor(), SyntheticData(n=48, batch_size=16)
    )
    assert len(seen) == 3
    for values, loss in seen:
        assert values["loss"] == "tmon's"  # a name tmon records itself keeps tmon's value
        assert set(values) == {"loss", "train_loss_step"}  # the on_step value, under its logged name
        assert torch.is_tensor(values["train_loss_step"]) and float(
            values["train_loss_step"]
        ) == pytest.approx(float(loss))


@pytest.mark.parametrize("package", PACKAGES)
def test_state_key_is_lightnings_generated_key(package):
    pl = importlib.import_module(package)

    class Named(pl.Callback):
        pass

    key = wa.state_key(Named(), run_name="a")
    assert key == Named.__qualname__ + "{'run_name': 'a'}" and key != wa.state_key(Named(), run_name="b")


def test_a_lazy_instance_runs_init_when_finished():
    jsonargparse = pytest.importorskip("jsonargparse")
    import lightning.pytorch as pl

    inits = []

    class Late(pl.Callback):
        def __init__(self, x: int = 0):
            inits.append(x)
            self._state_key = None

    lazy = jsonargparse.lazy_instance(Late, x=1)
    assert inits == [] and callable(getattr(lazy, "_lazy_init", None)), "jsonargparse's lazy_instance changed"
    wa.finish_lazy_instance(lazy)
    assert inits == [1]
    wa.finish_lazy_instance(lazy)  # done once
    assert inits == [1]


@pytest.mark.parametrize("package", PACKAGES)
def test_private_settings_of_timer_and_swa(package):
    callbacks = importlib.import_module(f"{package}.callbacks")
    assert wa.private_settings(callbacks.Timer(duration="00:00:01:00")) == {"duration_s": 60.0}
    swa = callbacks.StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=3, annealing_epochs=2)
    assert wa.private_settings(swa) == {
        "swa_epoch_start": 3,
        "annealing_epochs": 2,
        "annealing_strategy": "cos",
    }
