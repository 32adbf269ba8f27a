"""The materializer: every preset and random specs build, run at any resolution,
train (every parameter gets a gradient), script with TorchScript, and keep natural
module names; the pooling skip has the documented shape and meaning.

Presets run at 64 px so the sweep stays fast (the network works at any
resolution; costs at the published resolution are in test_cost.py).  B7 is built
once (module cache); L2 (480M parameters) is not built here.
"""
from __future__ import annotations

import random
from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F

from nas.blocks import LAYERS, PoolShortcut, StochasticDepth
from nas.build import Network, build_model
from nas.cost import conv_out, cost
from nas.presets import load_preset, preset_names
from nas.spec import Spec, iter_layers
from nas.testing import random_spec, small_spec

torch.set_num_threads(1)

BUILT_PRESETS = [n for n in preset_names() if n != "efficientnet-l2"]
# TorchScript takes 1-3 s per preset; B1..B7 are B0 with more and wider layers of the same
# block types, so B0 stands for them (random specs below cover the other block variants).
JIT_PRESETS = ["efficientnet-b0", "mnasnet-a1", "mnasnet-b1", "mobilenet-v2"]
RES = 64


def deterministic(s: Spec) -> Spec:
    """No dropout, no stochastic depth: train mode becomes deterministic and no branch is zeroed."""
    return s.replace(dropout=0.0, drop_connect_rate=0.0)


@lru_cache(maxsize=None)
def preset_model(name: str) -> tuple[Spec, Network]:
    s = deterministic(load_preset(name)).replace(resolution=RES)
    torch.manual_seed(0)
    return s, build_model(s)


def check_gradients(model: Network, s: Spec, batch: int = 2, *, all_nonzero: bool) -> None:
    torch.manual_seed(1)
    model.train()
    model.zero_grad(set_to_none=True)
    x = torch.randn(batch, s.in_channels, s.resolution, s.resolution)
    y = torch.randint(0, s.num_classes, (batch,))
    F.cross_entropy(model(x), y).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    if all_nonzero:
        zero = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
        assert not zero
    model.zero_grad(set_to_none=True)


def check_script(model: Network, s: Spec) -> None:
    """TorchScript matches eager in train mode (batch statistics: unit-scale outputs) and in eval mode."""
    torch.manual_seed(2)
    x = torch.randn(2, s.in_channels, s.resolution, s.resolution)
    model.train()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        a, b = model(x), scripted(x)
    assert a.abs().max() > 1e-3  # a comparison of near-zero tensors could not fail
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    model.eval()
    scripted.eval()
    with torch.no_grad():
        a, b = model(x), scripted(x)
    scale = float(a.abs().max())
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * max(scale, 1e-30))


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("name", BUILT_PRESETS)
def test_preset_forward_any_resolution(name):
    s, model = preset_model(name)
    model.eval()
    with torch.no_grad():
        for r in (RES, 33):
            out = model(torch.randn(2, 3, r, r))
            assert out.shape == (2, 1000)
            assert torch.isfinite(out).all()
        feats = model.forward_features(torch.randn(1, 3, RES, RES))
    c = cost(s)
    assert feats.shape == (1, s.head.out_channels, c.stages[-1].in_resolution, c.stages[-1].in_resolution)


@pytest.mark.parametrize("name", BUILT_PRESETS)
def test_preset_params_equal_analytic(name):
    s, model = preset_model(name)
    assert sum(p.numel() for p in model.parameters()) == cost(s).params


@pytest.mark.parametrize("name", BUILT_PRESETS)
def test_preset_backward_every_parameter_gets_a_gradient(name):
    s, model = preset_model(name)
    check_gradients(model, s, all_nonzero=True)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", JIT_PRESETS)
def test_preset_torchscript_matches_eager(name):
    s, model = preset_model(name)
    check_script(model, s)


@pytest.mark.parametrize("name", BUILT_PRESETS)
def test_preset_module_names_are_natural(name):
    s, model = preset_model(name)
    assert [n for n, _ in model.named_children()] == ["stem", "stages", "head", "pool", "dropout", "classifier"]
    names = dict(model.named_modules())
    for i, stage in enumerate(s.stages):
        assert len(model.stages[i]) == stage.repeats
        for j in range(stage.repeats):
            assert isinstance(names[f"stages.{i}.{j}"], LAYERS[stage.op])
    assert f"stages.{len(s.stages)}" not in names
    assert isinstance(names["classifier"], torch.nn.Linear) and names["classifier"].out_features == s.num_classes


def test_b0_state_dict_layout():
    _, model = preset_model("efficientnet-b0")
    keys = set(model.state_dict())
    for k in ("stem.0.weight", "stem.1.running_mean", "stages.0.0.body.depthwise.0.weight",
              "stages.0.0.body.se.fc1.weight", "stages.0.0.body.project.0.weight",
              "stages.1.0.body.expand.0.weight", "stages.6.0.body.se.fc2.bias", "head.0.weight",
              "classifier.weight", "classifier.bias"):
        assert k in keys
    assert "stages.0.0.body.expand.0.weight" not in keys  # expand ratio 1: no expand conv


# B0's 16 layers, stated by hand from the paper's Table 1 (repeats 1, 2, 2, 3, 3, 4, 1; widths 16, 24,
# 40, 80, 112, 192, 320 after a 32-wide stem; strides 1, 2, 2, 2, 1, 2, 1 on each stage's first layer)
# and torchvision's stochastic-depth rule (torchvision/models/efficientnet.py, EfficientNet.__init__:
# sd_prob = stochastic_depth_prob * stage_block_id / total_stage_blocks, 0.2 and 16 for B0), applied
# only where the residual branch exists (stride 1 and equal widths: not on a stage's first layer).
B0_IN_CHANNELS = [32, 16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192]
B0_STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
B0_DROP_PATH = [0.0, 0.0, 0.025, 0.0, 0.05, 0.0, 0.075, 0.0875, 0.0, 0.1125, 0.125, 0.0, 0.15, 0.1625, 0.175, 0.0]


def test_b0_layer_plan_and_bn_settings():
    s = load_preset("efficientnet-b0")
    model = build_model(s)
    layers = [m for stage in model.stages for m in stage]
    assert len(layers) == 16
    assert [m.body.depthwise[0].in_channels if "expand" not in m.body._modules else m.body.expand[0].in_channels
            for m in layers] == B0_IN_CHANNELS
    assert [m.body.depthwise[0].stride[0] for m in layers] == B0_STRIDES
    assert [m.drop_path.p for m in layers] == pytest.approx(B0_DROP_PATH, abs=1e-12)
    assert [m.has_skip for m in layers] == [p > 0 for p in B0_DROP_PATH]  # layer 0 has no skip (32 -> 16)
    assert model.dropout.p == 0.2
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)


def test_build_model_accepts_any_source():
    a = build_model("mobilenet-v2")
    b = build_model(load_preset("mobilenet-v2").to_dict())
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    assert isinstance(a.stages[1][0].body.depthwise[2], torch.nn.ReLU6)


# ---------------------------------------------------------------- random specs


def _skip_expected(p) -> bool:
    st = p.stage
    if st.skip == "pool":
        return True
    return st.skip == "identity" and p.stride == 1 and p.in_channels == st.out_channels


@pytest.mark.parametrize("start", range(0, 40, 10))
def test_random_specs_forward_backward(start):
    for seed in range(start, start + 10):
        s = deterministic(random_spec(random.Random(seed)))
        torch.manual_seed(seed)
        model = build_model(s)
        for layer, p in zip([m for stage in model.stages for m in stage], iter_layers(s)):
            assert layer.has_skip == _skip_expected(p)
            assert isinstance(layer.shortcut, PoolShortcut) == (
                p.stage.skip == "pool" and (p.stride == 2 or p.in_channels != p.stage.out_channels))
        model.eval()
        with torch.no_grad():
            for r in (s.resolution, s.resolution + 5):
                out = model(torch.randn(2, s.in_channels, r, r))
                assert out.shape == (2, s.num_classes) and torch.isfinite(out).all()
        check_gradients(model, s, all_nonzero=False)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_random_specs_torchscript_matches_eager():
    for seed in range(100, 108):
        s = deterministic(random_spec(random.Random(seed)))
        torch.manual_seed(seed)
        check_script(build_model(s), s)


def test_stochastic_depth_drops_branches_in_training_only():
    s = load_preset("efficientnet-b0").replace(resolution=32, drop_connect_rate=0.5, dropout=0.0)
    model = build_model(s)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert not torch.allclose(a, b)  # different branches dropped
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))

    sd = StochasticDepth(0.25).train()
    torch.manual_seed(0)
    y = sd(torch.ones(4000, 1, 1, 1))
    kept = y.flatten() != 0
    assert 0.7 < kept.float().mean() < 0.8
    assert torch.allclose(y.flatten()[kept], torch.full_like(y.flatten()[kept], 1 / 0.75))
    assert torch.equal(sd.eval()(torch.ones(3, 1, 1, 1)), torch.ones(3, 1, 1, 1))


# ---------------------------------------------------------------- the pooling skip


def pool_spec(resolution: int, stem_stride: int = 1) -> Spec:
    # Pooling skips that downsample, widen (8 -> 12), keep the width (12 -> 12) and narrow (12 -> 6).
    return small_spec(activation="relu", skip="pool", expand_ratio=2.5, resolution=resolution, stem_stride=stem_stride,
                      num_classes=5, head_channels=16, dropout=0.0, drop_connect_rate=0.0, name="pool",
                      stages=[{"stride": 2, "out_channels": 12, "repeats": 2},
                              {"op": "conv", "expand_ratio": 1, "stride": 2, "out_channels": 12, "repeats": 2},
                              {"op": "dwconv", "expand_ratio": 1, "kernel": 3, "stride": 1, "out_channels": 6,
                               "repeats": 2}])


@pytest.mark.parametrize("resolution", [1, 2, 3, 17, 33, 34])
def test_pool_skip_shapes_with_odd_resolutions(resolution):
    s = pool_spec(resolution)
    model = build_model(s).eval()
    x = torch.randn(1, 3, resolution, resolution)
    hw = resolution
    with torch.no_grad():
        x = model.stem(x)
        for layer, p in zip([m for stage in model.stages for m in stage], iter_layers(s)):
            assert layer.has_skip
            out_hw = conv_out(hw, p.stride)
            short, body = layer.shortcut(x), layer.body(x)
            assert short.shape == body.shape == (1, p.stage.out_channels, out_hw, out_hw)
            x = layer(x)
            hw = out_hw
    assert [type(layer.shortcut).__name__ for stage in model.stages for layer in stage] == [
        "PoolShortcut", "Identity", "PoolShortcut", "Identity", "PoolShortcut", "Identity"]


def test_pool_skip_meaning():
    """Downsampling: average over each stride x stride window, partial windows at an odd edge average
    only the pixels they cover (ceil mode, padding not counted); width change: 1x1 conv + BN."""
    down = PoolShortcut(4, 4, 2, 1e-3, 0.01).eval()
    assert isinstance(down.proj, torch.nn.Identity)
    x = torch.arange(17 * 17, dtype=torch.float32).reshape(1, 1, 17, 17).repeat(1, 4, 1, 1)
    y = down(x)
    assert y.shape == (1, 4, 9, 9)
    assert y[0, 0, 0, 0] == x[0, 0, :2, :2].mean()
    assert y[0, 0, -1, -1] == x[0, 0, 16, 16]  # a 1x1 corner window
    assert y[0, 0, -1, 0] == x[0, 0, 16, :2].mean()

    widen = PoolShortcut(4, 6, 1, 1e-3, 0.01)
    assert isinstance(widen.pool, torch.nn.Identity)
    assert [type(m).__name__ for m in widen.proj] == ["Conv2d", "BatchNorm2d"]
    assert widen.proj[0].kernel_size == (1, 1)
