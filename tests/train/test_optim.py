"""Optimizer groups, fastai's decoupled weight decay, and freezing that keeps batch norm training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imgcls.models.factory import create_model
from imgcls.spec.train import FitOneCycleStage, ModelSpec, TrainSpec
from imgcls.train.optim import build_optimizer, load_optimizer_state, norm_and_bias_params, set_frozen, set_hypers
from imgcls.train.schedule import stage_phases

TRAIN = TrainSpec(stages=[FitOneCycleStage(schedule="fit_one_cycle")])


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model(ModelSpec(arch="xresnet_tiny"), n_out=3)


def test_no_weight_decay_on_norm_and_bias() -> None:
    model = _model()
    (phase,) = stage_phases(FitOneCycleStage(schedule="fit_one_cycle", lr_max=(1e-4, 1e-2)))
    optimizer = build_optimizer(model, model.param_groups(), TRAIN, phase)
    exempt = norm_and_bias_params(model)
    for group in optimizer.param_groups:
        decays = group["weight_decay"] > 0
        assert all((id(p) in exempt) != decays for p in group["params"])
    assert {g["group"]: g["base_lr"] for g in optimizer.param_groups} == pytest.approx({0: 1e-4, 1: 1e-3, 2: 1e-2})
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["eps"] == 1e-5


def test_set_hypers_scales_each_group_and_sets_beta1() -> None:
    model = _model()
    (phase,) = stage_phases(FitOneCycleStage(schedule="fit_one_cycle", lr_max=(1e-4, 1e-2)))
    optimizer = build_optimizer(model, model.param_groups(), TRAIN, phase)
    set_hypers(optimizer, 0.5, 0.9)
    assert {g["group"]: g["lr"] for g in optimizer.param_groups} == pytest.approx({0: 5e-5, 1: 5e-4, 2: 5e-3})
    assert all(g["betas"] == (0.9, 0.99) for g in optimizer.param_groups)


def test_freezing_leaves_body_weights_unchanged_but_trains_batch_norm() -> None:
    model = _model()
    groups = model.param_groups()
    (phase,) = stage_phases(FitOneCycleStage(schedule="fit_one_cycle", freeze=True, lr_max=1e-2))
    set_frozen(model, groups, frozen=True, train_bn=True)
    optimizer = build_optimizer(model, groups, TRAIN, phase)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    for _ in range(3):
        loss = model(torch.randn(4, 3, 32, 32)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    norms = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    body = {id(p) for p in groups[0] + groups[1]}
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param)
        if id(param) in body and id(param) not in norms:
            assert not changed, name
        elif id(param) in norms or name.startswith("head"):
            assert changed, name
    set_frozen(model, groups, frozen=False, train_bn=True)
    assert all(p.requires_grad for p in model.parameters())


def test_sgd_weight_decay_is_decoupled() -> None:
    layer = nn.Linear(2, 2, bias=False)
    nn.init.ones_(layer.weight)
    group = [list(layer.parameters())]
    spec = TRAIN.model_copy(update={"optimizer": "sgd", "wd": 0.1})
    (phase,) = stage_phases(FitOneCycleStage(schedule="fit_one_cycle", lr_max=0.5))
    optimizer = build_optimizer(layer, group, spec, phase)
    set_hypers(optimizer, 1.0, 0.0)
    layer.weight.grad = torch.zeros_like(layer.weight)
    optimizer.step()
    assert torch.allclose(layer.weight, torch.full((2, 2), 1 - 0.5 * 0.1))  # p *= 1 - lr * wd, gradient 0


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_fused_step_on_the_cpu_matches_the_foreach_step(name: str) -> None:
    """Both optimizers run fused on the CPU; 20 steps land where the unfused foreach steps land (fp32 rounding)."""
    spec = TRAIN.model_copy(update={"optimizer": name, "wd": 0.01})
    (phase,) = stage_phases(FitOneCycleStage(schedule="fit_one_cycle", lr_max=1e-2))
    fused_model, plain_model = _model(), _model()
    fused = build_optimizer(fused_model, fused_model.param_groups(), spec, phase)
    assert fused.defaults["fused"] is True
    plain = build_optimizer(plain_model, plain_model.param_groups(), spec, phase)
    for group in plain.param_groups:
        group["fused"], group["foreach"] = False, True
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        grads = [torch.randn(p.shape, generator=generator) for p in fused_model.parameters()]
        for optimizer, model in ((fused, fused_model), (plain, plain_model)):
            set_hypers(optimizer, 1.0, 0.9)
            for param, grad in zip(model.parameters(), grads, strict=True):
                param.grad = grad.clone()
            optimizer.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_loaded_state_is_laid_out_like_channels_last_weights() -> None:
    """A checkpoint's contiguous moments, loaded for channels_last weights, continue the fused step exactly."""
    model = _model().to(memory_format=torch.channels_last)
    (phase,) = stage_phases(FitOneCycleStage(schedule="fit_one_cycle", lr_max=1e-2))
    first = build_optimizer(model, model.param_groups(), TRAIN, phase)
    generator = torch.Generator().manual_seed(0)
    for param in model.parameters():
        param.grad = torch.empty_like(param).copy_(torch.randn(param.shape, generator=generator))
    first.step()
    packed = first.state_dict()  # its inner dicts are the optimizer's own: copy, as a checkpoint gives them back
    state = {index: {k: v.contiguous().clone() for k, v in kept.items()} for index, kept in packed["state"].items()}
    saved = {"state": state, "param_groups": packed["param_groups"]}
    twin = _model().to(memory_format=torch.channels_last)
    twin.load_state_dict(model.state_dict())
    second = build_optimizer(twin, twin.param_groups(), TRAIN, phase)
    load_optimizer_state(second, saved)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        b.grad = a.grad.clone()
    first.step()
    second.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)
