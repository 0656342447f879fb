"""Which chart and which group a metric key belongs to, and which keys a chart shows first.

Pure functions of the key's name (no widgets): ``train_loss_step``, ``val_loss`` and ``loss`` share
the ``loss`` chart; ``lr`` and ``lr/pg1`` the ``lr`` chart.
"""

from __future__ import annotations

OPTIMIZER_KEYS = ("lr", "momentum", "weight_decay", "betas", "eps")
SYSTEM_KEYS = ("step_time", "data_time", "epoch", "grad_norm")
GROUP_ORDER = ("train", "val", "optimizer", "system")
_PREFIXES = (
    "train_",
    "train/",
    "training_",
    "val_",
    "val/",
    "valid_",
    "validation_",
    "eval_",
    "eval/",
    "test_",
    "test/",
)
_SUFFIXES = ("_step", "_epoch")


def family(key: str) -> str:
    """The chart a key goes on: ``train_loss_step``, ``val_loss``, ``loss`` -> ``loss``; ``lr/pg1`` -> ``lr``."""
    base = key.split("/")[0]
    if base in OPTIMIZER_KEYS:
        return base
    k = key
    for p in _PREFIXES:
        if k.startswith(p) and len(k) > len(p):
            k = k[len(p) :]
            break
    for s in _SUFFIXES:
        if k.endswith(s) and len(k) > len(s):
            k = k[: -len(s)]
            break
    return k


def group(key: str) -> str:
    """``train``, ``val``, ``optimizer`` or ``system``."""
    if key.split("/")[0] in OPTIMIZER_KEYS:
        return "optimizer"
    if key in SYSTEM_KEYS:
        return "system"
    low = key.lower()
    if low.startswith(("val", "eval", "valid", "test")) or "_val" in low or "/val" in low:
        return "val"
    return "train"


def by_group(key: str) -> tuple[int, str]:
    """A sort key: train, val, optimizer, system keys in that order, by name within each."""
    return GROUP_ORDER.index(group(key)), key


def default_keys(keys: list[str], limit: int = 4) -> list[str]:
    """What a chart shows first: the loss family, the validation metrics, the learning rate."""
    fams: list[str] = []
    for k in sorted(keys, key=lambda k: (family(k) != "loss", group(k) != "val", k)):
        g, fam = group(k), family(k)
        if (fam == "loss" or g == "val") and fam not in fams:
            fams.append(fam)
    if "lr" in keys:
        fams = fams[: limit - 1] + ["lr"]
    fams = fams[:limit]
    out = [k for k in keys if family(k) in fams and (group(k) != "optimizer" or k == "lr")]
    return sorted(out, key=lambda k: (fams.index(family(k)), GROUP_ORDER.index(group(k)), k))
