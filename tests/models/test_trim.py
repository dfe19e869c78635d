"""Trimmed convolutions: the same outputs and gradients as Conv2d, from fewer kernel taps on small maps."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from imgcls.models.factory import create_model
from imgcls.models.trim import TrimmedConv2d, trim_padding_taps, used_taps
from imgcls.spec.train import ModelSpec


def test_used_taps_on_known_maps() -> None:
    assert used_taps(1, 3, 1, 1) == (1, 1)  # a 3x3 kernel on a 1x1 map: the centre only
    assert used_taps(2, 3, 2, 1) == (1, 2)  # stride 2 on 2x2: one output, it reads rows 0 and 1
    assert used_taps(1, 7, 2, 3) == (3, 3)
    assert used_taps(2, 3, 1, 1) is None  # every tap meets data for some output
    assert used_taps(28, 3, 1, 1) is None
    assert used_taps(4, 3, 2, 1) is None


# Every map, kernel, stride and padding with at least one output on a map of `size` rows and size + 1 columns.
CASES = [c for c in itertools.product([1, 2, 3, 5], [2, 3, 5, 7], [1, 2], [0, 1, 2, 3]) if c[0] + 2 * c[3] >= c[1]]


@pytest.mark.parametrize(("size", "kernel", "stride", "padding"), CASES)
def test_trimmed_conv_equals_conv2d(size: int, kernel: int, stride: int, padding: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, kernel, stride, padding, bias=True)
    trimmed = TrimmedConv2d.like(conv)
    assert trimmed.weight is conv.weight and trimmed.bias is conv.bias
    x = torch.randn(3, 4, size, size + 1, requires_grad=True)  # rows and columns trim differently
    expected = conv(x)
    grads = torch.autograd.grad(expected.square().sum(), [x, conv.weight, conv.bias])
    got = trimmed(x)
    got_grads = torch.autograd.grad(got.square().sum(), [x, trimmed.weight, trimmed.bias])
    torch.testing.assert_close(got, expected)
    for a, b in zip(got_grads, grads, strict=True):
        torch.testing.assert_close(a, b)  # taps that only meet padding get a zero gradient either way


def test_trimming_a_model_keeps_its_parameters_state_dict_and_outputs() -> None:
    torch.manual_seed(0)
    model = create_model(ModelSpec(arch="xresnet18", pretrained=False), n_out=10).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is TrimmedConv2d for m in convs if m.kernel_size != (1, 1))
    plain = _untrimmed(create_model(ModelSpec(arch="xresnet18", pretrained=False), n_out=10).eval())
    assert plain.state_dict().keys() == model.state_dict().keys()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 28, 28)  # the last stage sees a 1x1 map: trimmed there
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), rtol=1e-5, atol=1e-5)
    grouped = {id(p) for group in model.param_groups() for p in group}
    assert grouped == {id(p) for p in model.parameters()}


def _untrimmed(model: nn.Module) -> nn.Module:
    """The model with plain Conv2d layers again (fresh weights: the test loads the trimmed model's)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is TrimmedConv2d:
                c = child
                kwargs = {"groups": c.groups, "bias": c.bias is not None}
                setattr(
                    module, name, nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, **kwargs)
                )
    return model


def test_subclasses_and_dilated_convs_are_left_alone() -> None:
    class Custom(nn.Conv2d):
        pass

    model = nn.Sequential(Custom(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=2, dilation=2), nn.Conv2d(3, 3, 1))
    trim_padding_taps(model)
    assert [type(m) for m in model] == [Custom, nn.Conv2d, nn.Conv2d]
