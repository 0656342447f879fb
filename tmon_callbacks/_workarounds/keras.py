"""Every place tmon's Keras adapter leans on Keras internals: a private or undocumented attribute it
reads, a calling frame it looks into, a method of the model it replaces. Each says why; each is
checked against the installed Keras by ``tests/callbacks/test_workarounds_keras.py``, which fails
loudly when Keras changes what it relies on. Tested with Keras 3.15 on its torch, TensorFlow and
JAX backends (``tests/callbacks/test_keras_backends.py`` runs the JAX- and TensorFlow-specific parts).

Nothing else in ``tmon_callbacks`` touches these internals: ``keras.py`` (the hooks) and
``_keras.py`` (control, config) call the functions here.
"""

from __future__ import annotations

import functools

import keras

from .python import caller_locals

# ---------------------------------------------------------------------------- the optimizer


def learning_rate_object(opt):
    """The learning rate the optimizer was given, as it keeps it: a variable (a float lr), a
    ``LearningRateSchedule``, or a plain callable.

    Why: the public ``opt.learning_rate`` evaluates a schedule at the current iteration. tmon needs
    the schedule itself (to record its value lazily off the hot path, and to wrap it in a
    ``ScaledSchedule`` when the lr is steered) and the variable itself (kept across a rollback).
    Keras 3 stores it in ``BaseOptimizer._learning_rate``.
    """
    return getattr(opt, "_learning_rate", None)


def has_momentum_buffers(opt) -> bool:
    """Whether a built optimizer holds momentum variables.

    Why: SGD and RMSprop create them at build time only when ``momentum != 0``, so turning momentum
    on mid-fit would do nothing: tmon rejects it. Keras names them ``momentums`` (SGD) and
    ``_momentums`` (RMSprop); neither is documented.
    """
    return bool(getattr(opt, "momentums", None) or getattr(opt, "_momentums", None))


def skipped_on_load(message: str) -> bool:
    """Whether a warning Keras gave while loading weights means it skipped part of the file.

    Why: ``model.load_weights`` warns instead of raising when an optimizer's variables do not match
    the file ("Skipping variable loading for optimizer ..."); a rollback must be all or nothing, so
    tmon reads that warning as a failure.
    """
    return "skipping" in message.lower()


# ---------------------------------------------------------------------------- backends that compile the step


def compiled_step(model) -> bool:
    """Whether ``model.fit`` runs a traced train function: TensorFlow's ``tf.function`` (unless
    ``run_eagerly``), JAX's ``jit`` and torch's ``torch.compile`` (with ``jit_compile``).

    Why: a traced function reads the optimizer's Python numbers (``momentum``, ``beta_1``,
    ``epsilon``, ``weight_decay``) and its ``LearningRateSchedule`` object once, when it is traced;
    changing them later does nothing to the steps it runs (measured: a schedule replaced mid-fit on
    TensorFlow or JAX left the weights' updates on the old schedule) until the function is made
    again (``StepFunctions.rebuild``). Variables (a float learning rate, the weights) are read at
    every step. Keras resolves ``jit_compile="auto"`` at ``compile()``; ``run_eagerly`` and
    ``jit_compile`` are public attributes, which backend honours which is not documented.
    """
    if getattr(model, "run_eagerly", False):
        return False
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return True  # a tf.function whatever jit_compile says (jit_compile adds XLA)
    return bool(getattr(model, "jit_compile", False))  # jax: jax.jit; torch: torch.compile


def live_value(model, variable):
    """A function returning ``variable``'s value as the next step will read it, in the middle of a
    fit, without making Keras copy the model's state back.

    Why: JAX's fit passes the model's state through the jitted step as arrays and *purges* the
    variables (their value is None) from the second batch of each epoch until the epoch ends or a
    callback reads ``self.model`` (``Callback.model`` calls ``jax_state_sync``, which assigns every
    variable: a cost per step that grows with the model). Reading a purged variable raises
    ``TypeError: 'NoneType' object is not callable`` (issue 22). The current values are then in
    ``model._jax_state["optimizer_variables"]``, in the order of ``model.optimizer.variables``
    (``JAXTrainer.fit`` sets it after each step; both names are private). Other backends: the
    variable itself.
    """
    if keras.backend.backend() != "jax":
        return lambda: variable.value
    outer = getattr(model, "optimizer", None)
    index = next((i for i, v in enumerate(getattr(outer, "variables", ())) if v is variable), None)
    if index is None:  # not one of the model's optimizer variables: nothing purges it
        return lambda: variable.value

    def read():
        if variable._value is None:  # purged: the step's output holds it
            return model._jax_state["optimizer_variables"][index]
        return variable.value

    return read


def guard_apply(optimizer, skip_update):
    """Route ``optimizer.apply(grads, variables)`` through ``skip_update(grads)`` for one fit: when it
    returns True the update is not applied. Returns a function that takes the wrapper off.

    Why: a guard's ``skip`` must withhold a non-finite step's update, and Keras gives callbacks no
    moment between the gradients and the update. Keras' torch ``train_step`` calls
    ``self.optimizer.apply(gradients, trainable_weights)`` eagerly at every step, so an instance
    attribute on the optimizer is what it calls (TensorFlow's and JAX's steps are compiled, and JAX's
    calls ``stateless_apply``: ``_guard_keras.skip_refusal`` refuses ``skip`` there).
    """
    original = optimizer.apply

    def apply(grads, trainable_variables=None):
        if skip_update(grads):
            return None
        return original(grads, trainable_variables)

    optimizer.apply = apply

    def remove():
        if vars(optimizer).get("apply") is apply:
            del optimizer.apply

    return remove


# ---------------------------------------------------------------------------- the fit Keras is running
# Keras hands a callback its model and ``params`` (epochs, steps), not the CallbackList driving it nor
# fit's arguments. Both are ``self`` and locals of calling frames during ``on_train_begin``.


def fit_callbacks(callback) -> list:
    """The callbacks of the fit whose ``on_train_begin`` is calling ``callback`` now (Keras' own
    History and ProgbarLogger included); [] when none is found.

    Why: tmon lists the fit's callbacks in the run's config, records ModelCheckpoint's files and
    reads EarlyStopping at the end; the ``CallbackList`` is ``self`` in a calling frame.
    """
    found = caller_locals(
        lambda obj: (
            isinstance(obj, keras.callbacks.CallbackList) and any(c is callback for c in obj.callbacks)
        )
    )
    return found["self"].callbacks if found else []


def fit_arguments(model) -> tuple[int | None, object]:
    """``(batch_size, initial_epoch)`` of the ``model.fit`` whose ``on_train_begin`` is running.

    Why: neither is in the callback's ``params``; both are arguments (locals) of ``fit``. When the
    input batches itself (a dataset, a ``PyDataset``) fit's ``batch_size`` is None and the batch size
    is the one fit's ``epoch_iterator.data_adapter`` found. ``initial_epoch`` is returned as fit got it.
    """
    found = caller_locals(lambda obj: obj is model) or {}
    batch_size = found.get("batch_size")
    if not isinstance(batch_size, int):
        adapter = getattr(found.get("epoch_iterator"), "data_adapter", None)
        batch_size = getattr(adapter, "batch_size", None)
    return (batch_size if isinstance(batch_size, int) else None), found.get("initial_epoch") or 0


def resolved_mode(cb) -> str:
    """ "min" or "max" as a monitoring callback (EarlyStopping, ModelCheckpoint...) compares.

    Why: ``mode="auto"`` is resolved by Keras at the callback's first epoch into the undocumented
    ``monitor_op`` (``keras.ops.less`` or ``keras.ops.greater``); ``mode`` itself stays "auto".
    """
    op = getattr(cb, "monitor_op", None)
    return "min" if op is keras.ops.less else "max" if op is keras.ops.greater else cb.mode


# ---------------------------------------------------------------------------- monkeypatches of the model


class StepFunctions:
    """Routes a model's step functions (``train_function``, ``test_function``) through wrappers that
    see the exceptions a step raises, for one fit.

    Why: Keras' ``Callback`` has no exception hook: an exception raised by a step reaches no
    callback, and the run would stay "running". Keras builds these attributes in
    ``make_train_function`` / ``make_test_function`` (before ``on_train_begin`` / ``on_test_begin``)
    and calls ``self.train_function(data)`` at each batch, so an instance attribute set in the begin
    hook is what the fit calls. The wrapper is named ``step_function``; it calls
    ``on_exception(exc)`` and re-raises ``exc`` unchanged, whatever ``on_exception`` does.
    """

    def __init__(self, model, on_exception):
        self.model = model
        self.on_exception = on_exception
        self._wrapped: dict[str, tuple] = {}

    def wrap(self, name: str) -> None:
        model = self.model
        fn = getattr(model, name, None)
        if fn is None or name in self._wrapped:
            return
        on_exception = self.on_exception

        def step_function(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                try:
                    on_exception(exc)
                except Exception:  # never mask the user's exception with one of ours
                    pass
                raise

        setattr(model, name, step_function)
        self._wrapped[name] = (fn, step_function)

    def rebuild(self, name: str = "train_function") -> None:
        """Make the step function again (``make_train_function(force=True)``) and wrap the new one,
        so the next step is traced anew with the optimizer's current hyperparameters.

        Why: see ``compiled_step``. Keras' fit loops (torch, TensorFlow, JAX) read
        ``self.train_function`` at every batch, so a function made in ``on_train_batch_begin``
        runs that batch. The first call traces (and compiles) it, as the fit's first step did
        (measured on a small MLP, 2-core CPU under load: 1.1 s on TensorFlow, 3.5 s on JAX).
        """
        model = self.model
        make = getattr(model, "make_" + name)
        if name in self._wrapped:  # Keras' own function back first: make_* must not see our wrapper
            fn, wrapper = self._wrapped.pop(name)
            if getattr(model, name, None) is wrapper:
                setattr(model, name, fn)
        make(force=True)
        self.wrap(name)

    def unwrap(self) -> None:
        model = self.model
        for name, (fn, wrapper) in self._wrapped.items():
            if getattr(model, name, None) is wrapper:  # unless Keras rebuilt it meanwhile
                setattr(model, name, fn)
        self._wrapped = {}


EVALUATE_CALLBACKS_ARG = (
    6  # index of ``callbacks`` among ``Model.evaluate``'s positional arguments (self excluded)
)
_MARK = "_tmon_run_evaluation"


def watch_evaluate(model, callback, belongs) -> None:
    """Route ``model.evaluate`` through ``callback`` while ``belongs()`` is true.

    Why: ``model.evaluate(x, y)`` is called without callbacks (as in keras-io's examples), and its
    result belongs to the run that trained the model. The model gets an instance attribute wrapping
    its own ``evaluate`` that adds ``callback`` to the evaluation's callbacks (so its
    ``on_test_begin/end`` see it); once ``belongs()`` is false (another fit trained the model) the
    wrapper removes itself. A fit's own validation passes a ``CallbackList``: left alone.
    """
    unwatch_evaluate(model)
    original = model.evaluate

    @functools.wraps(original)
    def evaluate(*args, **kwargs):
        n = EVALUATE_CALLBACKS_ARG
        callbacks = args[n] if len(args) > n else kwargs.get("callbacks")
        if isinstance(callbacks, keras.callbacks.CallbackList):  # the validation of a fit without tmon
            return original(*args, **kwargs)
        if not belongs():  # trained again since: its evaluations are not this run's
            unwatch_evaluate(model)
            return original(*args, **kwargs)
        listed = (
            list(callbacks)
            if isinstance(callbacks, (list, tuple))
            else []
            if callbacks is None
            else [callbacks]
        )
        if not any(c is callback for c in listed):
            listed.append(callback)
            if len(args) > n:
                args = (*args[:n], listed, *args[n + 1 :])
            else:
                kwargs["callbacks"] = listed
        return original(*args, **kwargs)

    setattr(evaluate, _MARK, True)
    model.evaluate = evaluate


def unwatch_evaluate(model) -> None:
    """Remove the wrapper ``watch_evaluate`` put on ``model`` (if any): ``model.evaluate`` is Keras' again."""
    if getattr(vars(model).get("evaluate"), _MARK, False):
        delattr(model, "evaluate")
