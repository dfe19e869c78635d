"""`imgcls train`: spec -> data -> model -> stages of phases -> a run folder that explains itself."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from imgcls.augment.pipeline import BatchAugment, Normalizer
from imgcls.data.datablock import DataBundle, build_data
from imgcls.errors import DataError, TrainingInterrupted
from imgcls.models.factory import check_outputs, create_model
from imgcls.report.console import Console
from imgcls.report.env import environment
from imgcls.spec.load import dump_spec
from imgcls.spec.schema import Spec
from imgcls.train.callbacks import Callback, CallbackContext, CallbackList, build_callbacks
from imgcls.train.callbacks.logging import CSVLogger, ProgressDisplay, SaveLast
from imgcls.train.checkpoint import Checkpoint, write_checkpoint
from imgcls.train.folders import start_run
from imgcls.train.loop import FitContext, InterruptFlag, fit
from imgcls.train.losses import Loss, build_loss
from imgcls.train.metrics import Metric, build_metric
from imgcls.train.optim import build_optimizer, set_frozen
from imgcls.train.runtime import Runtime, resolve_runtime
from imgcls.train.schedule import Phase, stage_phases
from imgcls.train.setup import (
    DataSource,
    StageLoaders,
    place_model,
    resolve_normalizer,
    stage_loaders,
    wrap_model,
)
from imgcls.train.state import Position, SmoothLoss, TrainState

T = TypeVar("T")


def metric_columns(metrics: list[Metric]) -> list[str]:
    return ["stage", "phase", "epoch", "train_loss", "valid_loss", *[m.name for m in metrics], "lr", "seconds"]


def stage_size(spec: Spec, stage_index: int) -> tuple[int, int] | None:
    return spec.train.stages[stage_index].size or spec.final_size


@dataclass
class Run:
    """What stays fixed for a whole run."""

    spec: Spec
    run_dir: Path
    runtime: Runtime
    console: Console
    data: DataBundle
    model: nn.Module  # on the device, unwrapped; each phase wraps it (DDP, compile) for training
    loss: Loss
    metrics: list[Metric]
    augment: BatchAugment
    normalizer: Normalizer | None = None
    callbacks: CallbackList | None = None
    scaler: torch.amp.GradScaler | None = None
    size: tuple[int, int] | None = None

    @property
    def source(self) -> DataSource:
        """Built on first use and kept: a resident dataset is loaded once for every stage."""
        if self._source is None:
            self._source = DataSource(self.spec, self.data, self.runtime)
        return self._source

    _source: DataSource | None = None

    def meta(self, kind: str, state: TrainState) -> dict[str, Any]:
        position = asdict(state.position)
        if state.stop:  # an early stop ends the phase: a resume must not train it further
            position.update(epoch=state.phase.epochs, batch=0)
        return {
            "kind": kind,
            "spec": self.spec.model_dump(mode="json"),
            "target": self.data.info.to_dict(),
            "normalizer": None
            if self.normalizer is None
            else {"mean": self.normalizer.mean, "std": self.normalizer.std},
            "size": self.size,
            "position": position,
            "phase_name": state.phase_name,
            "smooth": state.smooth.to_dict(),
            "callbacks": self.callbacks.state_dict() if self.callbacks is not None else {},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "metrics": state.metrics,
        }

    def write(self, kind: str, state: TrainState) -> None:
        """Write checkpoints/<kind>.safetensors (rank 0 only); `last` includes the optimizer state."""
        if self.runtime.is_main:
            optimizer = state.optimizer if kind == "last" else None
            write_checkpoint(
                self.run_dir / "checkpoints" / f"{kind}.safetensors", self.model, self.meta(kind, state), optimizer
            )


def _prepare_folder(run: Run, resume: Checkpoint | None) -> None:
    """spec.yaml, env.json and split.json; on resume, metrics.csv cut back to the checkpoint's epochs."""
    if not run.runtime.is_main:
        return
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "spec.yaml").write_text(dump_spec(run.spec))
    env = environment(run.runtime.device, run.runtime.world)
    (run.run_dir / "env.json").write_text(json.dumps(env, indent=2) + "\n")
    split = {"train": len(run.data.split.train), "valid_items": run.data.valid_items(), "vocab": run.data.info.vocab}
    (run.run_dir / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    metrics_file = run.run_dir / "metrics.csv"
    if resume is not None and metrics_file.exists():
        done = int(resume.meta["position"]["epochs_done"])
        with open(metrics_file, newline="") as handle:
            rows = list(csv.reader(handle))
        with open(metrics_file, "w", newline="") as handle:
            csv.writer(handle).writerows(rows[: done + 1])


def _describe(run: Run, loaders: StageLoaders, n_stages: int) -> Any:
    def describe(state: TrainState) -> str:
        size = "x".join(map(str, loaders.size)) if loaders.size else "item size"
        lrs = ", ".join(f"{lr:.2e}" for lr in state.phase.lrs)
        frozen = ", body frozen" if state.phase.frozen else ""
        return (
            f"stage {state.position.stage + 1}/{n_stages} {state.phase_name}: {state.phase.epochs} epoch(s) "
            f"at {size} px, bs {loaders.bs}, lr {lrs}{frozen}"
        )

    return describe


def _core_callbacks(run: Run, loaders: StageLoaders) -> list[Any]:
    columns = metric_columns(run.metrics)
    main = run.runtime.is_main
    cbs: list[Any] = [SaveLast(run.write)]
    if main:
        cbs.append(CSVLogger(run.run_dir / "metrics.csv", columns))
    cbs.append(
        ProgressDisplay(
            run.console, columns, run.spec.runtime.log_every, _describe(run, loaders, len(run.spec.train.stages))
        )
    )
    return cbs


def _validate(run: Run, loaders: StageLoaders) -> Any:
    from imgcls.evaluate.predict import compute_metrics, predict

    def validate() -> dict[str, float]:
        # The plain model: each rank evaluates its own shard, and predict() gathers them.
        if run.runtime.distributed:
            # Batch-norm running statistics drift apart across ranks (each updates them from its own last
            # batch); evaluate every shard with rank 0's, the ones the checkpoint keeps.
            for buffer in run.model.buffers():
                dist.broadcast(buffer, src=0)
        return compute_metrics(predict(run.model, loaders.valid, run.loss, run.runtime), run.metrics)

    return validate


def _phase_state(run: Run, phase: Phase, position: Position, resume: Checkpoint | None) -> TrainState:
    groups = run.model.param_groups()  # type: ignore[operator]
    set_frozen(run.model, groups, phase.frozen, run.spec.train.train_bn)
    optimizer = build_optimizer(run.model, groups, run.spec.train, phase)
    model = wrap_model(run.model, run.runtime)
    state = TrainState(model, optimizer, run.loss, run.runtime, run.data.info, run.run_dir, phase, phase.name, position)
    if resume is not None:
        saved = resume.optimizer_state()
        if saved is not None:
            optimizer.load_state_dict(saved)
        state.smooth = SmoothLoss.from_dict(resume.meta["smooth"], run.runtime.device)
        if run.scaler is not None and resume.meta.get("scaler"):
            run.scaler.load_state_dict(resume.meta["scaler"])
    return state


def _stage(
    run: Run, stage_index: int, position: Position, resume: Checkpoint | None, interrupt: InterruptFlag
) -> Position:
    stage = run.spec.train.stages[stage_index]
    run.size = stage_size(run.spec, stage_index)
    loaders = stage_loaders(run.source, run.augment, run.size, stage.bs or run.spec.data.bs)
    callbacks = CallbackList(run.callbacks.callbacks + _core_callbacks(run, loaders))  # type: ignore[union-attr]
    for phase_index, phase in enumerate(stage_phases(stage)):
        if (stage_index, phase_index) < (position.stage, position.phase):
            continue
        if (stage_index, phase_index) > (position.stage, position.phase):
            position = replace(position, stage=stage_index, phase=phase_index, epoch=0, batch=0)
            resume = None
        if position.epoch >= phase.epochs:
            continue
        state = _phase_state(run, phase, position, resume)
        resume = None
        epoch_key = lambda epoch, s=stage_index, p=phase_index: (s * 100 + p) * 100_000 + epoch  # noqa: E731
        ctx = FitContext(
            loaders.train,
            _validate(run, loaders),
            callbacks,
            run.scaler,
            interrupt,
            epoch_key,
            run.spec.runtime.log_every,
        )
        try:
            fit(state, ctx)
        except TrainingInterrupted as err:
            run.write("last", state)
            raise TrainingInterrupted(
                f"{err.message}; saved {run.run_dir / 'checkpoints' / 'last.safetensors'}",
                hint=f"resume with: imgcls train --resume {run.run_dir}",
            ) from None
        except DataError as err:
            run.write("last", state)
            raise DataError(err.message, f"{err.hint}; then resume with: imgcls train --resume {run.run_dir}") from None
        position = state.position
    return replace(position, stage=stage_index + 1, phase=0, epoch=0, batch=0)


def rank_zero_first(runtime: Runtime, step: Callable[[], T]) -> T:
    """Run `step` on rank 0 first (it may download or generate the data), then on the other ranks."""
    if not runtime.distributed:
        return step()
    if runtime.is_main:
        result = step()
        dist.barrier()
        return result
    dist.barrier()
    return step()


def train(
    spec: Spec,
    out: Path | None = None,
    *,
    quiet: bool = False,
    resume: Checkpoint | None = None,
    callbacks: Sequence[Callback] = (),
) -> Path:
    """Train every stage of `spec` into a run folder (`out`, or runs/<name>); with `resume`, continue the run
    in `out` from that checkpoint's position. `callbacks` join the spec's. Under torchrun, every rank calls this."""
    runtime = resolve_runtime(spec.runtime)
    try:
        return _train(spec, runtime, out, quiet, resume, list(callbacks))
    finally:
        if runtime.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _model(spec: Spec, runtime: Runtime, data: DataBundle, resume: Checkpoint | None, console: Console) -> nn.Module:
    """The model on its device: fresh, or with the checkpoint's weights and global RNG state."""
    model = create_model(spec.model, data.info.n_out)
    if resume is not None:
        check_outputs(model, data.info.n_out, str(resume.path))
        model.load_state_dict(resume.model_state)
        # Nothing draws from the global generator between here and the next training batch, in the original
        # run as in this one (loaders and augmentation have their own generators), so restoring it here
        # gives the resumed run the dropout masks the original would have drawn.
        resume.restore_rng()
    if spec.model.sync_bn and runtime.distributed and runtime.device.type != "cuda":
        console.warn("model.sync_bn needs CUDA devices: batch norm stays per process on the CPU")
    return place_model(model, runtime, spec.model.sync_bn)


def _normalizer(run: Run, resume: Checkpoint | None) -> Normalizer | None:
    """The checkpoint's statistics when resuming (never re-measured), else what the spec asks for."""
    if resume is not None:
        stats = resume.meta.get("normalizer")
        return Normalizer(tuple(stats["mean"]), tuple(stats["std"])) if stats else None
    spec = run.spec
    first_bs = spec.train.stages[0].bs or spec.data.bs
    return resolve_normalizer(spec, lambda: stage_loaders(run.source, run.augment, stage_size(spec, 0), first_bs))


def _train(
    spec: Spec, runtime: Runtime, out: Path | None, quiet: bool, resume: Checkpoint | None, extra: list[Callback]
) -> Path:
    run_dir = out if resume is not None and out is not None else start_run(spec, out, runtime)
    console = Console(quiet, enabled=runtime.is_main)
    for note in runtime.notes:
        console.warn(note)
    # The one global seed: weight initialisation and dropout draw from it. Data randomness has its own seeds.
    torch.manual_seed(spec.seed)
    data = rank_zero_first(runtime, lambda: build_data(spec.data, quiet))
    run = Run(
        spec,
        run_dir,
        runtime,
        console,
        data,
        _model(spec, runtime, data, resume, console),
        build_loss(spec.train.loss, data.info.kind),
        [build_metric(m) for m in spec.train.metrics],
        BatchAugment(spec.augment, channels=spec.model.n_in),
        scaler=runtime.grad_scaler(),
    )
    run.normalizer = _normalizer(run, resume)
    run.augment = run.augment.with_normalizer(run.normalizer)
    context = CallbackContext(run_dir, run.write, spec.runtime.log_every, spec)
    run.callbacks = CallbackList(build_callbacks(spec.callbacks, context) + extra)
    if resume is not None:
        run.callbacks.load_state_dict(resume.meta.get("callbacks", {}))
    _prepare_folder(run, resume)
    console.info(
        f"run folder: {run_dir}  ({len(data.split.train)} train / {len(data.split.valid)} valid items, "
        f"{runtime.device}, {runtime.precision}, {runtime.world} process(es))"
    )
    console.info(f"data mode: {run.source.mode} ({run.source.reason})")
    try:
        _train_stages(run, resume)
    except BaseException as err:
        run.callbacks.end_run(run_dir, err)
        raise
    run.callbacks.end_run(run_dir, None)
    return run_dir


def _train_stages(run: Run, resume: Checkpoint | None) -> None:
    """Every stage from the resume position on, then the final report."""
    spec = run.spec
    position = Position(**resume.meta["position"]) if resume is not None else Position()
    with InterruptFlag(spec.runtime.log_every) as interrupt:
        for stage_index in range(position.stage, len(spec.train.stages)):
            position = _stage(run, stage_index, position, resume if stage_index == position.stage else None, interrupt)
    if run.runtime.distributed:
        dist.barrier()
    if run.runtime.is_main:
        from imgcls.evaluate.report import final_report

        final_report(run.run_dir, run.console)
