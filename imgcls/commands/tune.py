"""`imgcls tune`: run (or continue) a study, then write trials.csv, best.yaml and two plots, and print the best
trials."""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgcls.errors import SpecError, TrainingInterrupted
from imgcls.report.console import Console
from imgcls.spec.load import dump_spec
from imgcls.spec.schema import Spec
from imgcls.spec.tune import TuneSpec
from imgcls.tune.space import SearchSpace

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

TOP = 10  # trials in the table printed at the end


def _value(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}"
    return "" if value is None else str(value)


def _shown_path(path: str | None) -> str:
    """A run folder relative to the current folder when it is below it."""
    if path is None:
        return ""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{name}={_value(value)}" for name, value in params.items())


def _trial_line(metric: str) -> Any:
    """The optimize callback that prints one line per finished trial."""

    def report(console: Console, study: optuna.Study, trial: FrozenTrial) -> None:
        if "not_run" in trial.user_attrs:
            return
        complete = trial.state.name == "COMPLETE"
        outcome = f"{metric} {_value(trial.value, 6)}" if complete else trial.user_attrs.get("note", "")
        console.info(f"trial {trial.number} {trial.state.name}: {outcome}")

    return report


def write_trials_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """trials.csv, written to a temporary file and renamed: several processes of one study each write it."""
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["number", "state", "value"]
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(scratch, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    os.replace(scratch, path)
    return path


def write_best(study: optuna.Study, spec: Spec, tune: TuneSpec, space: SearchSpace, folder: Path) -> Path | None:
    """best.yaml: the best trial's whole spec, named <name>-best, trainable as it is."""
    from imgcls.tune.study import best_trial

    best = best_trial(study)
    if best is None:
        return None
    best_spec = space.spec_for(best.params, f"{spec.name}-best")
    header = (
        f"# The best trial ({best.number}) of study '{study.study_name}': {tune.metric} {best.value!r}.\n"
        f"# Written by imgcls tune; train it with: imgcls train {folder / 'best.yaml'}\n"
    )
    path = folder / "best.yaml"
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(header + dump_spec(best_spec))
    os.replace(scratch, path)
    return path


def write_plots(study: optuna.Study, metric: str, folder: Path) -> list[Path]:
    """optimization_history.png and, with two or more complete trials, param_importances.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    written: list[Path] = []
    # Optuna marks its matplotlib plots experimental, and switches pyplot to its ggplot style: rc_context
    # gives the style back afterwards.
    with warnings.catch_warnings(), plt.rc_context():
        warnings.simplefilter("ignore", ExperimentalWarning)
        drawings: list[tuple[str, Callable[[], Any]]] = [
            ("optimization_history.png", lambda: plots.plot_optimization_history(study, target_name=metric))
        ]
        if len(complete) >= 2:
            drawings.append(("param_importances.png", lambda: plots.plot_param_importances(study, target_name=metric)))
        for name, draw in drawings if complete else []:
            try:
                axes = draw()
            except (ValueError, RuntimeError):  # e.g. importances when every trial has the same value
                continue
            figure = axes.get_figure()
            figure.savefig(folder / name, dpi=120, bbox_inches="tight")
            plt.close(figure)
            written.append(folder / name)
    return written


def short_names(paths: list[str]) -> list[str]:
    """Column headers: the last part of each dotted path (lr_max), or the whole path when that is ambiguous."""
    last = [path.rsplit(".", 1)[-1] for path in paths]
    return [short if last.count(short) == 1 else path for short, path in zip(last, paths, strict=True)]


def show_top(console: Console, study: optuna.Study, tune: TuneSpec, rows: list[dict[str, Any]]) -> None:
    """A table of the best complete trials, then how many were pruned or failed."""
    from rich.table import Table

    from imgcls.tune.study import direction

    complete = [row for row in rows if row["state"] == "COMPLETE"]
    complete.sort(key=lambda row: row["value"], reverse=direction(tune) == "maximize")
    names = list(tune.space)
    table = Table(title=f"best trials of study '{study.study_name}' ({direction(tune)} {tune.metric})")
    for column in ["trial", tune.metric, *short_names(names), "seconds"]:
        table.add_column(column, justify="right")
    for row in complete[:TOP]:
        cells = [str(row["number"]), _value(row["value"], 6), *(_value(row.get(n)) for n in names)]
        table.add_row(*cells, f"{row['seconds']:.1f}")
    if console.enabled:
        console.rich.print(table)
    counts = {state: sum(row["state"] == state for row in rows) for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    summary = ", ".join(f"{n} {state.lower()}" for state, n in counts.items() if n)
    if complete:
        summary += f"; the best trial's run folder: {_shown_path(complete[0]['run_dir'])}"
    console.info(summary)


def run_tune(
    config: Path, space_file: Path | None, overrides: list[str] | None, out: Path | None, quiet: bool = False
) -> Path:
    """Run the study of `config` (its tune: section, or `space_file`) in `out` (default runs/<name>-tune)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SpecError(
            "imgcls tune runs as one process and cannot run under torchrun",
            hint="start one `imgcls tune` per GPU instead (CUDA_VISIBLE_DEVICES=N imgcls tune ...), all on the "
            "same tune.storage; each trains its trials on its own device",
        )
    import optuna

    from imgcls.tune.space import load_tune
    from imgcls.tune.study import (
        Objective,
        budget_used,
        direction,
        fail_orphaned_trials,
        open_study,
        run_study,
        trial_rows,
    )

    spec, tune, space = load_tune(config, space_file, overrides)
    folder = out or Path("runs") / f"{spec.name}-tune"
    console = Console(quiet)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial gets one line of ours instead
    study = open_study(spec, tune, folder)
    storage = tune.storage or str(folder / "optuna.journal")
    for number in fail_orphaned_trials(study):
        console.info(
            f"trial {number} was left running by a process on this machine that has ended: marked failed "
            "(it counts against tune.n_trials; raise it to train another in its place)"
        )
    console.info(
        f"study '{study.study_name}' in {storage}: {direction(tune)} {tune.metric}, "
        f"{budget_used(study)} of {tune.n_trials} trials started; trials train in {folder}/trial-NNNN"
    )

    def started(number: int, params: dict[str, Any], run_dir: Path) -> None:
        console.info(f"trial {number}: {_params(params)}")

    report = _trial_line(tune.metric)
    objective = Objective(spec, tune, space, folder, quiet=True, on_start=started)
    try:
        run_study(study, objective, on_end=lambda s, t: report(console, s, t))
    except TrainingInterrupted as err:
        raise TrainingInterrupted(
            f"{err.message.split(';')[0]}; the trial is marked failed in study '{study.study_name}'",
            hint="run the same `imgcls tune` command again to continue the study",
        ) from None
    rows = trial_rows(study)
    written = [write_trials_csv(rows, folder / "trials.csv")]
    best = write_best(study, spec, tune, space, folder)
    written += ([best] if best else []) + write_plots(study, tune.metric, folder)
    show_top(console, study, tune, rows)
    console.info(f"wrote {', '.join(str(path) for path in written)}")
    return folder
