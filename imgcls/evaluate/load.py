"""Loading a trained run back: the model from a checkpoint, and its validation data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from imgcls.augment.loader import DeviceLoader
from imgcls.augment.pipeline import BatchAugment, Normalizer
from imgcls.data.blocks import TargetInfo
from imgcls.data.datablock import DataBundle, build_data
from imgcls.data.loaders import EpochBatchSampler, make_loader
from imgcls.errors import TrainingError
from imgcls.models.factory import check_outputs, create_model
from imgcls.spec.load import spec_from_dict
from imgcls.spec.schema import Spec
from imgcls.train.checkpoint import Checkpoint, read_checkpoint
from imgcls.train.losses import Loss, build_loss
from imgcls.train.metrics import Metric, build_metric
from imgcls.train.runtime import Runtime, resolve_runtime
from imgcls.train.setup import worker_count


@dataclass
class LoadedRun:
    run_dir: Path
    checkpoint: Checkpoint
    spec: Spec
    info: TargetInfo
    normalizer: Normalizer | None
    size: tuple[int, int] | None
    model: nn.Module
    runtime: Runtime
    loss: Loss
    metrics: list[Metric]

    @property
    def augment(self) -> BatchAugment:
        return BatchAugment(self.spec.augment, self.size, self.normalizer, self.spec.model.n_in)

    @property
    def thresh(self) -> float:
        """The multi-label decision threshold stored with the run (train.thresh, else accuracy_multi's)."""
        if self.spec.train.thresh is not None:
            return self.spec.train.thresh
        for metric in self.spec.train.metrics:
            if metric.name == "accuracy_multi":
                return float(getattr(metric, "thresh", 0.5))
        return 0.5


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """`best`, `last`, or a path to a checkpoint file."""
    if which in ("best", "last"):
        path = run_dir / "checkpoints" / f"{which}.safetensors"
        if not path.is_file() and not run_dir.is_dir():
            raise TrainingError(
                f"run folder not found: {run_dir}", hint="give the folder `imgcls train` printed, e.g. runs/demo"
            )
        return path
    return Path(which)


def model_from_checkpoint(checkpoint: Checkpoint, spec: Spec, info: TargetInfo) -> nn.Module:
    """The trained model; pretrained hub or file weights are not needed, the checkpoint has every weight."""
    model_spec = spec.model.model_copy(update={"pretrained": False, "weights": None, "sync_bn": False})
    model = create_model(model_spec, info.n_out)
    check_outputs(model, info.n_out, str(checkpoint.path))
    model.load_state_dict(checkpoint.model_state)
    return model.eval()


def load_run(run_dir: Path, which: str = "best", device: str | None = None) -> LoadedRun:
    checkpoint = read_checkpoint(checkpoint_path(run_dir, which))
    meta = checkpoint.meta
    spec = spec_from_dict(meta["spec"], origin=str(checkpoint.path))
    if device is not None:
        spec = spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"device": device})})
    info = TargetInfo.from_dict(meta["target"])
    stats = meta.get("normalizer")
    normalizer = Normalizer(tuple(stats["mean"]), tuple(stats["std"])) if stats else None
    size = tuple(meta["size"]) if meta.get("size") else None
    runtime = resolve_runtime(spec.runtime, distributed=False)
    model = model_from_checkpoint(checkpoint, spec, info).to(runtime.device)
    loss = build_loss(spec.train.loss, info.kind)
    metrics = [build_metric(m) for m in spec.train.metrics]
    return LoadedRun(run_dir, checkpoint, spec, info, normalizer, size, model, runtime, loss, metrics)


def validation_data(loaded: LoadedRun, quiet: bool = True) -> DataBundle:
    """The run's data, checked against the vocab the model was trained with."""
    data = build_data(loaded.spec.data, quiet)
    if data.info.vocab != loaded.info.vocab or data.info.n_out != loaded.info.n_out:
        raise TrainingError(
            f"the data now has {data.info.n_out} outputs (vocab {data.info.vocab[:5]}...), "
            f"but the model was trained on {loaded.info.n_out} (vocab {loaded.info.vocab[:5]}...)",
            hint="the dataset changed since training; evaluate on the same data or train again",
        )
    return data


def valid_loader(
    loaded: LoadedRun,
    data: DataBundle,
    train_tfms: bool = False,
    seed_offset: int = 0,
    item_train: bool | None = None,
) -> DeviceLoader:
    """Validation items in order; `train_tfms` applies the training item and batch transforms (TTA), or only the
    training batch transforms with `item_train=False` (TTA of point models: the item frame stays the plain one).
    TTA's transforms leave out the training-only policy and random erasing."""
    spec = loaded.spec
    item_train = train_tfms if item_train is None else item_train
    dataset = data.dataset(train=False, seed=spec.seed + seed_offset, randomized=item_train)
    sampler = EpochBatchSampler(len(dataset), spec.data.val_bs or spec.data.bs, train=False, seed=spec.seed)
    loader = make_loader(dataset, sampler, worker_count(spec, loaded.runtime), loaded.runtime.device.type == "cuda")
    return DeviceLoader(
        loader,
        sampler,
        loaded.augment.for_tta() if train_tfms else loaded.augment,
        loaded.runtime.device,
        train=train_tfms,
        seed=spec.seed + seed_offset,
        on_bad_image=spec.data.on_bad_image,
        channels_last=loaded.runtime.channels_last,
    )


__all__ = ["LoadedRun", "load_run", "valid_loader", "validation_data"]
