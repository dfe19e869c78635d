"""`imgcls tta-eval`: test-time augmentation as fastai's `Learner.tta` does it, next to the plain evaluation.

n passes over the validation set with the training transforms (each pass with its own seed, so its own random
crops, flips, rotations, warps and lighting), one plain pass with the validation transforms, then on the
activated outputs (softmax, sigmoid, or the values themselves):

    tta = (1 - beta) * mean(augmented) + beta * plain          (beta = 0.25)
    tta = max(plain, max(augmented))                           (use_max)

Point models: an augmented pass moves the geometry, so each pass keeps the item transform in validation mode (the
item frame is the plain one) and only the batch transform is random; each prediction is then carried back through
the sampling map that produced it, and forward through the plain pass's map, before it is averaged. Random item
crops would need their windows as well, and a crop that cuts the point off makes a prediction no map can repair.

Metrics and a valid_loss are computed from the blended values through the inverse of the activation (log for
softmax, logit for sigmoid), so the run's own loss and metric functions apply unchanged: the loss becomes the NLL
of the blended class probabilities, the binary cross-entropy of the blended label probabilities, or the MSE of the
blended points. The plain column goes through the same path and equals the run's own numbers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from imgcls.errors import ImgclsError, TrainingError
from imgcls.evaluate.load import LoadedRun, load_run, valid_loader, validation_data
from imgcls.evaluate.passes import Pass, as_points, between_frames, geometry_pass
from imgcls.report.console import Console
from imgcls.train.losses import Loss

BETA = 0.25
N_AUGMENTED = 4
_LOG_FLOOR = torch.finfo(torch.float32).tiny
_LOGIT_EPS = 1e-7


def blend(
    plain: torch.Tensor, augmented: Sequence[torch.Tensor], beta: float = BETA, use_max: bool = False
) -> torch.Tensor:
    """fastai's TTA combination of activated outputs: lerp(mean(augmented), plain, beta), or with use_max the
    element-wise maximum over the plain and every augmented pass."""
    stacked = torch.stack(list(augmented))
    if use_max:
        return torch.maximum(plain, stacked.max(dim=0).values)
    return torch.lerp(stacked.mean(dim=0), plain, beta)


def inverse_activation(loss: Loss, values: torch.Tensor) -> torch.Tensor:
    """Activated outputs -> outputs that the loss and metrics accept and that activate back to `values`:
    log-probabilities for softmax (softmax(log p) = p when p sums to 1), logits for sigmoid, values as they are."""
    if loss.name == "bce_with_logits":
        clamped = values.clamp(_LOGIT_EPS, 1 - _LOGIT_EPS)
        return torch.log(clamped / (1 - clamped))
    if loss.name in ("cross_entropy", "label_smoothing_cross_entropy"):
        return torch.log(values.clamp(min=_LOG_FLOOR))
    return values


def evaluate_values(loaded: LoadedRun, values: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """valid_loss and every metric of the run, from activated outputs."""
    outputs = inverse_activation(loaded.loss, values)
    row = {"valid_loss": float(loaded.loss.per_item(outputs, targets).mean())}
    for metric in loaded.metrics:
        row[metric.name] = metric.fn(outputs, targets)
    return row


@dataclass
class TTAResult:
    checkpoint: str
    items: int
    n: int
    beta: float
    use_max: bool
    plain: dict[str, float]
    tta: dict[str, float]
    passes: list[dict[str, float]] = field(default_factory=list)  # each augmented pass on its own
    plain_values: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    tta_values: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    targets: torch.Tensor = field(default_factory=lambda: torch.zeros(0))


def _in_plain_frame(loaded: LoadedRun, augmented: Pass, plain: Pass) -> torch.Tensor:
    """Activated outputs of an augmented pass, point predictions carried into the plain pass's frame."""
    values = loaded.loss.activation(augmented.outputs)
    if loaded.info.kind != "point":
        return values
    moved = between_frames(as_points(values), augmented.geometry, plain.geometry)
    return moved.reshape(values.shape)


def tta(
    loaded: LoadedRun,
    n: int = N_AUGMENTED,
    beta: float = BETA,
    use_max: bool = False,
    console: Console | None = None,
) -> TTAResult:
    """The plain and the TTA evaluation of a loaded run on its validation set."""
    if n < 1:
        raise ImgclsError(f"TTA needs at least one augmented pass, got n={n}")
    points = loaded.info.kind == "point"
    if use_max and loaded.info.kind not in ("category", "multi_category"):
        raise ImgclsError(
            f"--use-max takes the largest probability; {loaded.info.kind} outputs are values, not probabilities",
            hint="leave out --use-max to average the passes",
        )
    data = validation_data(loaded)
    model, runtime = loaded.model, loaded.runtime
    plain = geometry_pass(model, valid_loader(loaded, data), runtime, console, "plain pass")
    if len(plain) == 0:
        raise TrainingError("no validation item could be evaluated", hint="check the split and the image files")
    augmented: list[torch.Tensor] = []
    passes: list[dict[str, float]] = []
    for number in range(1, n + 1):
        loader = valid_loader(loaded, data, train_tfms=True, seed_offset=number, item_train=not points)
        result = geometry_pass(model, loader, runtime, console, f"augmented pass {number}/{n}")
        if not torch.equal(result.indices, plain.indices):
            raise TrainingError("an augmented pass saw different validation items than the plain pass")
        values = _in_plain_frame(loaded, result, plain)
        augmented.append(values)
        passes.append(evaluate_values(loaded, values, plain.targets))
    plain_values = loaded.loss.activation(plain.outputs)
    blended = blend(plain_values, augmented, beta, use_max)
    return TTAResult(
        checkpoint=loaded.checkpoint.path.stem,
        items=len(plain),
        n=n,
        beta=beta,
        use_max=use_max,
        plain=evaluate_values(loaded, plain_values, plain.targets),
        tta=evaluate_values(loaded, blended, plain.targets),
        passes=passes,
        plain_values=plain_values,
        tta_values=blended,
        targets=plain.targets,
    )


def write_tta(result: TTAResult, folder: Path) -> list[Path]:
    rows = [{"metric": name, "plain": result.plain[name], "tta": result.tta[name]} for name in result.plain]
    pd.DataFrame(rows).to_csv(folder / "tta.csv", index=False, float_format="%.6g")
    summary = {
        "checkpoint": result.checkpoint,
        "items": result.items,
        "n_augmented": result.n,
        "beta": None if result.use_max else result.beta,
        "use_max": result.use_max,
        "plain": result.plain,
        "tta": result.tta,
        "augmented_passes": result.passes,
    }
    (folder / "tta.json").write_text(json.dumps(summary, indent=2) + "\n")
    return [folder / "tta.csv", folder / "tta.json"]


def run_tta(
    run_dir: Path,
    which: str = "best",
    n: int = N_AUGMENTED,
    beta: float = BETA,
    use_max: bool = False,
    quiet: bool = False,
) -> TTAResult:
    """`imgcls tta-eval`: print the plain and TTA metrics side by side; write tta.csv and tta.json."""
    console = Console(quiet)
    loaded = load_run(run_dir, which)
    result = tta(loaded, n, beta, use_max, console)
    how = "max(plain, max(augmented))" if use_max else f"{1 - beta:g} * mean(augmented) + {beta:g} * plain"
    console.info(
        f"TTA on {result.items} validation items, {result.checkpoint} checkpoint: {n} augmented pass(es) with the "
        f"training transforms + 1 plain pass; {how}"
    )
    console.info(f"{'metric':<16}{'plain':>10}{'tta':>10}{'change':>10}")
    for name in result.plain:
        before, after = result.plain[name], result.tta[name]
        console.info(f"{name:<16}{before:>10.4f}{after:>10.4f}{after - before:>+10.4f}")
    written = write_tta(result, run_dir)
    console.info(f"wrote {', '.join(str(p) for p in written)}")
    return result


__all__ = ["TTAResult", "blend", "evaluate_values", "inverse_activation", "run_tta", "tta"]
