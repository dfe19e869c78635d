"""Checkpoints: one safetensors file holding weights, optimizer state and RNG states, with everything else
(spec, vocab, normalization, loop position, callback states: the RunRecord) as JSON in its header.

Tensors by prefix: `model.` the weights that evaluation, predict and export use; `raw.` the weights training
continues from, only where they are not the `model.` ones (EMA with validate: ema puts the averaged weights
under `model.`); `optim.` the optimizer's; `rng.` the generators'; `cb.<callback>.` what a callback keeps
(`Callback.tensors()`, e.g. the EMA's averaged weights), handed back by `Callback.load_tensors()` on resume.

Loading never unpickles anything. Writing goes to a temporary file that is fsynced and then renamed over
the old checkpoint, so a kill at any moment leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from imgcls.errors import TrainingError
from imgcls.train.record import OptimizerRecord, RunRecord

_META_KEY = "imgcls"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel and torch.compile wrappers."""
    inner = getattr(model, "module", model)
    plain: nn.Module = getattr(inner, "_orig_mod", inner)
    return plain


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], OptimizerRecord]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, OptimizerRecord(param_groups=state["param_groups"], scalars=scalars)


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        for index, value in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = value
    return tensors


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(
    path: Path,
    model: nn.Module,
    record: RunRecord,
    optimizer: torch.optim.Optimizer | None = None,
    with_rng: bool = True,
    *,
    raw: nn.Module | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Atomically write `path` (weights, optimizer, RNG states as tensors; the record as JSON). `raw`: the
    training model when `model` is another one (stored as `raw.`); `extra`: callback tensors, stored under
    `cb.` with their keys (`<callback>.<name>`)."""
    tensors = {f"model.{k}": v for k, v in unwrap(model).state_dict().items()}
    if raw is not None:
        tensors.update({f"raw.{k}": v for k, v in unwrap(raw).state_dict().items()})
    tensors.update({f"cb.{k}": v for k, v in (extra or {}).items()})
    record = record.stamped()
    if optimizer is not None:
        optim_tensors, optim_record = _optimizer_tensors(optimizer)
        tensors.update(optim_tensors)
        record = record.model_copy(update={"optimizer": optim_record})
    if with_rng:
        tensors.update(_rng_tensors())
    # safetensors refuses shared or strided storage: give every tensor its own contiguous CPU copy.
    owned = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    save_file(owned, str(scratch), metadata={_META_KEY: record.to_json()})
    with open(scratch, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(scratch, path)
    _fsync_dir(path.parent)
    return path


@dataclass
class Checkpoint:
    path: Path
    record: RunRecord
    model_state: dict[str, torch.Tensor]
    optimizer_tensors: dict[str, torch.Tensor]
    rng: dict[str, torch.Tensor]
    raw_state: dict[str, torch.Tensor] = field(default_factory=dict)
    callback_tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def training_state(self) -> dict[str, torch.Tensor]:
        """The weights training resumes from: `raw.` where the checkpoint has them, else the model's."""
        return self.raw_state or self.model_state

    def optimizer_state(self) -> dict[str, Any] | None:
        """The optimizer's state_dict as torch expects it, or None if none was saved."""
        saved = self.record.optimizer
        if saved is None:
            return None
        state: dict[int, dict[str, Any]] = {}
        for key, value in self.optimizer_tensors.items():
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = value
        for param_id, values in saved.scalars.items():
            state.setdefault(int(param_id), {}).update(values)
        return {"state": state, "param_groups": saved.param_groups}

    def restore_rng(self) -> None:
        torch.set_rng_state(self.rng["rng.cpu"])
        cuda = [self.rng[k] for k in sorted(self.rng) if k.startswith("rng.cuda.")]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by write_checkpoint (safetensors only: nothing is unpickled)."""
    if not path.is_file():
        raise TrainingError(f"checkpoint not found: {path}", hint="list the run's checkpoints/ folder")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError) as err:
        raise TrainingError(f"{path} is not a readable imgcls checkpoint: {err}") from None
    if _META_KEY not in header:
        raise TrainingError(f"{path} is a safetensors file but not an imgcls checkpoint (no '{_META_KEY}' header)")
    record = RunRecord.from_json(header[_META_KEY], path)
    model_state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    optimizer = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    rng = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    raw = {k.removeprefix("raw."): v for k, v in tensors.items() if k.startswith("raw.")}
    extra = {k.removeprefix("cb."): v for k, v in tensors.items() if k.startswith("cb.")}
    return Checkpoint(path, record, model_state, optimizer, rng, raw, extra)
