"""The command line: parse, load the spec, call one function. No logic lives here."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console as RichConsole

from imgcls.errors import ImgclsError, SpecError, as_user_error

app = typer.Typer(
    name="imgcls",
    help="Train image classifiers from a YAML experiment spec.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

SpecFile = Annotated[Path, typer.Argument(help="The experiment spec (YAML).")]
RunDir = Annotated[Path, typer.Argument(help="A run folder written by `imgcls train`, e.g. runs/demo.")]
Thresh = Annotated[
    str | None,
    typer.Option(
        "--thresh",
        help="Multi-label decision threshold: 0.4 for every label, or label=0.3,other=0.6 for some "
        "(default: the run's saved per-label thresholds, else its train.thresh).",
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a spec value: --set data.bs=32 (dotted path = YAML value)."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Plain log lines instead of progress bars.")]
Which = Annotated[str, typer.Option("--checkpoint", "-c", help="best, last, or a checkpoint file of the run.")]
AllowDataChange = Annotated[
    bool,
    typer.Option(
        "--allow-data-change",
        help="Go on when the data differs from the run's items.csv: the recorded items, split and vocab are used.",
    ),
]
TrustSpec = Annotated[
    bool,
    typer.Option(
        "--trust-spec", help="Re-run the run's labeller on the data (imports its label function) to compare classes."
    ),
]
CalibrationFile = Annotated[
    Path | None,
    typer.Option(
        "--calibration", help="The calibration.json to use (implies --calibrate), when interpret wrote it elsewhere."
    ),
]


def handled(command: F) -> F:
    """Print an ImgclsError as 'error: ...' with its hint and exit with its code; never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ImgclsError as err:
            _report(err)
            raise typer.Exit(err.exit_code) from None
        except (OSError, MemoryError) as err:
            mapped = as_user_error(err)
            if mapped is None:
                raise
            _report(mapped)
            raise typer.Exit(mapped.exit_code) from None
        except KeyboardInterrupt:
            # The second Ctrl-C: stop at once. Training's last checkpoint (or the one the first Ctrl-C was
            # saving, if its rename completed) is intact either way: checkpoints are written atomically.
            RichConsole(stderr=True).print("interrupted", style="red", markup=False)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _report(err: ImgclsError) -> None:
    errors = RichConsole(stderr=True, highlight=False, soft_wrap=True)
    # Under torchrun every rank prints its own error; say which one.
    rank = f" (rank {os.environ['RANK']})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    errors.print(f"error{rank}: {err.message}", style="red", markup=False)
    if err.hint:
        errors.print(f"  hint: {err.hint}", markup=False)


def _console(quiet: bool = False) -> Any:
    from imgcls.report.console import Console

    return Console(quiet=quiet)


@app.command("spec")
@handled
def spec_command(config: SpecFile, set_: SetOption = None) -> None:
    """Print the resolved spec, every default written out."""
    from imgcls.spec import dump_spec, load_spec

    typer.echo(dump_spec(load_spec(config, set_)), nl=False)


Stage = Annotated[int, typer.Option("--stage", help="The training stage to show (1 = the first), its size and bs.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the random choice of items.")]


@app.command("summary")
@handled
def summary_command(
    config: SpecFile,
    set_: SetOption = None,
    bs: Annotated[int, typer.Option(help="Items in the traced batch.")] = 4,
    check: Annotated[bool, typer.Option("--check", help="Decode every item and list the unreadable files.")] = False,
    stage: Stage = 1,
    seed: Seed = 0,
) -> None:
    """Trace one item and one batch through every stage of the data pipeline."""
    from imgcls.commands.summary import summarize
    from imgcls.spec import load_spec

    problems = summarize(load_spec(config, set_), _console(), bs=bs, check=check, stage=stage, seed=seed)
    if problems:
        raise typer.Exit(3)


@app.command("show-batch")
@handled
def show_batch_command(
    config: SpecFile,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path("batch.png"),
    valid: Annotated[bool, typer.Option("--valid", help="Show validation images (no augmentation).")] = False,
    n: Annotated[int, typer.Option(help="Number of images.")] = 9,
    set_: SetOption = None,
    stage: Stage = 1,
    seed: Seed = 0,
) -> None:
    """Write a grid of training (or validation) images as the model sees them, with labels."""
    from imgcls.commands.show_batch import run_show_batch
    from imgcls.spec import load_spec

    run_show_batch(load_spec(config, set_), out, n=n, valid=valid, stage=stage, seed=seed)


def _fail_on(value: str | None) -> tuple[str, ...]:
    from imgcls.commands.audit import parse_fail_on

    try:
        return parse_fail_on(value)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


@app.command("audit")
@handled
def audit_command(
    config: SpecFile,
    *,
    set_: SetOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder to write (default: runs/<name>-audit).")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="A trained run: rank its validation items by how suspect their labels are."),
    ] = None,
    checkpoint: Which = "best",
    fail_on: Annotated[
        str | None,
        typer.Option(
            "--fail-on",
            help="Exit with code 5 when any of these findings is present: leakage, unreadable, duplicates, "
            "imbalance (comma-separated).",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, help="Decoding processes (default: data.num_workers).")
    ] = None,
    max_imbalance: Annotated[
        float,
        typer.Option(
            "--max-imbalance", min=1.0, help="Largest / smallest training class above which imbalance counts."
        ),
    ] = 3.0,
    k: Annotated[int, typer.Option("--k", min=0, help="Duplicate pairs and suspect labels shown in the PNGs.")] = 8,
    folds: Annotated[
        int | None,
        typer.Option(
            "--folds",
            min=2,
            help="Rank every item's label by K-fold cross-validation: K trainings of the spec's recipe, "
            "each holding one stratified fold out (runs in OUT/fold-1..K).",
        ),
    ] = None,
    fold_epochs: Annotated[
        int | None,
        typer.Option("--fold-epochs", min=1, help="With --folds: every stage's epochs (default: the spec's)."),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Audit the data: unreadable files, duplicates, train/valid leakage, class balance, modes and sizes."""
    from imgcls.commands.audit import AuditOptions, run_audit
    from imgcls.spec import load_spec

    options = AuditOptions(
        out, labels, checkpoint, _fail_on(fail_on), workers, max_imbalance, k, quiet, folds, fold_epochs
    )
    code = run_audit(load_spec(config, set_), options)
    if code:
        raise typer.Exit(code)


@app.command("train")
@handled
def train_command(
    config: Annotated[Path | None, typer.Argument(help="The experiment spec (YAML).")] = None,
    set_: SetOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: runs/<name>, numbered if taken).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run in this folder from its last checkpoint.")
    ] = None,
    quiet: Quiet = False,
    gpus: Annotated[
        int, typer.Option("--gpus", help="Start torchrun with this many processes on this machine (DDP).")
    ] = 1,
    allow_data_change: AllowDataChange = False,
) -> None:
    """Train the model the spec describes; checkpoints, metrics.csv and reports go to the run folder."""
    if gpus > 1 and "WORLD_SIZE" not in os.environ:
        raise typer.Exit(_torchrun(gpus))
    from imgcls.commands.train import run_train

    run_train(config, set_, out, resume, quiet, allow_data_change)


def _torchrun(processes: int) -> int:
    """Re-run this command under `torchrun --standalone --nproc-per-node N` (one process per GPU)."""
    forwarded: list[str] = []
    skip = False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--gpus":
            skip = True
        elif not arg.startswith("--gpus="):
            forwarded.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    return subprocess.run([*command, "-m", "imgcls", *forwarded], check=False).returncode


@app.command("lr-find")
@handled
def lr_find_command(
    config: Annotated[Path | None, typer.Argument(help="The experiment spec (YAML); optional with --from.")] = None,
    *,
    from_run: Annotated[
        Path | None,
        typer.Option("--from", help="A trained run: test its best weights (fastai's unfreeze(); lr_find())."),
    ] = None,
    stage: Annotated[
        int | None,
        typer.Option("--stage", help="The stage whose size and bs to use (default 1, or the run's last).", min=1),
    ] = None,
    set_: SetOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for lr_find.csv/.json/.png (default: runs/<name>-lr_find).")
    ] = None,
    start_lr: Annotated[float, typer.Option("--start-lr", help="First learning rate.")] = 1e-7,
    end_lr: Annotated[float, typer.Option("--end-lr", help="Last learning rate.")] = 10.0,
    num_it: Annotated[int, typer.Option("--num-it", help="Training batches of the exponential schedule.")] = 100,
    unfrozen: Annotated[
        bool, typer.Option("--unfrozen", help="Test the whole network even when training starts frozen.")
    ] = False,
    stop_div: Annotated[
        bool, typer.Option("--stop-div/--no-stop-div", help="Stop once the smoothed loss exceeds 4x its minimum.")
    ] = True,
    quiet: Quiet = False,
) -> None:
    """Learning-rate range test (fastai's lr_find): print the minimum/steep/valley/slide suggestions."""
    from imgcls.commands.lr_find import run_lr_find
    from imgcls.spec import load_spec
    from imgcls.train.lr_find import LRFindOptions

    options = LRFindOptions(start_lr, end_lr, num_it, stop_div, unfrozen)
    if config is None and set_:
        raise SpecError("--set changes a spec file; give one (with --from, the run's weights are used with it)")
    spec = load_spec(config, set_) if config is not None else None
    run_lr_find(spec, out, options, quiet=quiet, from_run=from_run, stage=stage)


@app.command("tune")
@handled
def tune_command(
    config: SpecFile,
    *,
    space: Annotated[
        Path | None, typer.Option("--space", help="A YAML file with the tune section, used instead of the spec's.")
    ] = None,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Study folder (default: runs/<name>-tune).")] = None,
    quiet: Quiet = False,
) -> None:
    """Search hyper-parameters with Optuna: trials of the spec with values from its tune: section."""
    from imgcls.commands.tune import run_tune

    run_tune(config, space, set_, out, quiet=quiet)


@app.command("tta-eval")
@handled
def tta_eval_command(
    run: RunDir,
    *,
    checkpoint: Which = "best",
    n: Annotated[int, typer.Option("-n", "--n", help="Augmented passes (training transforms).")] = 4,
    beta: Annotated[float, typer.Option(help="Weight of the plain pass in the blend.")] = 0.25,
    use_max: Annotated[
        bool, typer.Option("--use-max", help="Blend with the element-wise maximum instead of the mean.")
    ] = False,
    quiet: Quiet = False,
    allow_data_change: AllowDataChange = False,
    trust_spec: TrustSpec = False,
) -> None:
    """Evaluate the validation set plainly and with test-time augmentation; write tta.csv and tta.json."""
    from imgcls.commands.tta import run_tta
    from imgcls.evaluate.load import DataAccess

    run_tta(
        run,
        checkpoint,
        n=n,
        beta=beta,
        use_max=use_max,
        quiet=quiet,
        access=DataAccess(allow_data_change, trust_spec),
    )


@app.command("interpret")
@handled
def interpret_command(
    run: RunDir,
    *,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder to write (default: RUN/interpret).")] = None,
    checkpoint: Which = "best",
    k: Annotated[int, typer.Option("--k", help="Images in the top-losses (or largest-errors) grid.")] = 9,
    min_count: Annotated[
        int, typer.Option("--min-count", help="Least count for a pair to be listed as most confused.")
    ] = 1,
    save_thresholds: Annotated[
        bool,
        typer.Option(
            "--save-thresholds",
            help="Multi-label: save each label's best threshold (by validation F1) to RUN/thresholds.json, "
            "for predict and export.",
        ),
    ] = False,
    quiet: Quiet = False,
    allow_data_change: AllowDataChange = False,
    trust_spec: TrustSpec = False,
) -> None:
    """What the model gets wrong: confusions and top losses, label thresholds, point or value errors; classifiers
    are calibrated on the validation logits (calibration.json, reliability.png)."""
    from imgcls.commands.interpret import run_interpret
    from imgcls.evaluate.load import DataAccess

    run_interpret(
        run,
        checkpoint,
        out,
        k=k,
        min_count=min_count,
        quiet=quiet,
        save_thresholds=save_thresholds,
        access=DataAccess(allow_data_change, trust_spec),
    )


@app.command("show-results")
@handled
def show_results_command(
    run: RunDir,
    *,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="PNG file to write (default: RUN/show_results.png).")
    ] = None,
    checkpoint: Which = "best",
    n: Annotated[int, typer.Option("--n", help="Number of validation images.")] = 9,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Random validation images with the model's prediction next to the truth (fastai's show_results)."""
    from imgcls.commands.show_results import run_show_results

    run_show_results(run, checkpoint, out, n=n, seed=seed, quiet=quiet)


@app.command("predict")
@handled
def predict_command(
    source: Annotated[Path, typer.Argument(help="A run folder (imgcls train) or an export folder (imgcls export).")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and folders (searched recursively).")],
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV file to write.")] = Path("predictions.csv"),
    checkpoint: Which = "best",
    top_k: Annotated[int, typer.Option("--top-k", help="Classes per image, most probable first.")] = 3,
    thresh: Thresh = None,
    bs: Annotated[int, typer.Option("--bs", help="Images per batch.")] = 32,
    tta: Annotated[
        bool, typer.Option("--tta", help="Blend augmented passes with the plain one (fastai's learn.tta).")
    ] = False,
    n: Annotated[int, typer.Option("-n", "--n", help="Augmented passes with --tta.")] = 4,
    beta: Annotated[float, typer.Option(help="Weight of the plain pass in the --tta blend.")] = 0.25,
    use_max: Annotated[bool, typer.Option("--use-max", help="With --tta: the maximum instead of the mean.")] = False,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="Run folders: apply the calibration `imgcls interpret` fitted (RUN/interpret/calibration.json). "
            "An export applies the one it was exported with.",
        ),
    ] = False,
    calibration: CalibrationFile = None,
    min_confidence: Annotated[
        float | None,
        typer.Option(
            "--min-confidence",
            min=0.0,
            max=1.0,
            help="Classifiers: a `label` column that is `unknown` when the top probability is below this. "
            "Multi-label: labels below it are off.",
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Predict image files with the validation transforms; unreadable files are listed, never fatal."""
    from imgcls.commands.predict import PredictOptions, run_predict
    from imgcls.evaluate.predict import FileTTA

    options = PredictOptions(
        checkpoint,
        top_k,
        thresh,
        bs,
        FileTTA(n, beta, use_max) if tta else None,
        quiet,
        calibrate,
        calibration,
        min_confidence,
    )
    run_predict(source, inputs, out, options)


@app.command("export")
@handled
def export_command(
    run: RunDir,
    *,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder to write (default: RUN/export).")] = None,
    checkpoint: Which = "best",
    onnx: Annotated[
        bool, typer.Option("--onnx/--no-onnx", help="Also write model.onnx, checked with onnxruntime.")
    ] = True,
    thresh: Thresh = None,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="Store the calibration `imgcls interpret` fitted (RUN/interpret/calibration.json) in "
            "preprocess.json and in model.onnx's graph.",
        ),
    ] = False,
    calibration: CalibrationFile = None,
    quiet: Quiet = False,
) -> None:
    """Write a self-contained inference folder: model.safetensors, preprocess.json and model.onnx."""
    from imgcls.commands.export import ExportOptions, run_export

    run_export(run, checkpoint, out, ExportOptions(onnx, thresh, calibrate, calibration), quiet=quiet)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="imgcls")


if __name__ == "__main__":
    main()
