"""Optimizer groups, fastai's decoupled weight decay, and freezing that keeps batch norm training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imgcls.models.factory import create_model
from imgcls.spec.train import FitOneCycleStage, ModelSpec, TrainSpec
from imgcls.train.optim import build_optimizer, norm_and_bias_params, set_frozen, set_hypers
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
