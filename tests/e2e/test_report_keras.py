"""The report of a real Keras 3 fit (torch backend, CPU) speaks Keras: a learning rate too high for the
data blows the loss up to inf/NaN, and the advice names Keras' own optimizer arguments."""

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere in this process

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip(
        f"these tests run Keras on the torch backend, this process has {keras.backend.backend()}",
        allow_module_level=True,
    )
import torch  # noqa: E402

from tests.reportkit import by_rule, rec_for  # noqa: E402
from tmon_callbacks.keras import TMonCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def test_a_keras_fit_that_blows_up_gets_keras_advice(store_url):
    torch.set_num_threads(1)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = (10 * rng.normal(size=(256, 4))).astype("float32")
    y = (100 * x.sum(axis=1)).astype("float32")
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss="mse")
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=0.2)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb])
    r = cb.session.report
    assert r.summary["framework"] == "keras" and r.health == "critical"
    (f,) = by_rule(r, "stability.nonfinite")
    assert f.evidence["lr_at_step"] == pytest.approx(0.5) and f.evidence["recovered"] is False
    lr = rec_for(r, "learning_rate")
    assert (lr.current_value, lr.recommended_value, lr.code) == (
        0.5,
        0.05,
        "keras.optimizers.SGD(learning_rate=0.05)",
    )
    assert rec_for(r, "clipnorm").code == "keras.optimizers.SGD(clipnorm=1.0)"
