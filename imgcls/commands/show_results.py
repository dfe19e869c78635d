"""`imgcls show-results`: validation items drawn at random (seeded), as the model saw them, with its prediction next
to the truth (fastai's show_results), for every target kind: classes and labels titled green when right and red
when wrong, values side by side, points drawn both (true o, predicted x)."""

from __future__ import annotations

from pathlib import Path

from imgcls.commands.summary import sample_positions
from imgcls.errors import ImgclsError
from imgcls.evaluate.interpret import validation_report
from imgcls.evaluate.load import load_run
from imgcls.report.console import Console
from imgcls.report.plots import image_grid
from imgcls.targets.base import ShownResult, grid_columns

N_SHOWN = 9
_COLOURS = {True: "green", False: "red", None: "black"}


def _colour(shown: ShownResult) -> str:
    return _COLOURS[shown.correct]


def _suptitle(shown: list[ShownResult]) -> str:
    if any(s.points is not None for s in shown):
        return "true (o) and predicted (x) points"
    if any(s.correct is not None for s in shown):
        return "actual / predicted (green: right, red: wrong)"
    return "actual / predicted"


def run_show_results(
    run_dir: Path, which: str = "best", out: Path | None = None, n: int = N_SHOWN, seed: int = 0, quiet: bool = False
) -> Path:
    """Draw `n` random validation predictions of the run's `which` checkpoint into `out` (RUN/show_results.png)."""
    if n < 1:
        raise ImgclsError(f"--n must be at least 1, got {n}")
    console = Console(quiet)
    loaded = load_run(run_dir, which)
    result = validation_report(loaded, console)
    positions = sample_positions(len(result), n, seed)
    shown = loaded.target.show_results(result, positions)
    images = result.images(positions)
    drawn = [s.points for s in shown if s.points is not None]
    path = out or run_dir / "show_results.png"
    image_grid(
        images,
        [s.title for s in shown],
        path,
        drawn if len(drawn) == len(shown) else None,
        grid_columns(len(images)),
        suptitle=_suptitle(shown),
        title_colours=[_colour(s) for s in shown],
    )
    judged = [s.correct for s in shown if s.correct is not None]
    right = f": {sum(judged)} of {len(judged)} right" if judged else ""
    console.info(
        f"show-results: {len(shown)} of {len(result)} validation items at random (--seed {seed}), "
        f"{loaded.checkpoint.path.name}{right}"
    )
    for position, item in zip(positions, shown, strict=True):
        mark = {True: "right", False: "WRONG", None: ""}[item.correct]
        name = result.names[position]
        text = ", ".join(line for line in item.title.splitlines() if line != Path(name).name)
        console.info(f"  {name}: {text}{'  ' + mark if mark else ''}")
    console.info(f"wrote {path}")
    return path
