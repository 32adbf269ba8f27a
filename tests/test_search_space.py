"""The MnasNet factorized space: membership of the skeletons, decode/encode round trips, moves."""
from __future__ import annotations

import math
import random

import pytest
from optuna.distributions import CategoricalDistribution

from nas.build import build_model
from nas.cost import cost
from nas.presets import load_preset
from reference import B0
from search_spaces import CHOICES, SPACES, ChoiceError, MnasNetSpace, get_space
from nas.spec import round_filters as _round_channels  # one rule for search spaces and scaling

# The MnasNet spaces (the nas-bench-macro space is tested in tests/test_nas_bench_macro.py)
SPACE_NAMES = [n for n, s in SPACES.items() if isinstance(s, MnasNetSpace)]


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_skeleton_is_a_member(name):
    space = SPACES[name]
    base = load_preset(space.skeleton)
    choices = space.encode(base)
    assert space.decode(choices) == base
    assert all(choices[f"s{i}_filters"] == 1.0 and choices[f"s{i}_layers"] == 0 for i in range(1, 8))


def test_b0_decodes_to_the_preset_exactly():
    space = SPACES["mnasnet-b0"]
    spec = space.decode(space.encode(load_preset("efficientnet-b0")))
    assert spec == load_preset("efficientnet-b0")
    assert spec.stages[0].op == "dwconv" and spec.stages[0].expand_ratio == 1
    assert cost(spec).flops == B0.flops
    assert (spec.resolution, spec.num_classes, spec.activation, spec.dropout) == (224, 1000, "swish", 0.2)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_distributions_are_categorical_and_complete(name):
    space = SPACES[name]
    d = space.distributions()
    assert list(d) == list(space.param_names) and len(d) == 6 * 7
    assert all(isinstance(v, CategoricalDistribution) for v in d.values())
    assert math.prod(len(v.choices) for v in d.values()) == space.size == (4 * 2 * 2 * 3 * 3 * 3) ** 7


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_random_members_round_trip_and_respect_the_skeleton(name):
    space = SPACES[name]
    rng = random.Random(0)
    base = space.base
    for _ in range(100):
        ch = space.sample(rng)
        spec = space.decode(ch)
        assert space.decode(space.encode(spec)) == spec
        for st, b, i in zip(spec.stages, base.stages, range(1, 8)):
            assert st.stride == b.stride and st.repeats >= 1
            assert st.repeats == max(1, b.repeats + ch[f"s{i}_layers"])
            assert st.out_channels % 8 == 0 or st.out_channels == b.out_channels
        assert (spec.stem, spec.head, spec.resolution, spec.bn) == (base.stem, base.head, base.resolution, base.bn)


def test_each_choice_reaches_the_spec():
    space = SPACES["mnasnet-b0"]
    b0 = space.encode(load_preset("efficientnet-b0"))
    st = space.decode({**b0, "s4_op": "conv"}).stages[3]
    assert (st.op, st.expand_ratio) == ("conv", 1)
    st = space.decode({**b0, "s4_op": "mbconv3", "s4_kernel": 5, "s4_se": 0.0, "s4_skip": "pool",
                       "s4_filters": 1.25, "s4_layers": -1}).stages[3]
    assert (st.op, st.expand_ratio, st.kernel, st.se_ratio, st.skip, st.out_channels, st.repeats) == \
        ("mbconv", 3, 5, 0.0, "pool", 104, 2)  # 80 * 1.25 = 100 -> 104


@pytest.mark.parametrize("c, m, expect", [(16, 0.75, 16), (24, 0.75, 24), (40, 0.75, 32), (80, 1.25, 104),
                                          (112, 0.75, 88), (320, 1.25, 400), (192, 1.0, 192)])
def test_round_channels_matches_the_reference_rule(c, m, expect):
    assert _round_channels(c, m) == expect


def test_ambiguous_filters_encode_to_the_multiplier_nearest_one():
    space = SPACES["mnasnet-b0"]
    b0 = space.encode(load_preset("efficientnet-b0"))
    spec = space.decode({**b0, "s1_filters": 0.75})  # 16 * 0.75 rounds back to 16
    assert space.encode(spec)["s1_filters"] == 1.0


def test_bad_choices_and_foreign_specs_are_refused():
    space = SPACES["mnasnet-b0"]
    b0 = space.encode(load_preset("efficientnet-b0"))
    with pytest.raises(ChoiceError, match="s2_kernel"):
        space.decode({**b0, "s2_kernel": 7})
    with pytest.raises(ChoiceError, match="missing"):
        space.decode({k: v for k, v in b0.items() if k != "s3_op"})
    with pytest.raises(ChoiceError, match="unknown"):
        space.decode({**b0, "s9_op": "conv"})
    with pytest.raises(ChoiceError):
        space.encode(load_preset("efficientnet-b1"))  # wider/deeper/other resolution: not in the space
    with pytest.raises(ChoiceError):
        space.encode(load_preset("mobilenet-v2"))  # other skeleton
    with pytest.raises(KeyError, match="unknown search space"):
        get_space("nope")


def test_neighbours_and_mutate_change_exactly_one_choice():
    space = SPACES["mnasnet-b0"]
    rng = random.Random(3)
    ch = space.sample(rng)
    nb = space.neighbours(ch)
    assert len(nb) == 7 * sum(len(v) - 1 for v in CHOICES.values())
    assert all(sum(n[k] != ch[k] for k in ch) == 1 for n in nb)
    for _ in range(20):
        m = space.mutate(ch, rng)
        assert sum(m[k] != ch[k] for k in ch) == 1 and m in nb


def test_sampling_is_seeded():
    space = SPACES["mnasnet-b0"]
    assert space.sample(random.Random(7)) == space.sample(random.Random(7))
    assert space.sample(random.Random(7)) != space.sample(random.Random(8))


def test_a_random_member_builds_and_runs():
    import torch

    space = SPACES["mnasnet-b0"]
    spec = space.decode(space.sample(random.Random(11))).replace(resolution=32, num_classes=10)
    out = build_model(spec).eval()(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 10)
