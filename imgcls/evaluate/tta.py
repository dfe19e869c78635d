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

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from imgcls.errors import ImgclsError, TrainingError
from imgcls.evaluate.load import LoadedRun
from imgcls.report.console import Console
from imgcls.targets import Target
from imgcls.train.evaluation import Predictions, evaluate
from imgcls.train.losses import Loss
from imgcls.train.metrics import Metric

BETA = 0.25
N_AUGMENTED = 4


def blend(
    plain: torch.Tensor, augmented: Sequence[torch.Tensor], beta: float = BETA, use_max: bool = False
) -> torch.Tensor:
    """fastai's TTA combination of activated outputs: lerp(mean(augmented), plain, beta), or with use_max the
    element-wise maximum over the plain and every augmented pass."""
    stacked = torch.stack(list(augmented))
    if use_max:
        return torch.maximum(plain, stacked.max(dim=0).values)
    return torch.lerp(stacked.mean(dim=0), plain, beta)


def evaluate_values(
    target: Target, loss: Loss, metrics: list[Metric], values: torch.Tensor, targets: torch.Tensor
) -> dict[str, float]:
    """valid_loss and every metric of the run, from activated outputs (through the inverse activation)."""
    outputs = target.inverse_activation(values)
    row = {"valid_loss": float(loss.per_item(outputs, targets).mean())}
    for metric in metrics:
        row[metric.name] = metric.fn(outputs, targets)
    return row


def check_options(target: Target, n: int, use_max: bool) -> None:
    """At least one augmented pass; --use-max only where the activated outputs are probabilities."""
    if n < 1:
        raise ImgclsError(f"TTA needs at least one augmented pass, got n={n}")
    if use_max and not target.probabilities:
        raise ImgclsError(
            f"--use-max takes the largest probability; {target.kind} outputs are values, not probabilities",
            hint="leave out --use-max to average the passes",
        )


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


def augmented_pass(loaded: LoadedRun, number: int, console: Console | None = None, n: int = 1) -> Predictions:
    """The validation set through the training transforms (without the training-only augmentation policy and
    random erasing), with pass `number`'s own random draws. Spatial
    targets keep the item transform in its validation form (the item frame stays the plain one): a random crop
    that cut a point off would make a prediction no map can repair."""
    pipeline = loaded.pipeline
    batches = pipeline.batches(
        "valid", augment_train=True, random_items=not pipeline.target.spatial, seed_offset=number, tta=True
    )
    return evaluate(loaded.model, batches, loaded.runtime, console, f"augmented pass {number}/{n}")


def tta(
    loaded: LoadedRun,
    n: int = N_AUGMENTED,
    beta: float = BETA,
    use_max: bool = False,
    console: Console | None = None,
) -> TTAResult:
    """The plain and the TTA evaluation of a loaded run on its validation set."""
    target, pipeline = loaded.target, loaded.pipeline
    check_options(target, n, use_max)
    plain = evaluate(loaded.model, pipeline.batches("valid"), loaded.runtime, console, "plain pass")
    if len(plain) == 0:
        raise TrainingError("no validation item could be evaluated", hint="check the split and the image files")
    loss, metrics = pipeline.loss, pipeline.metrics
    augmented: list[torch.Tensor] = []
    passes: list[dict[str, float]] = []
    for number in range(1, n + 1):
        result = augmented_pass(loaded, number, console, n)
        if not torch.equal(result.indices, plain.indices):
            raise TrainingError("an augmented pass saw different validation items than the plain pass")
        values = target.to_frame(target.activation(result.outputs), result.geometry, plain.geometry)
        augmented.append(values)
        passes.append(evaluate_values(target, loss, metrics, values, plain.targets))
    plain_values = target.activation(plain.outputs)
    blended = blend(plain_values, augmented, beta, use_max)
    return TTAResult(
        checkpoint=loaded.checkpoint.path.stem,
        items=len(plain),
        n=n,
        beta=beta,
        use_max=use_max,
        plain=evaluate_values(target, loss, metrics, plain_values, plain.targets),
        tta=evaluate_values(target, loss, metrics, blended, plain.targets),
        passes=passes,
        plain_values=plain_values,
        tta_values=blended,
        targets=plain.targets,
    )


__all__ = ["TTAResult", "augmented_pass", "blend", "check_options", "evaluate_values", "tta"]
