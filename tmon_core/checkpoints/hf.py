"""Checkpoint directories: what ``save_pretrained`` writes and the ``checkpoint-N`` directories of a
Hugging Face ``Trainer``.

Weights: ``model.safetensors``, sharded ``*.safetensors`` with ``model.safetensors.index.json``,
``pytorch_model.bin`` (and its shards) through ``torch.load(weights_only=True)``. Around them:
``config.json`` (model configuration), ``trainer_state.json`` (step, epoch, the logged metrics in
``log_history``), ``optimizer.pt`` / ``scheduler.pt`` (param-group hyperparameters, scheduler
counters; read with weights_only, skipped with a note when refused). ``training_args.bin`` is a
full pickle of ``TrainingArguments``: never loaded.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Callable

from . import guard
from .base import Checkpoint, flatten, optimizer_params, scheduler_params
from .errors import CheckpointError
from .safetensors import SafetensorsCheckpoint
from .torch import open_torch, safe_load

SINGLE_FILE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".keras", ".h5")
#: log_history entries that are counters, not metrics
NOT_METRICS = frozenset({"step", "epoch", "total_flos"})


def open_directory(path: str, open_file: Callable[[str], Checkpoint]) -> Checkpoint:
    """The checkpoint directory ``path``; ``open_file`` opens it when it holds a single checkpoint
    file (``open_checkpoint``, passed in: the opener imports this module, not the other way round)."""
    ck = _weights(path, open_file)
    try:
        ck.path = path
        ck.format = "hf" if ck.format in ("safetensors", "torch") else ck.format
        _config(path, ck)
        _trainer_state(path, ck)
        _optimizer(path, ck)
        if os.path.exists(os.path.join(path, "training_args.bin")):
            ck.notes.append(
                "training_args.bin not read: it is a full pickle of TrainingArguments, "
                "which tmon never unpickles"
            )
    except BaseException:
        ck.close()
        raise
    return ck


def _weights(path: str, open_file: Callable[[str], Checkpoint]) -> Checkpoint:
    join = os.path.join
    st_index = join(path, "model.safetensors.index.json")
    if os.path.exists(st_index):
        return SafetensorsCheckpoint(_shards(st_index), path)
    if os.path.exists(join(path, "model.safetensors")):
        return SafetensorsCheckpoint([join(path, "model.safetensors")], path)
    bin_index = join(path, "pytorch_model.bin.index.json")
    if os.path.exists(bin_index) or os.path.exists(join(path, "pytorch_model.bin")):
        files = _shards(bin_index) if os.path.exists(bin_index) else [join(path, "pytorch_model.bin")]
        ck = open_torch(files[0])
        try:
            for f in files[1:]:
                ck.add(open_torch(f))
        except BaseException:
            ck.close()
            raise
        return ck
    tensors = sorted(glob.glob(join(glob.escape(path), "*.safetensors")))
    if tensors:  # e.g. adapter_model.safetensors, or shards without their index
        return SafetensorsCheckpoint(tensors, path)
    singles = sorted(
        f
        for f in os.listdir(path)
        if f.lower().endswith(SINGLE_FILE_SUFFIXES) and os.path.isfile(join(path, f))
    )
    if len(singles) == 1:
        ck = open_file(join(path, singles[0]))
        ck.notes.append(f"the directory holds one checkpoint file: {singles[0]}")
        return ck
    subdirs = sorted(
        d for d in os.listdir(path) if d.startswith("checkpoint-") and os.path.isdir(join(path, d))
    )
    if subdirs:
        raise CheckpointError(
            path,
            "a training output directory, not a checkpoint: pass one of its checkpoint "
            f"directories ({', '.join(subdirs[:5])})",
        )
    if singles:
        raise CheckpointError(
            path,
            f"the directory holds {len(singles)} checkpoint files; pass one of them "
            f"({', '.join(singles[:5])})",
        )
    raise CheckpointError(
        path,
        "no weights in this directory (looked for model.safetensors, "
        "model.safetensors.index.json, pytorch_model.bin, *.safetensors, or one checkpoint file)",
    )


def _shards(index_path: str) -> list[str]:
    index = guard.read_json(index_path, "the shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise CheckpointError(
            index_path, 'unreadable shard index: expected {"weight_map": {tensor name: shard file name}}'
        )
    files = list(dict.fromkeys(weight_map.values()))
    outside = [f for f in files if f in ("", ".", "..") or os.path.basename(f) != f or os.path.isabs(f)]
    if outside:  # shards sit beside their index; anything else is not this checkpoint's
        raise CheckpointError(
            index_path, f"the shard index names {outside[0]!r}, not a file in its directory"
        )
    base = os.path.dirname(index_path)
    paths = [os.path.join(base, f) for f in files]
    missing = [f for f, p in zip(files, paths, strict=True) if not os.path.exists(p)]
    if missing:
        raise CheckpointError(
            index_path, f"{len(missing)} shard(s) listed in the index are missing: {', '.join(missing[:5])}"
        )
    return paths


def _read_json(path: str, name: str, ck: Checkpoint):
    p = os.path.join(path, name)
    if not os.path.lexists(p):
        return None
    try:
        return guard.read_json(p, name)
    except CheckpointError as exc:
        ck.notes.append(f"{name} unreadable ({exc.reason}); its parameters are missing")
        return None


def _config(path: str, ck: Checkpoint) -> None:
    cfg = _read_json(path, "config.json", ck)
    if isinstance(cfg, dict):
        flatten("config", cfg, ck.params, budget=ck.budget)


def _trainer_state(path: str, ck: Checkpoint) -> None:
    state = _read_json(path, "trainer_state.json", ck)
    if not isinstance(state, dict):
        return
    if isinstance(state.get("global_step"), int):
        ck.step = state["global_step"]
    if isinstance(state.get("epoch"), (int, float)):
        ck.epoch = float(state["epoch"])
    for k, v in state.items():
        if k in ("log_history", "stateful_callbacks", "global_step", "epoch", "total_flos"):
            continue
        flatten(f"trainer.{k}", v, ck.params, budget=ck.budget)
    history = state.get("log_history")
    for entry in history if isinstance(history, list) else ():
        if not isinstance(entry, dict):
            continue
        step = entry.get("step") if isinstance(entry.get("step"), int) else None
        for k, v in entry.items():
            if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool):
                ck.metrics[k] = (_float(v), step)  # entries are in order: the last one wins


def _float(v: int | float) -> float:
    try:
        return float(v)
    except OverflowError:  # JSON integers have no bound; past float's range they read as infinite
        return math.inf if v > 0 else -math.inf


def _optimizer(path: str, ck: Checkpoint) -> None:
    for name, reader in (("optimizer.pt", optimizer_params), ("scheduler.pt", scheduler_params)):
        p = os.path.join(path, name)
        if not os.path.exists(p):
            continue
        try:
            state = safe_load(p)
        except CheckpointError as exc:
            ck.notes.append(f"{name} not read: {exc.reason}")
            continue
        if isinstance(state, dict):
            reader([state], ck.params, ck.budget)
        else:
            ck.notes.append(f"{name} not read: it holds a {type(state).__name__}, not a state dict")
        del state
