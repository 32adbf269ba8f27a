"""The analytic cost model: parity with the published numbers, and exact agreement
with fvcore and ``sum(p.numel())`` on presets and on random valid specs.

Golden numbers and their sources are in ``tests/reference.py``:

* B0..B7, mobilenet-v2: torchvision's params and fvcore's FLOPs on torchvision's models;
* mnasnet-b1: torchvision ``mnasnet1_0`` params; its fvcore count is 1280 * 7 * 7 lower
  than ours because it pools globally with ``x.mean``, which fvcore does not count;
* mnasnet-a1 and efficientnet-l2: no torchvision model; the papers' rounded figures
  are checked, and our exact values are pinned as regression numbers.
"""
from __future__ import annotations

import doctest
import random
import subprocess
import sys
import warnings

import pytest
import torch

import nas.cost
import nas.testing
from nas.build import build_model
from nas.cost import conv_out, cost, count_params, fvcore_flops
from nas.presets import load_preset, preset_names
from nas.spec import SpecError, iter_layers
from nas.testing import random_spec
from reference import (B0, B0_FVCORE_BY_OPERATOR, EFFICIENTNET, EFFICIENTNET_L2_PAPER_PARAMS_M,
                       EFFICIENTNET_L2_REGRESSION, MNASNET1_0, MNASNET1_0_POOL_FLOPS, MNASNET_A1_CONV_LINEAR_REGRESSION,
                       MNASNET_A1_PAPER_MULT_ADDS_M, MNASNET_A1_PAPER_PARAMS_M, MNASNET_A1_REGRESSION, MOBILENET_V2)

torch.set_num_threads(1)  # small models; other work shares the cores

# name: (resolution, params, fvcore FLOPs at that resolution)
GOLDEN = {
    **EFFICIENTNET,
    "mobilenet-v2": MOBILENET_V2,
    # torchvision mnasnet1_0 under fvcore, plus the global pool it computes with x.mean
    "mnasnet-b1": MNASNET1_0._replace(flops=MNASNET1_0.flops + MNASNET1_0_POOL_FLOPS),
    # regression values (no external exact reference)
    "mnasnet-a1": MNASNET_A1_REGRESSION,
    "efficientnet-l2": EFFICIENTNET_L2_REGRESSION,
}
EXTERNAL = {n for n in GOLDEN if n not in ("mnasnet-a1", "efficientnet-l2")}

# fvcore on the full-resolution model: cheap enough for these (< 1 s each here).
FVCORE_PRESETS = ["efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "efficientnet-b3", "mobilenet-v2",
                  "mnasnet-a1", "mnasnet-b1"]

N_RANDOM = 200
CHUNK = 25


def test_every_preset_has_a_golden_number():
    assert set(GOLDEN) == set(preset_names())
    assert len(EXTERNAL) == 10


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_preset_parity(name):
    res, params, flops = GOLDEN[name]
    s = load_preset(name)
    c = cost(s)
    assert s.resolution == c.resolution == res
    assert (c.params, c.flops) == (params, flops)


def test_mnasnet_b1_differs_from_torchvision_only_by_the_global_pool():
    c = cost(load_preset("mnasnet-b1"))
    head = c.stages[-1]
    assert head.in_resolution == 7
    assert c.flops - MNASNET1_0.flops == 1280 * head.in_resolution ** 2  # mnasnet1_0's x.mean: fvcore counts 0


def test_paper_numbers_for_presets_without_torchvision_model():
    a1 = cost(load_preset("mnasnet-a1"))
    assert round(a1.params / 1e5) / 10 == MNASNET_A1_PAPER_PARAMS_M
    l2 = cost(load_preset("efficientnet-l2"))
    assert round(l2.params / 1e6) == EFFICIENTNET_L2_PAPER_PARAMS_M


def test_mnasnet_a1_multiply_adds_are_the_papers():
    # The paper counts conv and linear multiply-adds only; fvcore also counts BN and pooling.
    by_op = _fvcore_by_operator(load_preset("mnasnet-a1"))
    conv_linear = by_op["conv"] + by_op["linear"]
    assert conv_linear == MNASNET_A1_CONV_LINEAR_REGRESSION
    assert round(conv_linear / 1e6) == MNASNET_A1_PAPER_MULT_ADDS_M
    assert cost(load_preset("mnasnet-a1")).flops_in("conv-linear") == MNASNET_A1_CONV_LINEAR_REGRESSION


def test_conv_linear_convention_is_fvcores_conv_and_linear():
    """The cost model's second convention: fvcore's conv + linear operators only (REFERENCE.md's B0 breakdown)."""
    b0 = cost(load_preset("efficientnet-b0"))
    assert b0.conv_linear_flops == B0_FVCORE_BY_OPERATOR["conv"] + B0_FVCORE_BY_OPERATOR["linear"] == 385_814_752
    assert b0.flops == sum(B0_FVCORE_BY_OPERATOR.values())
    assert sum(r.conv_linear_flops for r in b0.stages) == b0.conv_linear_flops
    for seed in range(30):  # every op, odd sizes, SE, pool skips
        spec = random_spec(random.Random(seed))
        by_op = _fvcore_by_operator(spec)
        assert cost(spec).conv_linear_flops == by_op.get("conv", 0) + by_op.get("linear", 0), seed


def _fvcore_by_operator(spec) -> dict:
    from fvcore.nn import FlopCountAnalysis

    model = build_model(spec).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        a = FlopCountAnalysis(model, torch.zeros(1, spec.in_channels, spec.resolution, spec.resolution))
        a.unsupported_ops_warnings(False)
        a.uncalled_modules_warnings(False)
        return dict(a.by_operator())


@pytest.mark.parametrize("name", FVCORE_PRESETS)
def test_preset_analytic_equals_fvcore_and_numel(name):
    s = load_preset(name)
    model = build_model(s)
    c = cost(s)
    assert count_params(model) == c.params
    assert fvcore_flops(model, s.resolution, s.in_channels) == c.flops


@pytest.mark.slow
def test_b4_analytic_equals_fvcore():
    s = load_preset("efficientnet-b4")
    model = build_model(s)
    assert fvcore_flops(model, s.resolution) == cost(s).flops == GOLDEN["efficientnet-b4"][2]


def test_b0_fvcore_breakdown_matches_reference():
    """Pins fvcore's counting rules (they changed between versions): its breakdown of torchvision's B0."""
    by_op = _fvcore_by_operator(load_preset("efficientnet-b0"))
    assert by_op == B0_FVCORE_BY_OPERATOR
    assert sum(by_op.values()) == B0.flops


@pytest.mark.parametrize("start", range(0, N_RANDOM, CHUNK))
def test_random_specs_analytic_equals_fvcore_and_numel(start):
    mismatches = []
    for seed in range(start, start + CHUNK):
        s = random_spec(random.Random(seed))
        model = build_model(s)
        c = cost(s)
        got = (count_params(model), fvcore_flops(model, s.resolution, s.in_channels))
        if got != (c.params, c.flops):
            mismatches.append((seed, (c.params, c.flops), got, s.resolution, s.short()))
    assert not mismatches


def test_random_specs_at_another_resolution():
    mismatches = []
    for seed in range(1000, 1015):
        s = random_spec(random.Random(seed))
        r = random.Random(seed).choice([1, 3, 9, 15, 40, 57])
        model = build_model(s)
        c = cost(s, r)
        assert c.resolution == r and c.params == cost(s).params
        assert c.flops == cost(s.replace(resolution=r)).flops
        if fvcore_flops(model, r, s.in_channels) != c.flops:
            mismatches.append((seed, r))
    assert not mismatches


def test_random_wide_specs():
    """Wider channels (up to 256), more stages and repeats, 1000 classes: same exactness."""
    mismatches = []
    for seed in range(2000, 2005):
        s = random_spec(random.Random(seed), max_resolution=64, small=False)
        model = build_model(s)
        c = cost(s)
        if (count_params(model), fvcore_flops(model, s.resolution, s.in_channels)) != (c.params, c.flops):
            mismatches.append(seed)
    assert not mismatches


# ---------------------------------------------------------------- the breakdown


@pytest.mark.parametrize("name", ["efficientnet-b0", "mnasnet-a1"])
def test_breakdown_rows_add_up_and_chain(name):
    s = load_preset(name)
    c = cost(s)
    assert [r.name for r in c.stages] == ["stem"] + [f"stages[{i}]" for i in range(len(s.stages))] + ["head"]
    assert sum(r.params for r in c.stages) == c.params
    assert sum(r.flops for r in c.stages) == c.flops
    rows = c.stages
    for prev, row in zip(rows, rows[1:-1]):
        assert row.in_resolution == prev.out_resolution
        assert row.in_channels == prev.out_channels
    assert rows[0].in_resolution == s.resolution and rows[0].out_resolution == conv_out(s.resolution, 2)
    assert rows[-1].in_resolution == rows[-2].out_resolution and rows[-1].out_resolution == 1
    for i, st in enumerate(s.stages):
        row = rows[i + 1]
        assert (row.op, row.kernel, row.repeats, row.out_channels) == (st.op, st.kernel, st.repeats, st.out_channels)
        assert row.out_resolution == conv_out(row.in_resolution, st.stride)


def test_b0_stage_resolutions():
    c = cost(load_preset("efficientnet-b0"))
    assert [(r.in_resolution, r.out_resolution) for r in c.stages] == [
        (224, 112), (112, 112), (112, 56), (56, 28), (28, 14), (14, 14), (14, 7), (7, 7), (7, 1)]


def test_breakdown_matches_fvcore_per_stage():
    """Per-stage rows equal fvcore's per-module counts (not only the total)."""
    from fvcore.nn import FlopCountAnalysis

    s = random_spec(random.Random(7))
    model = build_model(s).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        a = FlopCountAnalysis(model, torch.zeros(1, s.in_channels, s.resolution, s.resolution))
        a.unsupported_ops_warnings(False)
        a.uncalled_modules_warnings(False)
        by_module = a.by_module()
    c = cost(s)
    assert c.stages[0].flops == by_module["stem"]
    for i in range(len(s.stages)):
        assert c.stages[i + 1].flops == by_module[f"stages.{i}"]
        assert c.stages[i + 1].params == sum(p.numel() for p in model.stages[i].parameters())
    assert c.stages[-1].flops == by_module["head"] + by_module["pool"] + by_module["classifier"]


def test_conv_out_is_same_padding_and_ceil_pool():
    for size in range(1, 40):
        for stride in (1, 2):
            x = torch.zeros(1, 1, size, size)
            for k in (1, 3, 5, 7):
                conv = torch.nn.Conv2d(1, 1, k, stride, padding=(k - 1) // 2)
                assert conv(x).shape[-1] == conv_out(size, stride)
            pool = torch.nn.AvgPool2d(stride, stride, ceil_mode=True)
            assert pool(x).shape[-1] == conv_out(size, stride)


@pytest.mark.parametrize("bad", [0, -224, 224.5, True, "224"])
def test_cost_refuses_bad_resolution(bad):
    with pytest.raises(SpecError, match=r"^resolution: must be a positive integer, got "):
        cost(load_preset("efficientnet-b0"), bad)


def test_cost_resolution_accepts_integral_values():
    import numpy as np

    b0 = load_preset("efficientnet-b0")
    assert cost(b0, 320.0).flops == cost(b0, np.int64(320)).flops == cost(b0, 320).flops


def test_cost_to_dict():
    d = cost(load_preset("efficientnet-b0")).to_dict()
    assert (d["params"], d["flops"], len(d["stages"])) == (B0.params, B0.flops, 9)


def test_docstring_example():
    result = doctest.testmod(sys.modules["nas.cost"])  # `nas.cost` is the function (the public API)
    assert result.attempted >= 1 and result.failed == 0
    result = doctest.testmod(nas.testing)
    assert result.attempted >= 1 and result.failed == 0


def test_cost_does_not_need_torch():
    code = ("import sys, nas; c = nas.cost(nas.load_spec('efficientnet-b7')); "
            f"assert c.params == {EFFICIENTNET['efficientnet-b7'].params}, c.params; "
            "assert 'torch' not in sys.modules and 'fvcore' not in sys.modules, 'heavy import'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
