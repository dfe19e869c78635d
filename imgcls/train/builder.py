"""The one builder: a spec (and, for a trained run, its record) -> every piece a command needs.

Training, lr-find, summary and show-batch build from a spec; tta-eval, interpret, predict and export from a run's
record, which fixes what the spec alone cannot: the vocab, the normalization that was measured, the size of the
checkpoint's stage. Each rule lives here once: the stage's size and batch size, the normalizer, the loss and
metrics, the decision threshold, the batch transform and the model on its device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import timm
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from imgcls.augment.loader import BatchSource
from imgcls.augment.pipeline import IMAGENET, BatchAugment, Normalizer
from imgcls.data.datablock import DataBundle, build_data
from imgcls.errors import DataError, SpecError
from imgcls.models.factory import ARCHITECTURES, check_outputs, create_model
from imgcls.spec.data import AugmentSpec, NormStats
from imgcls.spec.schema import Spec
from imgcls.spec.train import ModelSpec
from imgcls.targets import Target
from imgcls.targets.base import Threshold
from imgcls.train.losses import Loss, build_loss
from imgcls.train.metrics import Metric, build_metric, pixel_metric
from imgcls.train.record import NormalizerRecord, RunRecord
from imgcls.train.runtime import Runtime
from imgcls.train.source import DataSource, Split

# Epoch key of the batches `normalize: measure` reads: far from any training epoch's key.
_MEASURE_KEY = 999_999_999
DEFAULT_THRESH = 0.5


@dataclass(frozen=True)
class StageLoaders:
    train: BatchSource
    valid: BatchSource
    size: tuple[int, int] | None
    bs: int


@dataclass(frozen=True)
class NormalizerPlan:
    """What `data.normalize` asks for before any batch is read: fixed statistics, none, or a measurement."""

    stats: Normalizer | None
    measure: bool
    description: str


# --- rules that need no data ----------------------------------------------------------------------------------


def stage_size(spec: Spec, stage: int) -> tuple[int, int] | None:
    """The size batches reach the model at in `stage`: the stage's own, else augment.size, else the item size."""
    return spec.train.stages[stage].size or spec.final_size


def stage_bs(spec: Spec, stage: int) -> int:
    """Training batch size of `stage`: the stage's own, else data.bs."""
    return spec.train.stages[stage].bs or spec.data.bs


def valid_bs(spec: Spec, stage: int) -> int:
    """Validation batch size: data.val_bs, else the stage's training batch size."""
    return spec.data.val_bs or stage_bs(spec, stage)


def decision_threshold(spec: Spec) -> float:
    """The multi-label decision threshold: train.thresh, else accuracy_multi's thresh, else 0.5."""
    if spec.train.thresh is not None:
        return spec.train.thresh
    for metric in spec.train.metrics:
        if metric.name == "accuracy_multi":
            return float(getattr(metric, "thresh", DEFAULT_THRESH))
    return DEFAULT_THRESH


def pretrained_stats(model: ModelSpec) -> Normalizer:
    """The statistics the pretrained weights were trained with (timm's pretrained_cfg), ImageNet's otherwise."""
    if model.arch in ARCHITECTURES or not timm.is_model(model.arch):
        return IMAGENET
    config = timm.models.get_pretrained_cfg(model.arch)
    if config is None or config.mean is None or config.std is None:
        return IMAGENET
    return Normalizer(tuple(config.mean), tuple(config.std))


def _stats_text(stats: Normalizer) -> str:
    return f"mean {[round(v, 4) for v in stats.mean]}, std {[round(v, 4) for v in stats.std]}"


def normalizer_plan(spec: Spec) -> NormalizerPlan:
    """`data.normalize` resolved without reading data. auto: the pretrained weights' statistics for a pretrained
    (or weights-file) model, none for a model trained from scratch (fastai's vision_learner rule)."""
    choice = spec.data.normalize
    if isinstance(choice, NormStats):
        stats = Normalizer(tuple(choice.mean), tuple(choice.std))
        return NormalizerPlan(stats, False, f"the spec's {_stats_text(stats)}")
    if choice == "imagenet":
        return NormalizerPlan(IMAGENET, False, f"ImageNet's {_stats_text(IMAGENET)}")
    if choice == "measure":
        return NormalizerPlan(None, True, f"measured on {spec.data.normalize_batches} augmented training batches")
    pretrained = spec.model.pretrained or spec.model.weights is not None
    if choice == "auto" and pretrained:
        stats = pretrained_stats(spec.model)
        return NormalizerPlan(stats, False, f"auto: the pretrained weights' {_stats_text(stats)}")
    reason = "auto: none (a model trained from scratch)" if choice == "auto" else "none"
    return NormalizerPlan(None, False, reason)


def measure_stats(loader: BatchSource, n_batches: int) -> Normalizer:
    """Per-channel mean and std over `n_batches` augmented training batches (fastai measures one batch)."""
    total = total_sq = None
    count = 0
    loader.set_epoch(_MEASURE_KEY)
    for number, batch in enumerate(loader):
        if number == n_batches:
            break
        x = batch.images.double()
        sums, sq = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
        total = sums if total is None else total + sums
        total_sq = sq if total_sq is None else total_sq + sq
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if total is None or total_sq is None:
        raise DataError("normalize: measure found no training batch to measure")
    mean = total / count
    std = torch.sqrt((total_sq / count - mean * mean).clamp(min=0)) + 1e-7
    return Normalizer(tuple(mean.tolist()), tuple(std.tolist()))


def normalizer_record(normalizer: Normalizer | None) -> NormalizerRecord | None:
    if normalizer is None:
        return None
    return NormalizerRecord(mean=list(normalizer.mean), std=list(normalizer.std))


def normalizer_from(record: NormalizerRecord | None) -> Normalizer | None:
    return None if record is None else Normalizer(tuple(record.mean), tuple(record.std))


def batch_augment(
    spec: AugmentSpec, size: tuple[int, int] | None, normalizer: Normalizer | None, n_in: int
) -> BatchAugment:
    """The batch transform at `size`: augmentation on training batches, resize only on validation ones."""
    return BatchAugment(spec, size, normalizer, channels=n_in)


def inference_model(spec: ModelSpec, target: Target, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """A trained model rebuilt from its weights: never pretrained, never from a weights file (the state has every
    weight), so that loading a run or an export reaches neither the hub nor the user's files."""
    plain = spec.model_copy(update={"pretrained": False, "weights": None, "sync_bn": False})
    model = create_model(plain, target.n_out)
    check_outputs(model, target.n_out, where)
    model.load_state_dict(state)
    return model.eval()


def place_model(model: nn.Module, runtime: Runtime, sync_bn: bool = False) -> nn.Module:
    """Move to the device (channels_last if asked); batch norm synchronised across ranks if asked."""
    if sync_bn and runtime.distributed and runtime.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
    model = model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def wrap_model(model: nn.Module, runtime: Runtime) -> nn.Module:
    """DDP and torch.compile around the placed model, once per phase: DDP only reduces the gradients of
    parameters that require them when it is built, so a freeze or unfreeze needs a fresh wrapper."""
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids)
    if runtime.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    return model


# --- the pipeline -------------------------------------------------------------------------------------------


class Pipeline:
    """Everything built from one spec (and a run's record), each piece on first use.

    `data_factory` replaces how the items are found and labelled (evaluation of a received run reads the stored
    item list instead of running the spec's labeller); by default the spec's DataBlock is built.
    """

    def __init__(
        self,
        spec: Spec,
        runtime: Runtime,
        record: RunRecord | None = None,
        *,
        quiet: bool = True,
        data_factory: Callable[[], DataBundle] | None = None,
        writes_cache: bool = True,
        thresholds: tuple[float, ...] | None = None,
    ) -> None:
        self.spec, self.runtime, self.record, self.quiet = spec, runtime, record, quiet
        self.writes_cache = writes_cache
        self.thresholds = thresholds  # a run's saved per-label thresholds (thresholds.json), if any
        self._data_factory = data_factory or (lambda: build_data(spec.data, quiet))
        self._data: DataBundle | None = None
        self._normalizer: Normalizer | None = None
        self._normalizer_known = False

    # --- data ---------------------------------------------------------------------------------------------

    @property
    def data(self) -> DataBundle:
        """The items, split and encoded targets (built on first use)."""
        if self._data is None:
            data = self._data_factory()
            if self.record is not None:
                self._check_target(data)
            self._data = data
        return self._data

    def leave_out(self, items: set[int]) -> None:
        """Drop `items` (item indices that cannot be read) from both splits, before any batch is sampled."""
        self._data = self.data.without(items)
        if "source" in self.__dict__:
            self.source.data = self._data

    def _check_target(self, data: DataBundle) -> None:
        recorded = self.record.target.block() if self.record is not None else None
        if recorded is not None and data.target != recorded:
            raise DataError(
                f"the data now gives {data.target.describe()}, but the run was trained on {recorded.describe()}",
                hint="the dataset changed since training; evaluate on the same data or train again",
            )

    @property
    def target(self) -> Target:
        """What the model predicts: the record's (no data needed), else what encoding the labels found."""
        if self.record is not None:
            return self.record.target.block()
        return self.data.target

    @cached_property
    def source(self) -> DataSource:
        return DataSource(self.spec, self.data, self.runtime, self.writes_cache)

    # --- stages -------------------------------------------------------------------------------------------

    @property
    def n_stages(self) -> int:
        return len(self.spec.train.stages)

    def size(self, stage: int) -> tuple[int, int] | None:
        return stage_size(self.spec, stage)

    def bs(self, stage: int) -> int:
        return stage_bs(self.spec, stage)

    @property
    def eval_size(self) -> tuple[int, int] | None:
        """The size a trained run is evaluated at: its checkpoint's stage's (the last stage's without a record)."""
        if self.record is not None:
            return self.record.size
        return self.size(self.n_stages - 1)

    @property
    def eval_stage(self) -> int:
        """The stage a trained run is evaluated in: its checkpoint's (the last one without a record)."""
        if self.record is not None:
            return min(self.record.position.stage, self.n_stages - 1)
        return self.n_stages - 1

    def augment(self, size: tuple[int, int] | None) -> BatchAugment:
        """The batch transform at `size`, normalized as the run is (measuring the statistics if asked)."""
        return batch_augment(self.spec.augment, size, self.normalizer, self.spec.model.n_in)

    def stage_loaders(self, stage: int) -> StageLoaders:
        """Train and valid batches for one stage, at its own size and batch size."""
        bs, size = self.bs(stage), self.size(stage)
        n_train = len(self.data.split.train)
        if bs * self.runtime.world > n_train:
            raise DataError(
                f"the batch size {bs} x {self.runtime.world} process(es) is larger than the training set "
                f"({n_train} items)",
                hint="lower data.bs (or the stage's bs); the last partial training batch is always dropped",
            )
        augment = self.augment(size)
        train = self.source.batches("train", bs, augment)
        valid = self.source.batches("valid", valid_bs(self.spec, stage), augment)
        return StageLoaders(train, valid, size, bs)

    def batches(
        self,
        split: Split,
        *,
        stage: int | None = None,
        augment_train: bool | None = None,
        random_items: bool | None = None,
        seed_offset: int = 0,
        tta: bool = False,
    ) -> BatchSource:
        """One split's batches at a stage's size (default: the evaluation size), normalized as the run is. `tta`
        leaves out the training-only regularizers (augmentation policy, random erasing) of augmented passes."""
        size = self.size(stage) if stage is not None else self.eval_size
        augment = self.augment(size).for_tta() if tta else self.augment(size)
        bs = valid_bs(self.spec, stage if stage is not None else self.eval_stage)
        return self.source.batches(
            split, bs, augment, augment_train=augment_train, random_items=random_items, seed_offset=seed_offset
        )

    # --- normalization ------------------------------------------------------------------------------------

    @property
    def normalizer_plan(self) -> NormalizerPlan:
        if self.record is not None:
            stats = normalizer_from(self.record.normalizer)
            text = _stats_text(stats) if stats is not None else "none"
            return NormalizerPlan(stats, False, f"{text} (as the run was trained)")
        return normalizer_plan(self.spec)

    @property
    def normalizer(self) -> Normalizer | None:
        """The run's statistics (never re-measured), else what the spec asks for, measured on first use."""
        if not self._normalizer_known:
            plan = self.normalizer_plan
            stats = plan.stats
            if plan.measure:
                augment = batch_augment(self.spec.augment, self.size(0), None, self.spec.model.n_in)
                stats = measure_stats(
                    self.source.batches("train", self.bs(0), augment), self.spec.data.normalize_batches
                )
            self._normalizer, self._normalizer_known = stats, True
        return self._normalizer

    def normalizer_summary(self) -> dict[str, Any]:
        """What `data.normalize` asked for and what it resolved to (measuring if asked): normalize.json of a run
        folder, and the line training prints before its first batch."""
        choice = self.spec.data.normalize
        plan, stats = self.normalizer_plan, self.normalizer
        resolved = plan.description
        if plan.measure and stats is not None:
            resolved += f": {_stats_text(stats)}"
        return {
            "spec": choice if isinstance(choice, str) else "explicit",
            "resolved": resolved,
            "mean": None if stats is None else list(stats.mean),
            "std": None if stats is None else list(stats.std),
            "n_in": self.spec.model.n_in,
        }

    # --- model, loss, metrics -------------------------------------------------------------------------------

    @cached_property
    def loss_weights(self) -> list[float] | None:
        """The loss's weights, one per output (the target's weight_option: class_weights, or pos_weight): the
        run's, else the spec's list, else (auto) the target's rule on the training counts."""
        if self.record is not None and self.record.loss_weights is not None:
            return list(self.record.loss_weights)
        option = self.target.weight_option
        chosen = getattr(self.spec.train.loss, option) if option is not None else None
        if chosen is None:
            return None
        if chosen == "auto":
            values = self.data.targets.values[self.data.split.train]
            return [float(w) for w in self.target.loss_weights(values)]
        if len(chosen) != self.target.n_out:
            raise SpecError(
                f"train.loss.{option} has {len(chosen)} weight(s), but the model has {self.target.n_out} outputs "
                f"({', '.join(self.target.vocab)})",
                hint="give one weight per class, in that (vocab) order, or write auto",
            )
        return [float(w) for w in chosen]

    def loss_weights_report(self) -> dict[str, Any] | None:
        """What `<weight_option>.json` in the run folder holds: the option, its rule, the training counts and the
        weights by class (None when the loss has no weights)."""
        weights, option = self.loss_weights, self.target.weight_option
        if weights is None or option is None:
            return None
        chosen = getattr(self.spec.train.loss, option)
        return {
            "option": option,
            "rule": f"auto: {self.target.weight_rule}" if chosen == "auto" else "as the spec lists them",
            "train_counts": self.data.class_counts(True),
            "weights": dict(zip(self.target.vocab, weights, strict=True)),
        }

    @cached_property
    def loss(self) -> Loss:
        return build_loss(self.spec.train.loss, self.target, self.loss_weights)

    @property
    def metrics(self) -> list[Metric]:
        """The metrics at the evaluation size (tta-eval, interpret)."""
        return self.metrics_at(self.eval_size)

    def metrics_at(self, size: tuple[int, int] | None) -> list[Metric]:
        """The spec's metrics; for spatial targets also the point error in pixels of the model input at `size`
        (one rule for every stage: its own size), when batches have one size."""
        metrics = [build_metric(m) for m in self.spec.train.metrics]
        if self.target.spatial and size is not None:
            metrics.append(pixel_metric(size))
        return metrics

    @property
    def thresh(self) -> float:
        """The spec's one threshold: what the run's metrics and reports are computed at."""
        return decision_threshold(self.spec)

    @property
    def decision(self) -> Threshold:
        """What predictions are decided with: the saved per-label thresholds, else the spec's threshold."""
        return self.thresholds if self.thresholds is not None else self.thresh

    def new_model(self) -> nn.Module:
        """A fresh model (pretrained body if the spec asks), not yet on the device."""
        return create_model(self.spec.model, self.target.n_out)

    def trained_model(self, state: dict[str, torch.Tensor], where: str) -> nn.Module:
        """The model with a checkpoint's weights, on the device, in eval mode."""
        return inference_model(self.spec.model, self.target, state, where).to(self.runtime.device)


__all__ = [
    "NormalizerPlan",
    "Pipeline",
    "StageLoaders",
    "batch_augment",
    "decision_threshold",
    "inference_model",
    "measure_stats",
    "normalizer_plan",
    "place_model",
    "pretrained_stats",
    "stage_bs",
    "stage_size",
    "valid_bs",
    "wrap_model",
]
