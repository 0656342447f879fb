"""What ``tmon_callbacks/_workarounds/keras.py`` relies on in the installed Keras.

Each test checks one internal the Keras adapter uses (a private attribute, a calling frame, a method it
replaces) against real Keras objects and real fits, so a Keras release that changes it fails here,
naming it, instead of silently recording less.
"""

import inspect
import os
import warnings

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere in this process

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip(
        f"these tests run Keras on the torch backend, this process has {keras.backend.backend()}",
        allow_module_level=True,
    )

from tmon_callbacks._workarounds import keras as wa  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def data(n: int = 48):
    rng = np.random.default_rng(0)
    x = rng.random((n, 4), dtype=np.float32)
    return x, (x.sum(axis=1) > 2).astype("float32")


def mlp(optimizer="adam", units: int = 1):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(units, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=optimizer, loss="binary_crossentropy")
    return model


class Hook(keras.callbacks.Callback):
    """Runs ``fn(self, name)`` the first time each hook named in ``when`` fires; keeps what it returns."""

    def __init__(self, fn, when=("on_train_begin",)):
        super().__init__()
        self.fn, self.seen = fn, {}
        for name in when:
            setattr(self, name, lambda *a, _n=name, **k: self._once(_n))

    def _once(self, name):
        if name not in self.seen:
            self.seen[name] = self.fn(self, name)


# ---------------------------------------------------------------------------- the optimizer


def test_learning_rate_object_is_the_schedule_or_the_variable_the_optimizer_was_given():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5)
    opt = keras.optimizers.SGD(schedule)
    assert wa.learning_rate_object(opt) is schedule, (
        "Keras no longer keeps a schedule in optimizer._learning_rate"
    )
    assert (
        wa.learning_rate_object(opt) is not opt.learning_rate
    )  # the public one is its value: why we need this
    const = keras.optimizers.Adam(0.01)
    lr = wa.learning_rate_object(const)
    assert hasattr(lr, "assign"), "a float learning rate is no longer a variable in optimizer._learning_rate"
    lr.assign(0.5)
    assert float(keras.ops.convert_to_numpy(const.learning_rate)) == pytest.approx(0.5)


@pytest.mark.parametrize("cls", [keras.optimizers.SGD, keras.optimizers.RMSprop])
def test_momentum_buffers_exist_only_when_built_with_momentum(cls):
    model = mlp()
    with_momentum, without = cls(0.01, momentum=0.9), cls(0.01, momentum=0.0)
    for opt in (with_momentum, without):
        opt.build(model.trainable_variables)
    assert wa.has_momentum_buffers(with_momentum), f"{cls.__name__}'s momentum variables moved"
    assert not wa.has_momentum_buffers(without)


def test_a_mismatched_optimizer_on_load_is_a_skipping_warning(tmp_path):
    x, y = data()
    saved = mlp(keras.optimizers.Adam(0.01))
    saved.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = str(tmp_path / "adam.keras")
    saved.save(path)
    other = mlp(keras.optimizers.SGD(0.01, momentum=0.9))
    other.fit(x, y, batch_size=16, epochs=1, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        other.load_weights(path)
    messages = [str(w.message) for w in caught]
    assert any(wa.skipped_on_load(m) for m in messages), (
        f"Keras no longer warns 'Skipping' when an optimizer does not fit the file; it said {messages}"
    )


# ---------------------------------------------------------------------------- the fit Keras is running


def test_fit_callbacks_and_arguments_are_found_from_on_train_begin():
    x, y = data()
    other = keras.callbacks.EarlyStopping(monitor="loss")
    hook = Hook(lambda cb, _: (wa.fit_callbacks(cb), wa.fit_arguments(cb.model)))
    mlp().fit(x, y, batch_size=16, epochs=3, initial_epoch=1, verbose=0, callbacks=[hook, other])
    callbacks, (batch_size, initial_epoch) = hook.seen["on_train_begin"]
    names = [type(c).__name__ for c in callbacks]
    assert hook in callbacks and other in callbacks and "History" in names, (
        f"the CallbackList calling on_train_begin was not found among the calling frames: {names}"
    )
    assert (batch_size, initial_epoch) == (16, 1), "fit's batch_size/initial_epoch locals moved"


def test_batch_size_of_a_fit_without_one_comes_from_its_data_adapter():
    x, y = data()
    hook = Hook(lambda cb, _: wa.fit_arguments(cb.model))
    mlp().fit(x, y, epochs=1, verbose=0, callbacks=[hook])
    assert hook.seen["on_train_begin"] == (32, 0), "fit's epoch_iterator.data_adapter.batch_size moved"


def test_resolved_mode_reads_keras_monitor_op():
    x, y = data()
    loss = keras.callbacks.EarlyStopping(monitor="loss", patience=5)
    acc = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=5)
    model = mlp()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=1, validation_split=0.25, verbose=0, callbacks=[loss, acc])
    assert loss.mode == acc.mode == "auto"
    assert (wa.resolved_mode(loss), wa.resolved_mode(acc)) == ("min", "max"), (
        "EarlyStopping.monitor_op no longer holds keras.ops.less / keras.ops.greater"
    )


# ---------------------------------------------------------------------------- monkeypatches of the model


def test_wrapped_step_functions_are_what_fit_calls_and_see_a_step_raising():
    x, y = data()
    model = mlp()
    calls = {"train_function": 0, "test_function": 0}
    steps = wa.StepFunctions(model, on_exception=lambda exc: None)

    def begin(cb, hook):
        name = "train_function" if hook == "on_train_begin" else "test_function"
        inner = getattr(model, name)

        def counting(*a, **k):
            calls[name] += 1
            return inner(*a, **k)

        setattr(model, name, counting)
        steps.wrap(name)  # around the counter: what the fit calls from now on goes through both

    hook = Hook(begin, when=("on_train_begin", "on_test_begin"))
    model.fit(x, y, batch_size=16, epochs=2, validation_split=0.25, verbose=0, callbacks=[hook])
    assert calls == {"train_function": 6, "test_function": 2}, (
        f"fit no longer calls the step functions set in on_train_begin/on_test_begin at each batch: {calls}"
    )
    assert model.train_function.__name__ == model.test_function.__name__ == "step_function"
    steps.unwrap()
    assert model.train_function.__name__ == "counting"

    seen = []
    failing = mlp()
    failing_steps = wa.StepFunctions(failing, on_exception=seen.append)
    error = RuntimeError("boom")

    def raising(*a, **k):
        raise error

    def arm(cb, hook):
        failing.train_function = raising
        failing_steps.wrap("train_function")

    with pytest.raises(RuntimeError, match="boom"):
        failing.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[Hook(arm)])
    assert seen == [error]

    def broken(exc):
        raise ValueError("tmon failed while handling it")

    failing_steps = wa.StepFunctions(failing, on_exception=broken)  # the user's exception still comes out
    with pytest.raises(RuntimeError, match="boom"):
        failing.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[Hook(arm)])


def test_evaluate_takes_callbacks_seventh_and_a_fit_validates_through_it_with_a_callback_list():
    names = list(inspect.signature(keras.Model.evaluate).parameters)
    assert names[1 + wa.EVALUATE_CALLBACKS_ARG] == "callbacks", f"Model.evaluate's arguments changed: {names}"
    x, y = data()
    model = mlp()
    passed = []
    original = model.evaluate

    def spy(*args, **kwargs):
        passed.append(kwargs.get("callbacks"))
        return original(*args, **kwargs)

    model.evaluate = spy
    model.fit(x, y, batch_size=16, epochs=1, validation_split=0.25, verbose=0)
    assert passed and isinstance(passed[0], keras.callbacks.CallbackList), (
        "fit's validation no longer calls self.evaluate(callbacks=<CallbackList>)"
    )


@pytest.mark.parametrize("positional", [False, True])
def test_watch_evaluate_adds_the_callback_while_it_belongs_then_removes_itself(positional):
    x, y = data()
    model = mlp()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    hook = Hook(lambda cb, name: name, when=("on_test_begin",))
    belongs = [True]
    wa.watch_evaluate(model, hook, lambda: belongs[0])
    if positional:
        model.evaluate(x, y, 16, 0, None, None, None)
    else:
        model.evaluate(x, y, verbose=0)
    assert hook.seen == {"on_test_begin": "on_test_begin"}
    belongs[0], hook.seen = False, {}
    model.evaluate(x, y, verbose=0)
    assert hook.seen == {} and "evaluate" not in vars(model)
