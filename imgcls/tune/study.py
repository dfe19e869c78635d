"""An Optuna study of a spec: its storage, sampler and pruner, the objective that trains one trial, the results.

Several `imgcls tune` processes (on one machine, or on several with an RDB storage) that open the same study
share it: the storage numbers the trials, a trial number at or past `n_trials` is never trained, and trial n
draws its random numbers from (seed, n), so two processes never propose the same trial from the same state.
"""

from __future__ import annotations

import csv
import math
import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from imgcls.errors import SpecError, TrainingError, TrainingInterrupted, TrainingStopped
from imgcls.spec.schema import Spec
from imgcls.spec.tune import MedianPrunerSpec, NoPrunerSpec, TuneSpec
from imgcls.train.metrics import lower_is_better
from imgcls.train.run import train
from imgcls.train.schedule import stage_phases
from imgcls.tune.pruning import PruneTrial
from imgcls.tune.space import SearchSpace

if TYPE_CHECKING:
    import optuna
    from optuna.pruners import BasePruner
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial, TrialState

JOURNAL = "optuna.journal"
# An RDB storage: a running trial beats every 60 s; one silent for 3 minutes (its process or machine died)
# is marked failed by the next process that starts a trial.
HEARTBEAT_S, GRACE_S = 60, 180


def counted_states() -> tuple[TrialState, ...]:
    """The trials n_trials counts: every trial that has started (running ones too, so that processes finishing
    at the same time do not all start another)."""
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def is_rdb_url(storage: str) -> bool:
    return "://" in storage


def open_storage(option: str | None, folder: Path) -> BaseStorage:
    """Unset: the journal file optuna.journal in the study folder (safe for several processes on one machine, or
    on a shared file system); a URL: an RDB storage (postgresql://, mysql://, sqlite:///); else a journal file."""
    import optuna
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages.journal import JournalFileBackend

    if option is not None and is_rdb_url(option):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats are "experimental" since Optuna 2.9
            return optuna.storages.RDBStorage(option, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    path = Path(option) if option is not None else folder / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def process_tag(pid: int | None = None) -> str | None:
    """'pid:start' of a live process on this machine (its start, in clock ticks after boot, tells a reused pid
    apart), or None where /proc cannot say (no such process, or no /proc)."""
    pid = os.getpid() if pid is None else pid
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # starttime is field 22; the command name (field 2) may hold spaces, so count after ')' (field 3 first)
    return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark failed the running trials that a process on this machine started and that process no longer runs
    (SIGKILL, out of memory, a power cut): a journal storage has no heartbeat, so they would stay running, and
    counted, for ever. Returns their numbers."""
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tag = trial.user_attrs.get("process")
        if trial.user_attrs.get("host") != host or not isinstance(tag, str) or process_tag() == tag:
            continue
        if process_tag(int(tag.split(":")[0])) != tag:
            study.tell(trial.number, state=TrialState.FAIL)
            failed.append(trial.number)
    return failed


def direction(tune: TuneSpec) -> Literal["minimize", "maximize"]:
    if tune.direction != "auto":
        return tune.direction
    return "minimize" if lower_is_better(tune.metric) else "maximize"


def build_pruner(tune: TuneSpec) -> BasePruner:
    import optuna

    spec = tune.pruner
    if isinstance(spec, NoPrunerSpec):
        return optuna.pruners.NopPruner()
    if isinstance(spec, MedianPrunerSpec):
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec.n_startup_trials,
            n_warmup_steps=spec.n_warmup_steps,
            interval_steps=spec.interval_steps,
            n_min_trials=spec.n_min_trials,
        )
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=spec.min_resource,
        reduction_factor=spec.reduction_factor,
        min_early_stopping_rate=spec.min_early_stopping_rate,
        bootstrap_count=spec.bootstrap_count,
    )


def open_study(spec: Spec, tune: TuneSpec, folder: Path) -> optuna.Study:
    """Create the study, or load it when the storage has it (a re-run continues it)."""
    import optuna

    from imgcls.tune.sampler import TrialSeededTPE

    folder.mkdir(parents=True, exist_ok=True)
    wanted = direction(tune)
    study = optuna.create_study(
        storage=open_storage(tune.storage, folder),
        sampler=TrialSeededTPE(spec.seed if tune.seed is None else tune.seed, tune.n_startup_trials),
        pruner=build_pruner(tune),
        study_name=tune.study_name or spec.name,
        direction=wanted,
        load_if_exists=True,
    )
    if study.direction.name.lower() != wanted:
        raise SpecError(
            f"study '{study.study_name}' in the storage was created to {study.direction.name.lower()}, "
            f"not {wanted} {tune.metric}",
            hint="set tune.direction to match, or give tune.study_name a new name",
        )
    return study


def epoch_rows(spec: Spec) -> int:
    """The rows metrics.csv has when every phase of every stage runs to its end."""
    return sum(phase.epochs for stage in spec.train.stages for phase in stage_phases(stage))


def budget_used(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=counted_states()))


def trial_value(run_dir: Path, metric: str, which: str, minimize: bool) -> float:
    """The trial's result from its metrics.csv: the last epoch's value, or the best one."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        values = [float(row[metric]) for row in csv.DictReader(handle)]
    if which == "last":
        return values[-1]
    finite = [v for v in values if not math.isnan(v)] or values
    return min(finite) if minimize else max(finite)


class _OverBudget(Exception):  # noqa: N818 - a trial number past n_trials: told failed, never trained
    pass


TrialStart = Callable[[int, dict[str, Any], Path], None]


@dataclass
class Objective:
    """Train one trial of the spec into <folder>/trial-NNNN and return its metric."""

    spec: Spec
    tune: TuneSpec
    space: SearchSpace
    folder: Path
    quiet: bool = True
    on_start: TrialStart | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        if trial.number >= self.tune.n_trials:
            trial.set_user_attr("not_run", f"other processes had started all {self.tune.n_trials} trials")
            raise _OverBudget
        params = self.space.suggest(trial)
        run_dir = self.folder / f"trial-{trial.number:04d}"
        if (run_dir / "checkpoints").exists():
            raise SpecError(
                f"{run_dir} holds a run that study '{trial.study.study_name}' did not start",
                hint="give the study its own folder (--out), or delete the old trial folders",
            )
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("process", process_tag())  # fail_orphaned_trials: is the trainer still alive?
        spec = self.space.spec_for(params, f"{self.spec.name}-trial-{trial.number:04d}")
        if self.on_start is not None:
            self.on_start(trial.number, params, run_dir)
        try:
            pruning = PruneTrial(trial, self.tune.metric, last_step=epoch_rows(spec))
            train(spec, run_dir, quiet=self.quiet, callbacks=[pruning])
        except TrainingStopped as err:
            trial.set_user_attr("note", err.message)
            raise optuna.TrialPruned(err.message) from None
        except (TrainingError, TrainingInterrupted) as err:
            trial.set_user_attr("note", err.message)
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("note", "interrupted")
            raise
        return trial_value(run_dir, self.tune.metric, self.tune.value, direction(self.tune) == "minimize")


def run_study(
    study: optuna.Study,
    objective: Objective,
    on_end: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> None:
    """Run trials until the study has n_trials (counting every process's). A diverging trial (TrainingError)
    is marked failed and the study goes on; Ctrl-C marks the running trial failed and stops."""
    import optuna

    n_trials = objective.tune.n_trials
    if budget_used(study) >= n_trials:
        return
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [
        optuna.study.MaxTrialsCallback(n_trials, states=counted_states())
    ]
    if on_end is not None:
        callbacks.append(on_end)
    study.optimize(objective, n_trials=n_trials, catch=(TrainingError, _OverBudget), callbacks=callbacks)


# --- results ------------------------------------------------------------------------------------------------


def trained(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that were trained (not the numbers told failed because the budget was spent)."""
    return [t for t in study.get_trials(deepcopy=False) if "not_run" not in t.user_attrs]


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trained trial: number, state, value, each parameter, run folder, host, seconds, note."""
    names = list(dict.fromkeys(name for t in trained(study) for name in t.params))
    rows = []
    for t in trained(study):
        seconds = None
        if t.datetime_start is not None and t.datetime_complete is not None:
            seconds = round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
        row: dict[str, Any] = {"number": t.number, "state": t.state.name, "value": t.value}
        row.update({name: t.params.get(name) for name in names})
        row.update(
            run_dir=t.user_attrs.get("run_dir"),
            host=t.user_attrs.get("host"),
            seconds=seconds,
            note=t.user_attrs.get("note", ""),
        )
        rows.append(row)
    return rows


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial, or None when no trial has completed."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial
