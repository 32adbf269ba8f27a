"""The capacity study's ladder and elasticity fit (scripts/capacity_study.py), without training."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from nas.cost import cost
from nas.presets import load_preset
from reference import B0
from search_spaces import SPACES

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def study():
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location("capacity_study", SCRIPTS / "capacity_study.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(SCRIPTS))


def test_ladder_members_differ_only_in_size_and_hold_b0(study):
    rungs = study.ladder_specs()
    space = SPACES["mnasnet-b0"]
    b0 = load_preset("efficientnet-b0")
    assert [s.stages for _, s in rungs].count(b0.stages) == 1  # B0 itself is a rung
    for label, spec in rungs:
        c = space.encode(spec)  # a member of the space
        f, layers = float(label.split("x")[1].split(",")[0]), int(label.split("layers ")[1])
        # one multiplier and one delta for every stage (encode prefers 1.0 / 0 where they round alike)
        assert {c[f"s{i}_filters"] for i in range(1, 8)} <= {f, 1.0}
        assert {c[f"s{i}_layers"] for i in range(1, 8)} <= {layers, 0}
        assert [st.repeats for st in spec.stages] == [max(1, st.repeats + layers) for st in b0.stages]
        assert all(c[f"s{i}_{k}"] == space.encode(b0)[f"s{i}_{k}"] for i in range(1, 8) for k in ("op", "kernel", "se"))
    flops = sorted(cost(s).flops for _, s in rungs)
    assert flops[0] < 0.6 * B0.flops < flops[-1] / 2  # the ladder spans well below and above B0


def test_elasticity_recovers_a_known_power_law(study):
    flops = np.array([2e8, 3e8, 4e8, 6e8, 9e8])
    fit = study.elasticity(flops, 0.6 * (flops / 4e8) ** 0.07, np.random.default_rng(0))
    assert fit["elasticity"] == pytest.approx(0.07, abs=1e-9)
    assert fit["relative_gain_per_doubling"] == pytest.approx(2 ** 0.07 - 1)
    assert fit["ci90"][0] == pytest.approx(0.07, abs=1e-6) and fit["ci90"][1] == pytest.approx(0.07, abs=1e-6)
    flat = study.elasticity(flops, np.array([0.8, 0.82, 0.79, 0.81, 0.8]), np.random.default_rng(0))
    assert abs(flat["elasticity"]) < 0.03 and flat["ci90"][0] < 0 < flat["ci90"][1]
