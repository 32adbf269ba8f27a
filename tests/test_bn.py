"""One BatchNorm recalibration (nas.bn.recalibrate_bn) for training and export.

Expected statistics are computed here directly from the inputs with plain tensor
operations, not by the function under test.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import nas.export
import nas.train
from nas.bn import recalibrate_bn
from nas.build import build_model
from nas.presets import load_spec

torch.set_num_threads(1)


def test_one_function_for_training_and_export():
    assert nas.train.recalibrate_bn is recalibrate_bn
    assert not hasattr(nas.export, "calibrate_bn")


def test_statistics_are_exact_averages_over_the_inputs():
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(4, momentum=0.01)
    model = nn.Sequential(conv, bn)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(5, 3, 6, 6, generator=g) * (i + 1) + i for i in range(3)]  # batches that differ
    recalibrate_bn(model, xs)
    with torch.no_grad():
        ys = [conv(x) for x in xs]
    # cumulative averages of the per-batch statistics (equal batches: the mean is the overall mean)
    mean = torch.stack([y.mean(dim=(0, 2, 3)) for y in ys]).mean(0)
    var = torch.stack([y.transpose(0, 1).reshape(4, -1).var(dim=1, unbiased=True) for y in ys]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-6)
    assert bn.num_batches_tracked == 3
    assert bn.momentum == 0.01 and not model.training and not bn.training


def test_stochastic_depth_and_dropout_stay_off():
    """Same weights with and without stochastic depth must calibrate to the same statistics.

    The exporter's former calibrate_bn ran the whole model in training mode, so the
    drop-connect draws changed the statistics (and the exported weights)."""
    spec = load_spec("efficientnet-b0").replace(resolution=32, num_classes=10, dropout=0.5)
    torch.manual_seed(0)
    dropping = build_model(spec.replace(drop_connect_rate=0.5))
    plain = build_model(spec.replace(drop_connect_rate=0.0))
    plain.load_state_dict(dropping.state_dict())
    assert max(m.p for m in dropping.modules() if type(m).__name__ == "StochasticDepth") > 0.4
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    recalibrate_bn(dropping, [x])
    recalibrate_bn(plain, [x])
    a, b = dropping.state_dict(), plain.state_dict()
    assert [k for k in a if "running" in k]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_the_global_rng_is_left_alone_and_no_gradients():
    model = build_model(load_spec("mobilenet-v2").replace(resolution=16, num_classes=3))
    state = torch.get_rng_state()
    recalibrate_bn(model, [torch.ones(2, 3, 16, 16)])
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in model.parameters())


def test_a_model_without_batchnorm_is_returned_in_eval_mode():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    assert recalibrate_bn(model, [torch.ones(1, 2)]) is model and not model.training


@pytest.mark.parametrize("seed", [0, 3])
def test_initialized_model_is_reproducible(seed):
    spec = load_spec("efficientnet-b0").replace(resolution=32, num_classes=10)
    a = nas.export.initialized_model(spec, seed=seed).state_dict()
    b = nas.export.initialized_model(spec, seed=seed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
