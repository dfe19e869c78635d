"""`imgcls train`'s engine: spec -> pipeline -> stages of phases through the one loop -> a run folder that explains
itself (spec.yaml, env.json, split.json, metrics.csv/.png, checkpoints, the target's closing report)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from imgcls.data.datablock import DataBundle, build_data
from imgcls.data.manifest import DataManifest
from imgcls.data.splits import SplitIndices
from imgcls.errors import DataError, TrainingInterrupted, UnreadableImagesError
from imgcls.report.console import Console
from imgcls.report.env import environment
from imgcls.report.plots import plot_metrics
from imgcls.spec.load import dump_spec
from imgcls.spec.schema import Spec
from imgcls.targets.base import ReportContext
from imgcls.train.builder import Pipeline, StageLoaders, normalizer_record, place_model, wrap_model
from imgcls.train.callbacks import CallbackContext, CallbackList, build_callbacks
from imgcls.train.callbacks.base import Callback
from imgcls.train.callbacks.logging import CSVLogger, ProgressDisplay, SaveLast
from imgcls.train.callbacks.threads import ThreadGovernor
from imgcls.train.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from imgcls.train.evaluation import compute_metrics, evaluate, evaluated
from imgcls.train.folders import LAST, SPLIT_FILE, recorded_data, split_listing, start_run
from imgcls.train.loop import FitContext, InterruptFlag, fit
from imgcls.train.metrics import Metric
from imgcls.train.optim import build_optimizer, load_optimizer_state, set_frozen
from imgcls.train.record import DataRecord, PositionRecord, RunRecord, SkippedRecord, SmoothRecord, TargetRecord
from imgcls.train.runtime import Runtime, allowed_cpus, governs_threads, resolve_runtime
from imgcls.train.schedule import Phase, stage_phases
from imgcls.train.state import Position, SmoothLoss, TrainState

T = TypeVar("T")


def metric_columns(metrics: list[Metric], prefixes: Sequence[str] = ("",)) -> list[str]:
    """metrics.csv's header; each validated model's columns get its prefix (the EMA's: ema_valid_loss, ...)."""
    scores = [f"{prefix}{name}" for prefix in prefixes for name in ("valid_loss", *[m.name for m in metrics])]
    return ["stage", "phase", "epoch", "train_loss", *scores, "lr", "seconds"]


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


class Trainer:
    """One run: the pipeline, the model on its device, the callbacks, and where the run is.

    A resumed run is the same object restored from its `last` checkpoint: weights and global RNG state when the
    model is built, the position and callback states at once, and the optimizer, smoothed loss and grad scaler
    when the checkpoint's phase is rebuilt (`_pending`, used once).
    """

    def __init__(
        self,
        spec: Spec,
        runtime: Runtime,
        run_dir: Path,
        console: Console,
        resume: Checkpoint | None,
        extra: Sequence[Callback],
        allow_data_change: bool = False,
        split: SplitIndices | None = None,
    ) -> None:
        self.spec, self.runtime, self.run_dir, self.console = spec, runtime, run_dir, console
        self._pending = resume
        # The one global seed: weight initialisation and dropout draw from it. Data randomness has its own seeds.
        torch.manual_seed(spec.seed)
        record = resume.record if resume is not None else None
        self._resumed_data = record.data if record is not None else None
        factory: Callable[[], DataBundle] | None = None
        if record is not None:  # the recorded items, split and vocab, checked against the data on disk

            def factory() -> DataBundle:
                assert record is not None
                return recorded_data(
                    spec, record, run_dir, relabel=True, allow_change=allow_data_change, console=console
                )

        elif split is not None:  # a cross-validation fold's split, not the spec's

            def factory() -> DataBundle:
                assert split is not None
                return build_data(spec.data, console.quiet, splitter=lambda items: split)

        self.given_split = split is not None or (record is not None and record.given_split)
        self.pipeline = Pipeline(spec, runtime, record, quiet=console.quiet, data_factory=factory)
        full = rank_zero_first(runtime, lambda: self.pipeline.data)
        self.manifest = DataManifest.of(full) if record is None or record.data is None else None
        self.skipped = self._leave_out_unreadable(full)
        self.data = self.pipeline.data
        self.model = self._model(resume)
        self.scaler = runtime.grad_scaler()
        # One governor for the run, so that a later phase starts at the count the previous one settled on.
        self.governor = ThreadGovernor(allowed_cpus(), console.info)
        self.size: tuple[int, int] | None = None
        context = CallbackContext(run_dir, self.write, spec.runtime.log_every, spec)
        self.callbacks = CallbackList([*build_callbacks(spec.callbacks, context), *extra])
        self.position = Position()
        if resume is not None:
            self.callbacks.load_state_dict(resume.record.callbacks)
            self.callbacks.load_tensors(resume.callback_tensors)
            self.position = Position(**resume.record.position.model_dump())

    def _leave_out_unreadable(self, data: DataBundle) -> list[SkippedRecord]:
        """data.on_bad_image: skip reads every item before sampling and leaves out the ones it cannot read."""
        if self.spec.data.on_bad_image != "skip":
            return []
        bad = self.pipeline.source.scan(self.console)
        if not bad:
            return []
        valid = {int(i) for i in data.split.valid}
        self.pipeline.leave_out({item.index for item in bad})
        skipped = [
            SkippedRecord(
                path=data.items.relative(item.index),
                split="valid" if item.index in valid else "train",
                reason=item.reason,
            )
            for item in bad
        ]
        shown = "; ".join(f"{s.path} ({s.reason})" for s in skipped[:3])
        more = f"; ... ({len(skipped) - 3} more)" if len(skipped) > 3 else ""
        self.console.warn(f"left out {len(skipped)} unreadable image(s) (data.on_bad_image: skip): {shown}{more}")
        return skipped

    def _model(self, resume: Checkpoint | None) -> nn.Module:
        """The model on its device: fresh, or with the checkpoint's weights and global RNG state."""
        model = self.pipeline.new_model()
        if resume is not None:
            from imgcls.models.factory import check_outputs

            check_outputs(model, self.pipeline.target.n_out, str(resume.path))
            model.load_state_dict(resume.training_state)
            # Nothing draws from the global generator between here and the next training batch, in the original
            # run as in this one (loaders and augmentation have their own generators), so restoring it here
            # gives the resumed run the dropout masks the original would have drawn.
            resume.restore_rng()
        if self.spec.model.sync_bn and self.runtime.distributed and self.runtime.device.type != "cuda":
            self.console.warn("model.sync_bn needs CUDA devices: batch norm stays per process on the CPU")
        return place_model(model, self.runtime, self.spec.model.sync_bn)

    # --- checkpoints --------------------------------------------------------------------------------------

    def record(self, kind: str, state: TrainState) -> RunRecord:
        position = asdict(state.position)
        if state.stop:  # an early stop ends the phase: a resume must not train it further
            position.update(epoch=state.phase.epochs, batch=0)
        smooth = state.smooth.to_dict()
        return RunRecord(
            data=self.data_record,
            kind="last" if kind == "last" else "best",
            spec=self.spec.model_dump(mode="json"),
            target=TargetRecord.of(self.pipeline.target),
            normalizer=normalizer_record(self.pipeline.normalizer),
            size=self.size,
            position=PositionRecord(**position),
            phase_name=state.phase_name,
            smooth=SmoothRecord(value=float(smooth["value"]), count=int(smooth["count"])),
            callbacks=self.callbacks.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            metrics=state.metrics,
            given_split=self.given_split,
            loss_weights=self.pipeline.loss_weights,
        )

    def write(self, kind: str, state: TrainState) -> None:
        """Write checkpoints/<kind>.safetensors (rank 0 only); `last` includes the optimizer state and the
        callbacks' tensors. Where a callback offers the weights to keep (the EMA's), `last` keeps the trained
        ones as well, to resume from."""
        if self.runtime.is_main:
            last = kind == "last"
            optimizer = state.optimizer if last else None
            path = self.run_dir / "checkpoints" / f"{kind}.safetensors"
            offered = self.callbacks.checkpoint_model(kind)
            raw = self.model if offered is not None and last else None
            extra = self.callbacks.tensors() if last else None
            record = self.record(kind, state)
            write_checkpoint(path, offered or self.model, record, optimizer, raw=raw, extra=extra)

    @property
    def data_record(self) -> DataRecord | None:
        """The manifest's fingerprint and the items left out; a resumed run keeps its recorded manifest."""
        if self.manifest is None:
            recorded = self._resumed_data
            assert recorded is not None  # no new manifest only when the resumed record has one
            return recorded.model_copy(update={"skipped": self.skipped or recorded.skipped})
        dtype = str(self.manifest.values.dtype)
        return DataRecord(
            fingerprint=self.manifest.fingerprint(), items=len(self.manifest.paths), dtype=dtype, skipped=self.skipped
        )

    # --- the run folder -----------------------------------------------------------------------------------

    def prepare_folder(self) -> None:
        """spec.yaml, env.json, split.json, items.csv and skipped.csv; on resume, metrics.csv cut back to the
        checkpoint's epochs (items.csv stays: the checkpoints' fingerprint is of it)."""
        if not self.runtime.is_main:
            return
        folder, data = self.run_dir, self.data
        folder.mkdir(parents=True, exist_ok=True)
        if self.manifest is not None:
            self.manifest.write(folder)
        self._write_skipped()
        (folder / "spec.yaml").write_text(dump_spec(self.spec))
        rt = self.runtime
        resolved = {
            "precision": rt.precision,
            "evaluation_precision": rt.evaluation_precision,
            "channels_last": rt.channels_last,
            "compile": rt.compile,
            "threads": rt.threads,
        }
        env = environment(rt.device, rt.world, resolved)
        (folder / "env.json").write_text(json.dumps(env, indent=2) + "\n")
        split = split_listing(data.items, data.split, self.given_split, list(data.target.vocab))
        (folder / SPLIT_FILE).write_text(json.dumps(split, indent=1) + "\n")
        weights = self.pipeline.loss_weights_report()
        if weights is not None:  # class_weights.json or pos_weight.json
            (folder / f"{weights['option']}.json").write_text(json.dumps(weights, indent=1) + "\n")
        metrics_file = folder / "metrics.csv"
        if self._pending is not None and metrics_file.exists():
            done = self.position.epochs_done
            with open(metrics_file, newline="") as handle:
                rows = list(csv.reader(handle))
            with open(metrics_file, "w", newline="") as handle:
                csv.writer(handle).writerows(rows[: done + 1])

    def _write_skipped(self) -> None:
        path = self.run_dir / "skipped.csv"
        if not self.skipped:
            path.unlink(missing_ok=True)
            return
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "split", "reason"])
            writer.writerows([s.path, s.split, s.reason] for s in self.skipped)

    # --- stages and phases --------------------------------------------------------------------------------

    def _describe(self, loaders: StageLoaders, n_phases: int) -> Callable[[TrainState], str]:
        n_stages = self.pipeline.n_stages

        def describe(state: TrainState) -> str:
            size = "x".join(map(str, loaders.size)) if loaders.size else "item size"
            lrs = ", ".join(f"{lr:.2e}" for lr in state.phase.lrs)
            frozen = ", body frozen" if state.phase.frozen else ""
            pos = state.position
            return (
                f"stage {pos.stage + 1}/{n_stages}, phase {pos.phase + 1}/{n_phases} {state.phase_name}: "
                f"{state.phase.epochs} epoch(s) at {size} px, bs {loaders.bs}, lr {lrs}{frozen}"
            )

        return describe

    def _core_callbacks(self, loaders: StageLoaders, n_phases: int) -> list[Callback]:
        columns = metric_columns(self.pipeline.metrics_at(loaders.size), list(self._validated()))
        cbs: list[Callback] = [SaveLast(self.write, 60.0 * self.spec.runtime.checkpoint_every)]
        if governs_threads(self.spec.runtime, self.runtime):
            cbs.append(self.governor)
        if self.runtime.is_main:
            cbs.append(CSVLogger(self.run_dir / "metrics.csv", columns))
        describe = self._describe(loaders, n_phases)
        cbs.append(ProgressDisplay(self.console, columns, self.spec.runtime.log_every, describe))
        return cbs

    def _validated(self) -> dict[str, Callable[[], nn.Module]]:
        """The models validation evaluates, by column prefix: the training model under '' unless a callback
        takes those columns (the EMA's average with validate: ema)."""
        return {"": lambda: self.model, **self.callbacks.validation_models()}

    def _validate(self, loaders: StageLoaders) -> Callable[[], dict[str, float]]:
        def validate() -> dict[str, float]:
            row: dict[str, float] = {}
            for prefix, validated in self._validated().items():
                model = validated()
                # Each rank evaluates its own shard, and evaluate() gathers them.
                if self.runtime.distributed:
                    # Batch-norm running statistics drift apart across ranks (each updates them from its own last
                    # batch); evaluate every shard with rank 0's, the ones the checkpoint keeps.
                    for buffer in model.buffers():
                        dist.broadcast(buffer, src=0)
                predictions = evaluate(model, loaders.valid, self.runtime)
                scores = compute_metrics(predictions, self.pipeline.loss, self.pipeline.metrics_at(loaders.size))
                row.update({f"{prefix}{key}": value for key, value in scores.items()})
            return row

        return validate

    def _phase_state(self, phase: Phase, position: Position) -> TrainState:
        groups = self.model.param_groups()  # type: ignore[operator]
        set_frozen(self.model, groups, phase.frozen, self.spec.train.train_bn)
        optimizer = build_optimizer(self.model, groups, self.spec.train, phase)
        model = wrap_model(self.model, self.runtime)
        state = TrainState(
            model,
            optimizer,
            self.pipeline.loss,
            self.runtime,
            self.pipeline.target,
            self.run_dir,
            phase,
            phase.name,
            position,
        )
        pending, self._pending = self._pending, None
        if pending is not None:
            saved = pending.optimizer_state()
            if saved is not None:
                load_optimizer_state(optimizer, saved)
            state.smooth = SmoothLoss.from_dict(pending.record.smooth.model_dump(), self.runtime.device)
            if self.scaler is not None and pending.record.scaler:
                self.scaler.load_state_dict(pending.record.scaler)
        return state

    def stage(self, index: int, interrupt: InterruptFlag) -> None:
        stage = self.spec.train.stages[index]
        self.size = self.pipeline.size(index)
        loaders = self.pipeline.stage_loaders(index)
        phases = stage_phases(stage)
        callbacks = CallbackList(self.callbacks.callbacks + self._core_callbacks(loaders, len(phases)))
        position = self.position
        for phase_index, phase in enumerate(phases):
            if (index, phase_index) < (position.stage, position.phase):
                continue
            if (index, phase_index) > (position.stage, position.phase):
                position = replace(position, stage=index, phase=phase_index, epoch=0, batch=0)
                self._pending = None
            if position.epoch >= phase.epochs:
                continue
            state = self._phase_state(phase, position)
            epoch_key = lambda epoch, s=index, p=phase_index: (s * 100 + p) * 100_000 + epoch  # noqa: E731
            ctx = FitContext(
                loaders.train,
                self._validate(loaders),
                callbacks,
                self.scaler,
                interrupt,
                epoch_key,
                self.spec.runtime.log_every,
            )
            self._fit(state, ctx)
            position = state.position
        self.position = replace(position, stage=index + 1, phase=0, epoch=0, batch=0)

    def _fit(self, state: TrainState, ctx: FitContext) -> None:
        """fit(), saving `last` when the user interrupts or an image cannot be read, with the way to go on."""
        last = self.run_dir / "checkpoints" / "last.safetensors"
        try:
            fit(state, ctx)
        except TrainingInterrupted as err:
            self.write("last", state)
            raise TrainingInterrupted(
                f"{err.message}; saved {last}", hint=f"resume with: imgcls train --resume {self.run_dir}"
            ) from None
        except UnreadableImagesError as err:
            self.write("last", state)
            raise DataError(
                err.message,
                hint=f"delete or replace them and resume with `imgcls train --resume {self.run_dir}`, or go on without "
                f"every unreadable file: imgcls train --resume {self.run_dir} --set data.on_bad_image=skip",
            ) from None
        except DataError as err:
            self.write("last", state)
            raise DataError(
                err.message, f"{err.hint}; then resume with: imgcls train --resume {self.run_dir}"
            ) from None

    def run(self) -> Path:
        self.prepare_folder()
        data, runtime = self.data, self.runtime
        self.console.info(
            f"run folder: {self.run_dir}  ({len(data.split.train)} train / {len(data.split.valid)} valid items, "
            f"{runtime.device}, {_precision_words(runtime)}, {runtime.world} process(es)"
            f"{f' over {runtime.backend}' if runtime.backend else ''})"
        )
        self.console.info(f"data mode: {self.pipeline.source.mode} ({self.pipeline.source.reason})")
        normalize = self.pipeline.normalizer_summary()
        self.console.info(f"normalize: {normalize['resolved']}")
        saved = self.run_dir / "normalize.json"
        if runtime.is_main and (self._pending is None or not saved.exists()):  # a resume keeps the first words
            saved.write_text(json.dumps(normalize, indent=2) + "\n")
        try:
            self._stages()
        except BaseException as err:
            self.callbacks.end_run(self.run_dir, err)
            raise
        self.callbacks.end_run(self.run_dir, None)
        return self.run_dir

    def _stages(self) -> None:
        """Every stage from the run's position on, then the closing report (rank 0)."""
        with InterruptFlag(self.spec.runtime.log_every) as interrupt:
            for index in range(self.position.stage, self.pipeline.n_stages):
                self.stage(index, interrupt)
        if self.runtime.distributed:
            dist.barrier()
        if self.runtime.is_main:
            closing_report(self.run_dir, self.console, self.pipeline.data)


def closing_report(run_dir: Path, console: Console, data: DataBundle | None = None) -> None:
    """metrics.png, then the best checkpoint on the validation set through its target's report (on `data`, the
    training's own, else the run's recorded items)."""
    metrics_csv = run_dir / "metrics.csv"
    if metrics_csv.exists():
        plot_metrics(metrics_csv, run_dir / "metrics.png")
    path = run_dir / "checkpoints" / "best.safetensors"
    if not path.is_file():  # save_best never saw its monitor improve (e.g. a NaN on every epoch)
        console.warn(f"no best checkpoint: the monitored metric never improved; reporting on {LAST.name}")
        path = run_dir / LAST
    checkpoint = read_checkpoint(path)
    record = checkpoint.record
    spec = record.spec_model(str(checkpoint.path))
    runtime = resolve_runtime(spec.runtime, distributed=False)
    pipeline = Pipeline(
        spec, runtime, record, data_factory=(lambda: data) if data else (lambda: recorded_data(spec, record, run_dir))
    )
    model = pipeline.trained_model(checkpoint.model_state, str(checkpoint.path))
    augment = pipeline.augment(pipeline.eval_size)
    predictions = evaluate(model, pipeline.batches("valid"), runtime)
    result = evaluated(predictions, pipeline, augment)
    lines, files = pipeline.target.training_report(ReportContext(result, run_dir, console))
    best = record.metrics
    scores = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if isinstance(v, float) and k not in ("lr", "seconds"))
    console.info(f"best checkpoint: {checkpoint_position(spec, record)}: {scores}")
    for line in lines:
        console.info(line)
    written = [name for name in RUN_FILES if (run_dir / name).exists()]
    console.info(f"wrote {run_dir}/: {', '.join([*written, *files])}")


# What every run folder holds (besides the target's own report files), in the order `wrote` lists them.
RUN_FILES = ("spec.yaml", "env.json", SPLIT_FILE, "normalize.json", "metrics.csv", "metrics.png", "checkpoints/")


def checkpoint_position(spec: Spec, record: RunRecord) -> str:
    """Where a checkpoint was written, numbered from 1 as the table and metrics.csv number it: 'stage 2/3,
    phase 1/1 fit_one_cycle, epoch 4/5 (row 8 of metrics.csv)'."""
    pos = record.position
    phases = stage_phases(spec.train.stages[min(pos.stage, len(spec.train.stages) - 1)])
    phase = phases[min(pos.phase, len(phases) - 1)]
    epoch = record.metrics.get("epoch", pos.epoch)
    return (
        f"stage {pos.stage + 1}/{len(spec.train.stages)}, phase {pos.phase + 1}/{len(phases)} {record.phase_name}, "
        f"epoch {epoch}/{phase.epochs} (row {pos.epochs_done} of metrics.csv)"
    )


def _precision_words(runtime: Runtime) -> str:
    """'bf16' or, where evaluation differs, 'bf16 (evaluation fp32)'."""
    if runtime.evaluation_precision == runtime.precision:
        return runtime.precision
    return f"{runtime.precision} (evaluation {runtime.evaluation_precision})"


def train(
    spec: Spec,
    out: Path | None = None,
    *,
    quiet: bool = False,
    resume: Checkpoint | None = None,
    callbacks: Sequence[Callback] = (),
    console: Console | None = None,
    allow_data_change: bool = False,
    split: SplitIndices | None = None,
) -> Path:
    """Train every stage of `spec` into a run folder (`out`, or runs/<name>); with `resume`, continue the run
    in `out` from that checkpoint's position (on the recorded data; `allow_data_change` goes on when the files
    changed). `callbacks` run besides the spec's. `split` replaces the spec's split (a cross-validation fold):
    the run records that, and its items.csv and split.json list both sets. Under torchrun, every rank calls this."""
    runtime = resolve_runtime(spec.runtime)
    try:
        run_dir = out if resume is not None and out is not None else start_run(spec, out, runtime)
        display = console or Console(quiet, enabled=runtime.is_main)
        for note in runtime.notes:
            display.warn(note)
        return Trainer(spec, runtime, run_dir, display, resume, callbacks, allow_data_change, split).run()
    finally:
        if runtime.distributed and dist.is_initialized():
            dist.destroy_process_group()
