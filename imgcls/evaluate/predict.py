"""Running a model over batches: raw outputs, targets and per-item losses, exactly once per item."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from imgcls.augment.loader import BatchSource
from imgcls.train.losses import Loss
from imgcls.train.metrics import Metric
from imgcls.train.runtime import Runtime


@dataclass
class Predictions:
    """Raw outputs (N, n_out), targets, item indices and per-item losses, on the CPU, in item order."""

    outputs: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    losses: torch.Tensor

    def __len__(self) -> int:
        return len(self.indices)

    def sorted(self) -> Predictions:
        order = torch.argsort(self.indices)
        return Predictions(self.outputs[order], self.targets[order], self.indices[order], self.losses[order])


def _gather(local: Predictions) -> Predictions:
    """Every rank's shard, on every rank (validation shards are disjoint, so nothing is counted twice)."""
    shards: list[Predictions | None] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, local)
    parts = [s for s in shards if s is not None and len(s) > 0]
    return Predictions(
        *(torch.cat([getattr(p, f) for p in parts]) for f in ("outputs", "targets", "indices", "losses"))
    )


def predict(model: nn.Module, batches: BatchSource, loss: Loss, runtime: Runtime) -> Predictions:
    """Evaluate `model` (in eval mode) on every batch; targets are moved like the images (points)."""
    model.eval()
    outputs, targets, indices, losses = [], [], [], []
    batches.set_epoch(0)
    with torch.inference_mode(), runtime.autocast():
        for batch in batches:
            out = model(batch.images).float()
            outputs.append(out.cpu())
            targets.append(batch.targets.cpu())
            indices.append(batch.indices.cpu())
            losses.append(loss.per_item(out, batch.targets).float().cpu())
    if outputs:
        local = Predictions(torch.cat(outputs), torch.cat(targets), torch.cat(indices), torch.cat(losses))
    else:
        local = Predictions(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.int64), torch.zeros(0))
    if runtime.distributed:
        local = _gather(local)
    return local.sorted()


def compute_metrics(predictions: Predictions, metrics: list[Metric]) -> dict[str, float]:
    """valid_loss (the mean over items) and every metric over the whole set."""
    row = {"valid_loss": float(predictions.losses.mean())}
    for metric in metrics:
        row[metric.name] = metric.fn(predictions.outputs, predictions.targets)
    return row
