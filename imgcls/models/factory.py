"""Models: a timm body (any architecture, or imgcls's xresnets) with fastai's head, in three parameter groups."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from imgcls.errors import SpecError, TrainingError
from imgcls.models.head import create_head
from imgcls.models.resnet9 import resnet9
from imgcls.models.trim import trim_padding_taps
from imgcls.registry import Registry, did_you_mean
from imgcls.spec.train import ModelSpec


def _xresnet(block: type[nn.Module], layers: list[int], **extra: Any) -> Callable[..., nn.Module]:
    """fastai's xresnet is ResNet-D: a deep 3-conv stem (32, 32, 64) and average-pool downsampling."""

    def build(**kwargs: Any) -> nn.Module:
        options = {"stem_width": 32, "stem_type": "deep", "avg_down": True, **extra, **kwargs}
        return ResNet(block, layers, **options)  # type: ignore[arg-type]

    return build


# imgcls's own architectures (no hub weights); every other name goes to timm.create_model.
ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry(
    "architecture",
    {
        "xresnet18": _xresnet(BasicBlock, [2, 2, 2, 2]),
        "xresnet34": _xresnet(BasicBlock, [3, 4, 6, 3]),
        "xresnet50": _xresnet(Bottleneck, [3, 4, 6, 3]),
        "xresnet101": _xresnet(Bottleneck, [3, 4, 23, 3]),
        # 0.3 M parameters: for tests, the CPU demo and smoke runs.
        "xresnet_tiny": _xresnet(BasicBlock, [1, 1, 1, 1], channels=(16, 32, 64, 128), stem_width=16),
        # for 28-32 px images; model.kwargs: {width: 24} for the fast Fashion-MNIST recipe
        "resnet9": resnet9,
    },
)


class ImageModel(nn.Module):
    """body (feature map) -> head (outputs). `groups` are the parameter groups: early body, late body, head."""

    def __init__(self, body: nn.Module, head: nn.Module, groups: list[list[nn.Parameter]]) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self._groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # type: ignore[no-any-return]

    def param_groups(self) -> list[list[nn.Parameter]]:
        return self._groups


def _load_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """Weights from .safetensors, or from a torch file read with weights_only (never unpickles code)."""
    if not file.is_file():
        raise SpecError(f"model.weights: {file} not found")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SpecError(f"model.weights: cannot read {file}: {err}") from None
    for key in ("state_dict", "model", "state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state  # type: ignore[no-any-return]


def _timm_body(spec: ModelSpec) -> nn.Module:
    kwargs: dict[str, Any] = {"num_classes": 0, "global_pool": "", "in_chans": spec.n_in, **spec.kwargs}
    if spec.weights is not None:
        # timm's own loader reads the local file (safetensors or weights_only torch), drops the classifier and
        # adapts the first convolution to n_in channels.
        overlay = {"file": str(Path(spec.weights).expanduser()), "num_classes": 1000}
        return timm.create_model(spec.arch, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    return timm.create_model(spec.arch, pretrained=spec.pretrained, **kwargs)


def create_body(spec: ModelSpec) -> nn.Module:
    """The architecture without pooling or classifier, with pretrained weights if asked for."""
    if spec.arch in ARCHITECTURES:
        if spec.pretrained:
            raise SpecError(
                f"{spec.arch} has no pretrained weights",
                hint="use model.weights: FILE, or a timm architecture such as resnet50d with pretrained: true",
            )
        body = ARCHITECTURES.get(spec.arch)(num_classes=0, global_pool="", in_chans=spec.n_in, **spec.kwargs)
        if spec.weights is not None:
            state = {
                k: v for k, v in _load_state_dict(Path(spec.weights).expanduser()).items() if not k.startswith("fc.")
            }
            body.load_state_dict(state)
        return body
    if not timm.is_model(spec.arch):
        names = [*ARCHITECTURES.names(), *timm.list_models()]
        raise SpecError(
            f"unknown architecture '{spec.arch}'{did_you_mean(spec.arch, names)}",
            hint="any timm name works (`python -c 'import timm; print(timm.list_models(\"resnet*\"))'`), "
            f"or one of {', '.join(ARCHITECTURES.names())}",
        )
    try:
        return _timm_body(spec)
    except (OSError, RuntimeError, ValueError) as err:
        if not (spec.pretrained or spec.weights):
            raise
        raise TrainingError(
            f"cannot load pretrained weights for {spec.arch}: {type(err).__name__}: {str(err).splitlines()[0]}",
            hint="either connect to the internet once so timm can fetch them from the Hugging Face hub, or "
            "download the weights file and set model.weights: /path/to/file.safetensors "
            "(or set model.pretrained: false to train from scratch)",
        ) from None


def _split_body(body: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Early and late body: cut before the stage at stride 16 (fastai cuts resnets before layer3)."""
    params = list(body.named_parameters())
    feature_info = getattr(body, "feature_info", None)
    cut_module = None
    if feature_info is not None:
        for info in feature_info:
            if info.get("reduction", 0) >= 16:
                cut_module = str(info["module"])
                break
    if cut_module is not None:
        for index, (name, _) in enumerate(params):
            if name.startswith(cut_module + ".") or name == cut_module:
                return [p for _, p in params[:index]], [p for _, p in params[index:]]
    half = len(params) // 2
    return [p for _, p in params[:half]], [p for _, p in params[half:]]


def _num_features(body: nn.Module, n_in: int) -> int:
    features = getattr(body, "num_features", None)
    if isinstance(features, int):
        return features
    with torch.no_grad():
        return int(body.eval()(torch.zeros(1, n_in, 64, 64)).shape[1])


def create_model(spec: ModelSpec, n_out: int) -> ImageModel:
    """Body + fastai head with `n_out` outputs."""
    body = create_body(spec)
    head = create_head(_num_features(body, spec.n_in), n_out, spec.head, spec.y_range)
    early, late = _split_body(body)
    trim_padding_taps(body)  # same parameters, same state dict: the groups above stay valid
    return ImageModel(body, head, [early, late, list(head.parameters())])


def check_outputs(model: nn.Module, n_out: int, where: str) -> None:
    """A checkpoint's head must match the data's number of classes."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    if last.out_features != n_out:
        raise TrainingError(
            f"{where} predicts {last.out_features} outputs but the data has {n_out}",
            hint="the vocab changed since the checkpoint was written; train a new run, or use the same data",
        )
