"""Reading a checkpoint back into a training run (a rollback): the whole state dict in memory, as
the adapters load it into the model and optimizer.

================================  ==============================================================
reader                            reads
================================  ==============================================================
``read_torch_checkpoint(path)``   one ``torch.save`` file (Lightning ``.ckpt``, ``.pt``, ``.bin``)
``read_torch_weights(path)``      that, or a ``.safetensors`` file
``read_loop_checkpoint(path)``    what a plain loop saves: a state dict, a dict holding one (and
                                  optimizer states), or an ``accelerator.save_state`` directory
``read_hf_checkpoint(path)``      a Hugging Face checkpoint directory (sharded too) or one weights
                                  file, its ``optimizer.pt`` and ``trainer_state.json``'s step
================================  ==============================================================

Only ``torch.load(weights_only=True)`` and safetensors: nothing is unpickled, so nothing in the
file runs. torch is imported inside the readers (``tmon_core`` imports no framework). Whatever a
reader cannot take raises a ``CheckpointError`` whose message is the whole reason a rollback
records (it names the file itself); ``tmon_callbacks._torch`` turns it into the decision's
rejection. ``diff`` reads checkpoints a tensor slice at a time instead: ``open_checkpoint``.
"""

from __future__ import annotations

import json
import os

from .errors import CheckpointError

#: the weights files of an HF / accelerate checkpoint directory (transformers.utils SAFE_WEIGHTS_NAME,
#: WEIGHTS_NAME; accelerate's names are the same)
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
#: where a plain loop's checkpoint dict keeps the model's state dict, and the optimizer's
MODEL_KEYS = ("model_state_dict", "model", "state_dict")
OPTIMIZER_KEYS = ("optimizer_state_dict", "optimizer")


def refused(path: str, message: str) -> CheckpointError:
    """A ``CheckpointError`` for ``path`` whose text is ``message`` alone (it names the file itself)."""
    exc = CheckpointError(None, message)
    exc.path = path
    return exc


def read_torch_checkpoint(path: str) -> dict:
    """Read a checkpoint with ``weights_only=True``: tensors and plain containers, never arbitrary objects."""
    if not os.path.exists(path):
        raise refused(path, f"checkpoint file {path} does not exist")
    if os.path.isdir(path):
        raise refused(path, f"checkpoint {path} is a directory, not a torch checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise refused(path, f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    # torch.save writes a zip archive (or, before torch 1.6, a pickle): anything else makes
    # torch.load fail with whatever its parser trips on (IndexError for a text file)
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        raise refused(
            path,
            f"cannot read checkpoint {path}: not a torch checkpoint (torch.save writes a zip "
            f"archive; this file starts with {head!r})",
        )
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise refused(
            path, f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    if not isinstance(obj, dict):
        raise refused(path, f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    return obj


def _read_safetensors(path: str) -> dict:
    try:
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    except Exception as exc:
        raise refused(
            path, f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None


def read_torch_weights(path: str) -> dict:
    """The tensors of a ``.safetensors`` file, or what ``read_torch_checkpoint`` reads of any other."""
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    return read_torch_checkpoint(path)


def read_loop_checkpoint(path: str) -> tuple[dict, list | None]:
    """Model state and optimizer states (None when the checkpoint has none) of the formats a plain
    loop saves; nothing is unpickled."""
    if os.path.isdir(path):
        model_file = next(
            (os.path.join(path, n) for n in WEIGHTS_FILES if os.path.isfile(os.path.join(path, n))), None
        )
        if model_file is None:
            raise refused(path, f"checkpoint directory {path} holds no {' or '.join(WEIGHTS_FILES)}")
        state = read_torch_weights(model_file)
        opt_file = os.path.join(path, "optimizer.bin")
        return state, [read_torch_checkpoint(opt_file)] if os.path.isfile(opt_file) else None
    if not os.path.exists(path):
        raise refused(path, f"checkpoint file {path} does not exist")
    obj = read_torch_weights(path)
    import torch

    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None  # torch.save(model.state_dict(), path)
    key = next((k for k in MODEL_KEYS if isinstance(obj.get(k), dict)), None)
    if key is None:
        raise refused(
            path,
            f"checkpoint {path} holds no model state: neither a state dict nor a dict with one of "
            f"{', '.join(MODEL_KEYS)}",
        )
    opt = next((obj[k] for k in OPTIMIZER_KEYS if obj.get(k) is not None), None)
    if opt is None and isinstance(obj.get("optimizer_states"), list):  # Lightning's layout
        opt = obj["optimizer_states"]
    return obj[key], (opt if isinstance(opt, list) else [opt]) if opt is not None else None


def read_hf_checkpoint(path: str) -> tuple[dict, dict | None, int | None]:
    """Model state, optimizer state (None when the directory has none) and step of an HF checkpoint
    directory, or of a single weights file. safetensors and ``torch.load(weights_only=True)`` only:
    nothing is unpickled."""
    if os.path.isfile(path):
        files, folder = [path], None
    elif os.path.isdir(path):
        folder = path
        files = [os.path.join(path, n) for n in WEIGHTS_FILES if os.path.isfile(os.path.join(path, n))][:1]
        for index in (f"{n}.index.json" for n in WEIGHTS_FILES):  # sharded: the index names the shard files
            if not files and os.path.isfile(os.path.join(path, index)):
                try:
                    with open(os.path.join(path, index)) as f:
                        shards = sorted(set(json.load(f)["weight_map"].values()))
                except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise refused(
                        path, f"cannot read {index} in {path}: {type(exc).__name__}: {exc}"
                    ) from None
                files = [os.path.join(path, os.path.basename(str(s))) for s in shards]
        if not files:
            raise refused(
                path,
                f"checkpoint {path} holds no model weights ({', '.join(WEIGHTS_FILES)} or their .index.json)",
            )
    else:
        raise refused(path, f"checkpoint {path} does not exist")
    state: dict = {}
    for file in files:
        if file.endswith(".safetensors"):
            if not os.path.isfile(file):
                raise refused(file, f"checkpoint file {file} does not exist")
            state.update(_read_safetensors(file))
        else:
            state.update(read_torch_checkpoint(file))
    optimizer_state = step = None
    if folder is not None:
        if os.path.exists(os.path.join(folder, "optimizer.pt")):
            optimizer_state = read_torch_checkpoint(os.path.join(folder, "optimizer.pt"))
        try:
            with open(os.path.join(folder, "trainer_state.json")) as f:
                step = json.load(f).get("global_step")
        except (OSError, ValueError, AttributeError):
            pass
    return state, optimizer_state, step if isinstance(step, int) else None
