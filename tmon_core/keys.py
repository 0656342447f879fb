"""Metric keys tmon records by itself, and the rules every key obeys.

Keys the adapters write (the same in Lightning, HF and Keras), with units:

=================  =====================================================================
``loss``           the training loss of the step (what ``training_step`` returned)
``lr``             learning rate of param group 0 of optimizer 0; ``lr/pg1``... for other
                   groups, ``lr/opt1/pg0``... for other optimizers
``momentum``       SGD momentum, or beta1 of Adam-family optimizers (same naming as ``lr``)
``weight_decay``   weight decay of each param group (same naming as ``lr``)
``step_time``      seconds from batch start to batch end (forward, backward, optimizer)
``data_time``      seconds between the end of one batch and the start of the next
                   (mostly waiting for the dataloader)
``grad_norm``      total L2 norm of the gradients before the optimizer step (opt-in)
``epoch``          the epoch the step belongs to
=================  =====================================================================

Everything the user logs keeps the user's own name (``train_loss``, ``val_acc``...).
"""

from __future__ import annotations

LOSS = "loss"
LR = "lr"
MOMENTUM = "momentum"
WEIGHT_DECAY = "weight_decay"
STEP_TIME = "step_time"
DATA_TIME = "data_time"
GRAD_NORM = "grad_norm"
EPOCH = "epoch"

MAX_KEY_LENGTH = 250


def group_key(base: str, optimizer: int, group: int) -> str:
    """``lr``, ``lr/pg1``, ``lr/opt1/pg0``: the key of a per-param-group value."""
    if optimizer == 0:
        return base if group == 0 else f"{base}/pg{group}"
    return f"{base}/opt{optimizer}/pg{group}"


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid metric key, else raise ``ValueError`` saying why.

    A key is a non-empty string of at most 250 characters with no control characters
    (newlines, tabs, NUL...): they break CSV exports, terminals and SQL consoles; and no lone
    surrogates (``os.fsdecode`` of a name that is not UTF-8): no database can store them.
    Keys are never silently rewritten, so what a user queries is what they logged.
    """
    if not isinstance(key, str):
        raise ValueError(f"metric key must be a string, received {type(key).__name__}: {key!r}")
    if not key.strip():
        raise ValueError(f"metric key must be a non-empty string, received {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"metric key must be at most {MAX_KEY_LENGTH} characters, received {len(key)}: {key[:40]!r}..."
        )
    for ch in key:
        if ord(ch) < 32 or 127 <= ord(ch) < 160:
            raise ValueError(f"metric key must not contain control characters, received {key!r}")
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise ValueError(
                f"metric key must be valid Unicode text, received {key!r} holding the lone surrogate "
                f"{ch!r} (a name decoded from bytes that are not UTF-8?)"
            )
    return key
