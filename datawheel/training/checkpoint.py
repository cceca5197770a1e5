"""Training-run state, seeding and atomic resumable checkpoints for :mod:`datawheel.training.loop`.

A checkpoint (``last.pt``) holds the model and optimizer state, the completed
epoch, the best state so far, the early-stopping counters, the history and the
torch/numpy/python RNG states, plus a fingerprint of what was trained; it is
written to a temp file in the same folder and moved into place with
``os.replace``, so a reader sees the whole old or the whole new checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import torch
from torch import Tensor, nn

from datawheel.errors import DatawheelError
from datawheel.storage.files import atomic_write, sha256_bytes
from datawheel.training.networks import Classifier

__all__ = [
    "RunState",
    "deterministic",
    "fingerprint",
    "load",
    "load_init_state",
    "restore",
    "save",
    "seed_everything",
]

_FORMAT = 1


class _Rng(TypedDict):
    torch: Tensor
    cuda: Tensor | None
    numpy: tuple[str, Tensor, int, int, float]
    python: tuple[Any, ...]


class _Checkpoint(TypedDict):
    format: int
    fingerprint: str
    device: str
    epoch: int
    best_val_loss: float
    best_epoch: int
    bad_epochs: int
    stopped_early: bool
    history: list[dict[str, float]]
    best_state: dict[str, Tensor]
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    rng: _Rng


@dataclass
class RunState:
    """Where a run stands after ``epoch`` completed epochs."""

    epoch: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, Tensor] = field(default_factory=dict)

    def record(self, model: nn.Module, entry: dict[str, float], patience: int) -> None:
        """Add one finished epoch; keep a CPU copy of the weights when val loss improved."""
        self.epoch = int(entry["epoch"])
        self.history.append(entry)
        if entry["val_loss"] < self.best_val_loss:
            self.best_val_loss = entry["val_loss"]
            self.best_epoch = self.epoch
            self.bad_epochs = 0
            self.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
        else:
            self.bad_epochs += 1
        self.stopped_early = patience > 0 and self.bad_epochs >= patience


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels for the duration of a run; the previous settings come back after.

    On CPU every op is forced deterministic. On CUDA cuDNN is pinned to deterministic
    algorithms; the full switch additionally needs ``CUBLAS_WORKSPACE_CONFIG`` set before
    cuBLAS starts, so it is only turned on (warn-only) when the environment has it.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn
    cudnn_flags = (cudnn.deterministic, cudnn.benchmark)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    else:
        cudnn.deterministic, cudnn.benchmark = True, False
        if os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
            torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        cudnn.deterministic, cudnn.benchmark = cudnn_flags


def _state_digest(state: Mapping[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:{tensor.dtype}:{tuple(state[key].shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(
    config: Mapping[str, object],
    *,
    shapes: Sequence[tuple[int, ...]],
    n_classes: int,
    image_shape: tuple[int, int, int] | None,
    freeze: bool,
    init_state: Mapping[str, Tensor] | None,
) -> str:
    """A short hash of everything that must match for a checkpoint to be resumed."""
    doc = {
        "format": _FORMAT,
        "config": dict(config),
        "shapes": [[int(d) for d in s] for s in shapes],
        "n_classes": n_classes,
        "image_shape": None if image_shape is None else [int(d) for d in image_shape],
        "freeze": freeze,
        "init_state": None if init_state is None else _state_digest(init_state),
    }
    return sha256_bytes(json.dumps(doc, sort_keys=True).encode())[:16]


def load_init_state(
    model: Classifier, init_state: Mapping[str, Tensor], log: Callable[[str], None]
) -> None:
    """Copy a base model's weights in; the backbone must match, the head only if shapes do."""
    own = model.state_dict()
    theirs = {k for k in init_state if k.startswith("backbone.")}
    ours = {k for k in own if k.startswith("backbone.")}
    bad = sorted(theirs ^ ours) + sorted(
        k for k in ours & theirs if tuple(init_state[k].shape) != tuple(own[k].shape)
    )
    if bad:
        raise DatawheelError(
            f"the base model's backbone does not match this model ({len(bad)} tensors differ, "
            f"first {bad[0]!r})",
            "fine-tune from a base model with the same model_kind, hidden size and features",
        )
    keep = dict.fromkeys(ours)
    head = [k for k in own if k.startswith("head.")]
    if all(k in init_state and init_state[k].shape == own[k].shape for k in head):
        keep.update(dict.fromkeys(head))
    else:
        log(f"base model head does not fit {model.n_classes} classes; head re-initialized")
    model.load_state_dict({k: init_state[k] for k in keep}, strict=False)


def _rng_state(device: torch.device) -> _Rng:
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)
    name, keys, pos, has_gauss, cached = np_state
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": (str(name), torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }


def _set_rng_state(state: _Rng, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])


def save(
    path: Path,
    fingerprint: str,
    run: RunState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> None:
    """Write ``path`` atomically: a temp file in the same folder, then ``os.replace``."""
    payload: _Checkpoint = {
        "format": _FORMAT,
        "fingerprint": fingerprint,
        "device": device.type,
        "epoch": run.epoch,
        "best_val_loss": run.best_val_loss,
        "best_epoch": run.best_epoch,
        "bad_epochs": run.bad_epochs,
        "stopped_early": run.stopped_early,
        "history": run.history,
        "best_state": run.best_state,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": _rng_state(device),
    }
    try:
        atomic_write(path, lambda fh: torch.save(payload, fh))
    except OSError as exc:
        raise DatawheelError(
            f"cannot write a checkpoint in {path.parent} ({exc.strerror or exc})",
            "point the checkpoint folder at a writable directory",
        ) from None


def load(path: Path, fingerprint: str, log: Callable[[str], None]) -> _Checkpoint | None:
    """The checkpoint at ``path`` if it exists and matches ``fingerprint``, else ``None``."""
    if not path.is_file():
        return None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a foreign or damaged file is skipped, not fatal
        log(f"ignoring unreadable checkpoint {path} ({type(exc).__name__}); starting fresh")
        return None
    if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
        log(f"ignoring checkpoint {path}: unknown format; starting fresh")
        return None
    if raw.get("fingerprint") != fingerprint:
        log(
            f"ignoring checkpoint {path}: fingerprint {raw.get('fingerprint')} != {fingerprint} "
            "(config or data changed); starting fresh"
        )
        return None
    return cast(_Checkpoint, raw)


def restore(
    saved: _Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> RunState:
    """Load model, optimizer and RNG states from ``saved``; the run state to continue from."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    _set_rng_state(saved["rng"], device)
    return RunState(
        epoch=saved["epoch"],
        best_val_loss=saved["best_val_loss"],
        best_epoch=saved["best_epoch"],
        bad_epochs=saved["bad_epochs"],
        stopped_early=saved["stopped_early"],
        history=list(saved["history"]),
        best_state=dict(saved["best_state"]),
    )
