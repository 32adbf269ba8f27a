"""Property tests (hypothesis): every valid spec builds, runs, round-trips and costs
exactly what fvcore counts; every invalid mutation of a valid spec is refused with
the path of the field that was broken."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.build import build_model
from nas.cost import count_params, cost, fvcore_flops
from nas.spec import Spec, SpecError
from nas.testing import specs

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=30, **SETTINGS)
@given(specs(max_resolution=40))
def test_valid_specs_build_run_and_round_trip(spec: Spec):
    assert Spec.from_json(spec.to_json()) == spec
    assert Spec.from_json(spec.to_json()).to_dict() == spec.to_dict()
    model = build_model(spec).eval()
    with torch.no_grad():
        y = model(torch.randn(2, spec.in_channels, spec.resolution, spec.resolution))
    assert y.shape == (2, spec.num_classes)
    assert torch.isfinite(y).all()
    assert count_params(model) == cost(spec).params


@settings(max_examples=15, **SETTINGS)
@given(specs(max_resolution=32))
def test_analytic_cost_equals_fvcore(spec: Spec):
    model = build_model(spec)
    assert cost(spec).flops == fvcore_flops(model, spec.resolution, spec.in_channels)


# (JSON path inside the document, a value that must be refused at that path)
def _mutations(d: dict):
    n = len(d["stages"])
    for i in range(n):
        p = f"stages[{i}]"
        yield (p, "kernel"), 4
        yield (p, "kernel"), 0
        yield (p, "stride"), 3
        yield (p, "out_channels"), 0
        yield (p, "out_channels"), "16"
        yield (p, "repeats"), 0
        yield (p, "repeats"), True
        yield (p, "se_ratio"), 1.0
        yield (p, "se_ratio"), -0.1
        yield (p, "op"), "bogus"
        yield (p, "skip"), "residual"
        yield (p, "activation"), "gelu"
        yield (p, "expand_ratio"), 0.5
    yield ("", "resolution"), 0
    yield ("", "resolution"), 10**6
    yield ("", "in_channels"), 2.5
    yield ("", "num_classes"), None
    yield ("", "dropout"), 1.0
    yield ("", "activation"), 7
    yield ("", "version"), 99
    yield ("", "format"), "onnx"
    yield ("stem", "stride"), 4
    yield ("stem", "kernel"), 2
    yield ("head", "out_channels"), -1
    yield ("bn", "eps"), 0.0


def _set(d: dict, where: tuple[str, str], value):
    parent, key = where
    target = d
    if parent.startswith("stages["):
        target = d["stages"][int(parent[7:-1])]
    elif parent:
        target = d[parent]
    target[key] = value
    return (f"{parent}.{key}" if parent else key)


@settings(max_examples=40, **SETTINGS)
@given(specs(max_resolution=32), st.data())
def test_invalid_mutations_are_refused_with_their_path(spec: Spec, data):
    base = spec.to_dict()
    muts = list(_mutations(base))
    where, value = data.draw(st.sampled_from(muts))
    doc = copy.deepcopy(base)
    path = _set(doc, where, value)
    with pytest.raises(SpecError) as e:
        Spec.from_dict(doc)
    assert e.value.path == path, (path, str(e.value))
    # The same through JSON text.
    with pytest.raises(SpecError) as e:
        Spec.from_json(json.dumps(doc))
    assert e.value.path == path


@settings(max_examples=25, **SETTINGS)
@given(specs(max_resolution=32), st.data())
def test_removed_or_unknown_fields_are_refused(spec: Spec, data):
    doc = spec.to_dict()
    i = data.draw(st.integers(0, len(doc["stages"]) - 1))
    key = data.draw(st.sampled_from(sorted(doc["stages"][i])))
    del doc["stages"][i][key]
    with pytest.raises(SpecError) as e:
        Spec.from_dict(doc)
    assert e.value.path == f"stages[{i}].{key}"
    assert "missing" in e.value.reason
    doc = spec.to_dict()
    doc["stages"][i]["kernal"] = 3
    with pytest.raises(SpecError) as e:
        Spec.from_dict(doc)
    assert e.value.path == f"stages[{i}].kernal"
