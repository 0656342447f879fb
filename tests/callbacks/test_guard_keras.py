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
