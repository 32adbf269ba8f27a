"""Training-free proxies (nas.proxies): one contract suite over the whole registry."""
from __future__ import annotations

import math

import pytest
import torch

import nas.build
from nas.build import build_model
from nas.cost import cost
from nas.data import load_dataset
from nas.presets import load_preset
from nas.proxies import ANALYTIC, PROXIES, ProxyResult, naswot, score_proxies, score_proxy, synflow
from nas.spec import Spec
from nas.testing import small_spec


def spec_with(activation="swish", skip="identity", op="mbconv", se=0.25, name="s") -> Spec:
    return small_spec(op=op, activation=activation, skip=skip, se_ratio=se, name=name, dropout=0.2,
                      drop_connect_rate=0.2)


SPECS = {
    "swish-identity": spec_with(),
    "relu-pool": spec_with(activation="relu", skip="pool"),
    "relu6-none-nose": spec_with(activation="relu6", skip="none", se=0.0),
    "conv-pool": spec_with(op="conv", skip="pool"),
    "dwconv-swish": spec_with(op="dwconv"),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def data():
    return load_dataset("sample").subset(200, 50, seed=0)


@pytest.mark.parametrize("name", sorted(PROXIES))
@pytest.mark.parametrize("spec_key", sorted(SPECS))
def test_every_proxy_returns_a_finite_float(data, name, spec_key):
    v = score_proxy(name, SPECS[spec_key], data, resolution=16, batch_size=16)
    assert isinstance(v, float) and math.isfinite(v)


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_proxies_are_deterministic(data, name):
    a = score_proxy(name, SPECS["swish-identity"], data, resolution=16, batch_size=16, seed=1)
    b = score_proxy(name, SPECS["swish-identity"], data, resolution=16, batch_size=16, seed=1)
    assert a == b


def test_registry_contract(data):
    assert {"synflow", "naswot", "grad_norm", "snip", "params", "flops"} <= set(PROXIES)
    assert set(ANALYTIC) <= set(PROXIES)
    # The registry's contract, called directly (score_proxy's float() would hide a tensor or numpy
    # return): fn(model, x, y) on a freshly built model gives a finite Python float.
    spec = SPECS["swish-identity"].replace(num_classes=10)
    x, y = data.batch("train", batch_size=4, resolution=16, channels=3)
    for name, fn in PROXIES.items():
        torch.manual_seed(0)
        v = fn(build_model(spec), x, y)
        assert type(v) is float and math.isfinite(v), (name, v)


def test_baselines_come_from_the_cost_model_without_a_model(data, monkeypatch):
    def no_build(spec):
        raise AssertionError("params/flops must not build a model")

    monkeypatch.setattr(nas.build, "build_model", no_build)
    spec = load_preset("efficientnet-b0")
    c = cost(spec.replace(num_classes=10), 32)
    assert score_proxy("params", spec, data, resolution=32) == float(c.params)
    assert score_proxy("flops", spec, data, resolution=32) == float(c.flops)


def test_model_baselines_agree_with_the_analytic_ones(data):
    spec = SPECS["relu-pool"].replace(num_classes=10)
    model = build_model(spec)
    x, y = data.batch("train", batch_size=4, resolution=16, channels=3)
    assert PROXIES["params"](model, x, y) == float(cost(spec, 16).params)
    assert PROXIES["flops"](model, x, y) == float(cost(spec, 16).flops)


def test_score_proxies_times_each_estimate(data):
    res = score_proxies(["naswot", "params"], SPECS["swish-identity"], data, resolution=16, batch_size=8)
    assert list(res) == ["naswot", "params"]
    for name, r in res.items():
        assert isinstance(r, ProxyResult) and r.name == name and r.seconds >= 0
        assert r.to_dict()["value"] == r.value


def test_unknown_proxy(data):
    with pytest.raises(ValueError, match="unknown proxy"):
        score_proxy("jacob", SPECS["swish-identity"], data)


def test_synflow_is_a_log_and_survives_float64_overflow(data):
    spec = spec_with(activation="relu", skip="none", se=0.0).replace(num_classes=10)
    x, y = data.batch("train", batch_size=2, resolution=16, channels=3)
    torch.manual_seed(0)
    base = synflow(build_model(spec), x, y)
    assert 0 < base < 700  # a log: the raw sum would be e**base
    torch.manual_seed(0)
    huge = build_model(spec)
    with torch.no_grad():
        for m in huge.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(1e30)  # 12 layers x 1e30: the plain float64 sum overflows
    n_layers = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in huge.modules())
    v = synflow(huge, x, y)
    # a plain ReLU chain is homogeneous in every layer: the rescaled score is exact
    assert v == pytest.approx(base + n_layers * 30 * math.log(10), rel=1e-9)


def test_synflow_does_not_depend_on_the_data(data):
    spec = SPECS["swish-identity"]
    a = score_proxy("synflow", spec, data, resolution=16, batch_size=8, seed=0)
    other = load_dataset("sample").subset(100, 10, seed=5)
    assert score_proxy("synflow", spec, other, resolution=16, batch_size=8, seed=0) == a


def test_naswot_rewards_distinguishing_inputs(data):
    spec = SPECS["relu-pool"].replace(num_classes=10)
    x, y = data.batch("train", batch_size=16, resolution=16, channels=3)
    torch.manual_seed(0)
    distinct = naswot(build_model(spec), x, y)
    torch.manual_seed(0)
    same = naswot(build_model(spec), x[:1].repeat(16, 1, 1, 1), y)
    assert math.isfinite(distinct) and distinct > same  # identical codes make K singular


def test_grad_based_proxies_use_the_labels(data):
    spec = SPECS["swish-identity"].replace(num_classes=10)
    x, y = data.batch("train", batch_size=16, resolution=16, channels=3)
    scores = []
    for labels in (y, (y + 1) % 10):
        torch.manual_seed(0)
        scores.append(PROXIES["snip"](build_model(spec), x, labels))
    assert scores[0] != scores[1]
