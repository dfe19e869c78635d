"""Models: the fastai head, parameter groups, local weight files, errors that offer a way out."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from imgcls.errors import SpecError, TrainingError
from imgcls.models.factory import check_outputs, create_model
from imgcls.models.head import AdaptiveConcatPool2d, SigmoidRange
from imgcls.spec.train import HeadSpec, ModelSpec


def test_fastai_head_layers() -> None:
    model = create_model(ModelSpec(arch="resnet18"), n_out=2)
    kinds = [type(m).__name__ for m in model.head]
    assert kinds == [
        "AdaptiveConcatPool2d",
        "BatchNorm1d",
        "Dropout",
        "Linear",
        "ReLU",
        "BatchNorm1d",
        "Dropout",
        "Linear",
    ]
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features, m.bias is None) for m in linears] == [(1024, 512, True), (512, 2, True)]
    dropouts = [m.p for m in model.head if isinstance(m, nn.Dropout)]
    assert dropouts == [0.25, 0.5]
    assert float(model.head[1].bias[0].detach()) == pytest.approx(1e-3)


def test_y_range_and_concat_pool() -> None:
    model = create_model(ModelSpec(arch="xresnet_tiny", y_range=(-1, 1)), n_out=4).eval()
    assert isinstance(model.head[-1], SigmoidRange)
    out = model(torch.randn(3, 3, 32, 32) * 100)
    assert out.shape == (3, 4) and out.min() >= -1 and out.max() <= 1
    pooled = AdaptiveConcatPool2d()(torch.arange(8.0).view(1, 2, 2, 2))
    assert pooled.tolist() == [[3.0, 7.0, 1.5, 5.5]]  # max first, then mean


def test_parameter_groups_cut_resnets_before_layer3() -> None:
    model = create_model(ModelSpec(arch="resnet18"), n_out=3)
    early, late, head = model.param_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("body.layer3") or names[id(p)].startswith("body.layer4") for p in late)
    assert any(names[id(p)].startswith("body.layer2") for p in early)
    assert {id(p) for p in head} == {id(p) for p in model.head.parameters()}
    assert sum(map(len, (early, late, head))) == len(list(model.parameters()))


def test_local_weights_file_is_loaded(tmp_path: Path) -> None:
    reference = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = create_model(ModelSpec(arch="resnet18", weights=str(path)), n_out=5)
    assert torch.equal(model.body.conv1.weight, reference.conv1.weight)
    grey = create_model(ModelSpec(arch="resnet18", weights=str(path), n_in=1), n_out=5)
    assert grey.body.conv1.weight.shape[1] == 1
    assert torch.allclose(grey.body.conv1.weight[:, 0], reference.conv1.weight.sum(dim=1), atol=1e-5)


def test_xresnet_local_weights_and_no_hub_weights(tmp_path: Path) -> None:
    source = create_model(ModelSpec(arch="xresnet_tiny"), n_out=2)
    path = tmp_path / "tiny.pth"
    torch.save(source.body.state_dict(), path)
    loaded = create_model(ModelSpec(arch="xresnet_tiny", weights=str(path)), n_out=2)
    assert all(
        torch.equal(a, b)
        for a, b in zip(source.body.state_dict().values(), loaded.body.state_dict().values(), strict=True)
    )
    with pytest.raises(SpecError, match="no pretrained weights"):
        create_model(ModelSpec(arch="xresnet_tiny", pretrained=True), n_out=2)


def test_unknown_arch_suggests() -> None:
    with pytest.raises(SpecError, match="did you mean 'resnet18'"):
        create_model(ModelSpec(arch="resnet81"), n_out=2)


def test_offline_pretrained_error_names_both_ways_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TrainingError) as caught:
        create_model(ModelSpec(arch="resnet18", pretrained=True), n_out=2)
    assert caught.value.hint is not None
    assert "internet" in caught.value.hint and "model.weights" in caught.value.hint


def test_class_count_mismatch() -> None:
    with pytest.raises(TrainingError, match="predicts 3 outputs but the data has 4"):
        check_outputs(create_model(ModelSpec(arch="xresnet_tiny", head=HeadSpec(lin_ftrs=[])), 3), 4, "ckpt")


@pytest.mark.parametrize(("width", "parameters"), [(64, 6_566_848), (24, 924_648)])
def test_resnet9_shapes_and_size(width: int, parameters: int) -> None:
    """ResNet-9's body at 28 px: 8 * width channels on a 3x3 map; its parameter count is the formula's."""
    model = create_model(ModelSpec(arch="resnet9", n_in=1, kwargs={"width": width}), n_out=10).eval()
    body = sum(p.numel() for p in model.body.parameters())
    w = width
    convs = [(1, w), (w, 2 * w), (2 * w, 2 * w), (2 * w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w)] + [(8 * w, 8 * w)] * 2
    expected = sum(9 * a * b + 2 * b for a, b in convs)  # 3x3 kernels without bias, batch norm weight and bias
    assert body == expected == parameters
    assert model.body(torch.zeros(2, 1, 28, 28)).shape == (2, 8 * width, 3, 3)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    early, late, head = model.param_groups()
    assert len(early) and len(late) and sum(map(len, (early, late, head))) == len(list(model.parameters()))
