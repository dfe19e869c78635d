"""Experiment trackers: MLflow and Weights & Biases. Each package is optional; each logs from rank 0 only.

Both log the resolved spec, every row of metrics.csv (step = the row's number, counted from 1, as TensorBoard's
callback counts) and, when the run ends, the run folder's plots, CSVs and JSON/YAML files. A resumed run
(`imgcls train --resume`) continues the same tracked run: its id travels in the checkpoint's callback states.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from imgcls import __version__
from imgcls.errors import SpecError, TrainingInterrupted, TrainingStopped
from imgcls.spec.schema import Spec
from imgcls.spec.train import MlflowSpec, WandbSpec
from imgcls.train.callbacks.base import Callback
from imgcls.train.state import TrainState

# MLflow 3 rejects a param value over 6000 characters (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH) and a
# log_batch call with more than 100 params or tags; the resolved spec has about 120 params.
PARAM_LIMIT = 6000
BATCH_LIMIT = 100
DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow.db"
_ARTIFACT_SUFFIXES = (".png", ".csv", ".yaml", ".json")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings (and lists of mappings, e.g. stages) as dotted keys: {'train.stages.0.lr_max': 0.003}.
    Lists of plain values stay whole: {'augment.size': [224, 224]}."""
    items: Any
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
        items = enumerate(value)
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def param_text(value: Any, limit: int = PARAM_LIMIT) -> str:
    """A value as MLflow stores params: strings as they are, the rest as JSON; cut to `limit` with a note."""
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > limit:
        note = f" ... [truncated from {len(text)} characters: see the spec.yaml artifact]"
        text = text[: limit - len(note)] + note
    return text


def spec_params(spec: Spec) -> dict[str, str]:
    """The resolved spec as flat params; characters MLflow refuses in a key (it allows \\w - . space /) -> _."""
    flat = flatten(spec.model_dump(mode="json"))
    return {re.sub(r"[^\w\-. /]", "_", key): param_text(value) for key, value in flat.items()}


def epoch_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The numeric columns of a metrics.csv row (the phase name is text and is left out)."""
    return {k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def run_files(run_dir: Path, checkpoints: bool) -> list[tuple[Path, str | None]]:
    """(file, artifact folder) for the run folder's plots, CSVs, spec.yaml and JSON files (and checkpoints)."""
    files: list[tuple[Path, str | None]] = [
        (path, None) for path in sorted(run_dir.iterdir()) if path.is_file() and path.suffix in _ARTIFACT_SUFFIXES
    ]
    if checkpoints:
        files += [(path, "checkpoints") for path in sorted((run_dir / "checkpoints").glob("*.safetensors"))]
    return files


def run_tags(run_dir: Path) -> dict[str, str]:
    """The imgcls version and the git commit that env.json recorded (MLflow's UI shows mlflow.source.git.commit)."""
    tags = {"imgcls.version": __version__, "imgcls.run_dir": str(run_dir.resolve())}
    try:
        git = json.loads((run_dir / "env.json").read_text()).get("git") or {}
    except (OSError, ValueError):
        git = {}
    if git.get("commit"):
        tags["mlflow.source.git.commit"] = str(git["commit"])
        tags["imgcls.git_dirty"] = str(bool(git.get("dirty"))).lower()
    return tags


def ended_on_purpose(error: BaseException | None) -> bool:
    return isinstance(error, TrainingInterrupted | TrainingStopped | KeyboardInterrupt)


def resolve_tracking_uri(option: str | None) -> str:
    """The spec's URI, else $MLFLOW_TRACKING_URI, else a SQLite file; a relative SQLite path becomes absolute
    (so a run resumed from another folder reopens the same store) and its folder is created."""
    uri = option or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and uri != f"{prefix}:memory:":
        path = Path(uri.removeprefix(prefix)).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"{prefix}{path}"
    return uri


def require_package(package: str, pip: str) -> None:
    """A clear SpecError, with the pip command, when an optional tracker is named but not installed."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        raise SpecError(
            f"the {package} callback needs the {package} package",
            hint=f"pip install '{pip}' (or pip install 'imgcls[tracking]')",
        )


class MlflowTracker(Callback):
    """An MLflow run per imgcls run: params (the flat spec), tags, epoch metrics, then the run's files."""

    name = "mlflow"
    order = 85  # after the CSV row is written (80), before `last` is saved (90)

    def __init__(self, options: MlflowSpec, spec: Spec, run_dir: Path) -> None:
        require_package("mlflow", "mlflow>=3")
        self.options, self.spec, self.run_dir = options, spec, run_dir
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self.client: Any = None
        self.logged_steps = 0  # the last step MLflow holds: a run killed after logging re-trains that epoch

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.options.experiment
        found = self.client.get_experiment_by_name(name)
        if found is None:
            location = self.options.artifact_location
            assert self.tracking_uri is not None
            if location is None and self.tracking_uri.startswith("sqlite:///"):
                location = (Path(self.tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
            try:
                return str(self.client.create_experiment(name, artifact_location=location))
            except MlflowException:  # another process created it in the meantime
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            raise SpecError(
                f"MLflow experiment '{name}' is deleted in {self.tracking_uri}",
                hint="restore it (mlflow experiments restore), or give the mlflow callback another experiment name",
            )
        return str(found.experiment_id)

    def _start(self) -> None:
        from mlflow.entities import Param

        tags = run_tags(self.run_dir)
        run = self.client.create_run(self._experiment_id(), run_name=self.options.run_name or self.spec.name, tags=tags)
        self.run_id = str(run.info.run_id)
        params = [Param(key, value) for key, value in spec_params(self.spec).items()]
        for start in range(0, len(params), BATCH_LIMIT):
            self.client.log_batch(self.run_id, params=params[start : start + BATCH_LIMIT])

    def _reopen(self) -> None:
        self.client.update_run(self.run_id, status="RUNNING")
        history = self.client.get_metric_history(self.run_id, "train_loss")
        self.logged_steps = max((int(metric.step) for metric in history), default=0)

    def on_fit_start(self, state: TrainState) -> None:
        if not state.runtime.is_main or self.client is not None:
            return
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self.tracking_uri = self.tracking_uri or resolve_tracking_uri(self.options.tracking_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        try:
            if self.run_id is None:
                self._start()
            else:
                self._reopen()
        except MlflowException as err:
            self.client = None
            raise SpecError(
                f"mlflow: cannot log to {self.tracking_uri}: {err.message}",
                hint=f"check the mlflow callback's tracking_uri; unset, it is {DEFAULT_TRACKING_URI} (no server)",
            ) from None

    def on_epoch_end(self, state: TrainState) -> None:
        step = state.position.epochs_done
        if self.client is None or step <= self.logged_steps:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in epoch_metrics(state.metrics).items()]
        self.client.log_batch(self.run_id, metrics=metrics)
        self.logged_steps = step

    def on_run_end(self, run_dir: Path, error: BaseException | None) -> None:
        if self.client is None:
            return
        if error is None or isinstance(error, TrainingStopped):
            for path, folder in run_files(run_dir, self.options.log_checkpoints):
                self.client.log_artifact(self.run_id, str(path), folder)
        status = "FINISHED" if error is None else "KILLED" if ended_on_purpose(error) else "FAILED"
        self.client.set_terminated(self.run_id, status=status)
        self.client = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "tracking_uri": self.tracking_uri} if self.run_id else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id, self.tracking_uri = state.get("run_id"), state.get("tracking_uri")


class WandbTracker(Callback):
    """A W&B run per imgcls run: config (the spec), epoch metrics, then the run's files as one artifact."""

    name = "wandb"
    order = 86

    def __init__(self, options: WandbSpec, spec: Spec, run_dir: Path) -> None:
        require_package("wandb", "wandb>=0.17")
        self.options, self.spec, self.run_dir = options, spec, run_dir
        self.run: Any = None
        self.run_id: str | None = None
        self.logged_steps = 0

    def on_fit_start(self, state: TrainState) -> None:
        if not state.runtime.is_main or self.run is not None:
            return
        import wandb

        folder = Path(self.options.dir) if self.options.dir else self.run_dir
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.options.project,
            entity=self.options.entity,
            name=self.options.run_name or self.spec.name,
            group=self.options.group,
            tags=self.options.tags or None,
            dir=str(folder),
            mode=self.options.mode,
            config=self.spec.model_dump(mode="json"),
            id=self.run_id,
            resume="allow" if self.run_id else None,
            # Our console stays ours: wandb would otherwise wrap stdout and stderr.
            settings=wandb.Settings(console="off"),
        )
        self.run_id = str(self.run.id)

    def on_epoch_end(self, state: TrainState) -> None:
        step = state.position.epochs_done
        if self.run is None or step <= self.logged_steps:
            return
        self.run.log(epoch_metrics(state.metrics), step=step)
        self.logged_steps = step

    def on_run_end(self, run_dir: Path, error: BaseException | None) -> None:
        if self.run is None:
            return
        import wandb

        if error is None or isinstance(error, TrainingStopped):
            artifact = wandb.Artifact(f"run-{self.run_id}", type="run-folder")
            for path, folder in run_files(run_dir, self.options.log_checkpoints):
                artifact.add_file(str(path), name=f"{folder}/{path.name}" if folder else path.name)
            self.run.log_artifact(artifact)
        self.run.finish(exit_code=0 if error is None or ended_on_purpose(error) else 1)
        self.run = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "logged_steps": self.logged_steps} if self.run_id else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")
        self.logged_steps = int(state.get("logged_steps", 0))
