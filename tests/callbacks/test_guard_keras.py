"""Keras' guard set-up on the torch backend, in this process (the guarded fits on torch, TensorFlow
and JAX, NaN injected: tests/callbacks/test_keras_backends.py): what is refused, and when."""

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere in this process

import pytest  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip(
        f"these tests run Keras on the torch backend, this process has {keras.backend.backend()}",
        allow_module_level=True,
    )

from tests.callbacks.test_keras import data  # noqa: E402
from tmon_callbacks._adapter import SetupRefused  # noqa: E402
from tmon_callbacks.keras import TMonCallback  # noqa: E402
from tmon_core import Guard, open_store  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def model(jit_compile: bool):
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    m.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", jit_compile=jit_compile)
    return m


def test_skip_on_a_compiled_torch_step_is_refused_before_the_run_opens(tmp_path, store_url):
    cb = TMonCallback(store_url, sample_interval=None, guard="skip", widget=False, report="off")
    x, y = data(32)
    m = model(jit_compile=True)
    with pytest.raises(SetupRefused, match=r"jit_compile=True.*guard='rollback'"):
        m.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
    assert cb.run_id is None and open_store(store_url).runs().empty  # no run left "running"
    assert "apply" not in vars(m.optimizer)


def test_the_skip_wrapper_is_taken_off_the_optimizer_when_the_fit_ends(tmp_path, store_url):
    cb = TMonCallback(store_url, sample_interval=None, guard=Guard("skip"), widget=False, report="off")
    x, y = data(32)
    m = model(jit_compile=False)
    m.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
    assert "apply" not in vars(m.optimizer)  # Keras' own apply again: a later fit without tmon is Keras'
    assert open_store(store_url).run(cb.run_id).status == "completed"


def test_a_fit_that_raised_outside_a_step_leaves_no_guard_behind_for_the_next(tmp_path, store_url):
    """The first fit ends by an exception no hook sees (a callback's, between epochs): its skip wrapper
    stays on the optimizer until the next fit with this callback, which takes it off and guards anew."""

    class Boom(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("a callback failed between epochs")

    cb = TMonCallback(
        store_url, flush_interval=0.05, sample_interval=None, guard="skip", widget=False, report="off"
    )
    x, y = data(32)
    m = model(jit_compile=False)
    with pytest.raises(RuntimeError, match="between epochs"):
        m.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[cb, Boom()])
    first = cb.run_id
    x[16] = float("nan")  # the second batch: step 3 of the next fit (the optimizer has done 2)
    before = [w.copy() for w in m.get_weights()]
    seen = {}

    class Weights(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen[batch] = [w.copy() for w in self.model.get_weights()]

    m.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False, callbacks=[cb, Weights()])
    assert all((a == b).all() for a, b in zip(seen[1], seen[0])) and not all(
        (a == b).all() for a, b in zip(seen[0], before)
    )
    assert "apply" not in vars(m.optimizer)
    store = open_store(store_url)
    assert [d["step"] for d in store.run(cb.run_id).events("guard").data] == [3]
    assert store.run(first).events("guard").empty and cb.run_id != first
