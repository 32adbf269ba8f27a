"""One contract suite over every estimator of nas.estimators.ESTIMATORS (as test_samplers.py does for strategies).

Only the public registry is used (``ESTIMATORS``, ``make_estimator``, ``Estimate``), so a new
estimator is checked by registering it.  The contract (nas/estimators/__init__.py's docstring):
``est(spec, report=None) -> Estimate``; a failure (an exception inside, a diverging or
out-of-memory run) is an ``Estimate`` with ``failed=True`` and a one-line ``reason``, never
an exception; the same seed gives the same estimate; ``describe()`` is JSON; and a
misspelled option is an error, not silently dropped.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from nas.benchmarks import BENCHMARKS
from nas.data import load_dataset
from nas.estimators import ESTIMATORS, Estimate, make_estimator
from nas.testing import small_spec

# The estimators that run the network on data.  The lookups of a benchmark table (nas.estimators.benchmark:
# no data, no options but the seed, members of their benchmark only) have their contract in
# tests/test_nas_bench_macro.py.
LOOKUPS = {n for n in ESTIMATORS if n.split(":")[0] in BENCHMARKS}
NAMES = sorted(set(ESTIMATORS) - LOOKUPS)
# What every factory takes; small enough that the training estimator runs in about a second.
OPTIONS = {"resolution": 16, "seed": 0, "batch_size": 16}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def data():
    return load_dataset("sample").subset(64, 32, seed=0)


@pytest.fixture(scope="module")
def spec():
    return small_spec(name="contract")


def check_estimate(e) -> None:
    """The shape every estimate has, successful or not."""
    assert isinstance(e, Estimate)
    assert e.kind in ("proxy", "train")
    assert e.seconds >= 0 and isinstance(e.details, dict)
    if e.failed:
        assert e.score is None
        assert isinstance(e.reason, str) and e.reason.strip() and "\n" not in e.reason, e.reason
    else:
        assert isinstance(e.score, float) and math.isfinite(e.score), e
        assert e.reason is None


def test_registry_has_the_training_estimator_and_every_proxy():
    from nas.proxies import PROXIES

    assert set(ESTIMATORS) == {"train"} | {f"proxy:{p}" for p in PROXIES} | {"nas-bench-macro", "nas-bench-macro:sample"}
    assert LOOKUPS == {"nas-bench-macro", "nas-bench-macro:sample"}
    with pytest.raises(KeyError, match="unknown estimator 'trian'"):
        make_estimator("trian", None)


@pytest.mark.parametrize("name", NAMES)
def test_estimate_is_a_finite_score(name, data, spec):
    e = make_estimator(name, data, **OPTIONS)(spec)
    check_estimate(e)
    assert not e.failed and not e.pruned, e.reason


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_estimate(name, data, spec):
    a = make_estimator(name, data, **OPTIONS)(spec)
    b = make_estimator(name, data, **OPTIONS)(spec)
    assert a.score == b.score and a.failed == b.failed
    est = make_estimator(name, data, **OPTIONS)
    assert est(spec).score == est(spec).score  # an estimator keeps no state between calls that moves its score


@pytest.mark.parametrize("name", NAMES)
def test_describe_is_json_and_names_the_estimator(name, data):
    d = make_estimator(name, data, **OPTIONS).describe()
    assert json.loads(json.dumps(d)) == d
    assert d["name"] == name
    assert d["seed"] == OPTIONS["seed"] and d["resolution"] == OPTIONS["resolution"]


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("DefaultCPUAllocator: not enough memory: you tried to "
                                                               "allocate 1073741824 bytes\n(second line)"),
                                   RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")],
                         ids=["MemoryError", "cpu-allocator", "cuda-oom"])
@pytest.mark.parametrize("name", NAMES)
def test_out_of_memory_is_a_failed_estimate_not_an_exception(name, error, data, spec, monkeypatch):
    def oom(self, x):
        raise error

    # Every convolution runs out of memory; estimators that never run the network are unaffected.
    monkeypatch.setattr(torch.nn.Conv2d, "forward", oom)
    e = make_estimator(name, data, **OPTIONS)(spec)
    check_estimate(e)
    if e.failed:
        assert "memory" in e.reason, e.reason


@pytest.mark.parametrize("name", NAMES)
def test_diverging_network_is_a_failed_estimate_or_a_finite_score(name, data, spec, monkeypatch):
    real = torch.nn.Conv2d.forward

    def diverge(self, x):
        return real(self, x) * float("nan")

    monkeypatch.setattr(torch.nn.Conv2d, "forward", diverge)
    check_estimate(make_estimator(name, data, **OPTIONS)(spec))


@pytest.mark.parametrize("name", NAMES)
def test_an_error_inside_is_a_failed_estimate(name, data, monkeypatch):
    # A spec the network cannot run at this resolution: an input channel mismatch raised inside torch.
    def broken(self, x):
        raise RuntimeError("Given groups=1, weight of size [8, 3, 3, 3], expected input[16, 1, 16, 16] to have "
                           "3 channels, but got 1 channels instead")

    monkeypatch.setattr(torch.nn.Conv2d, "forward", broken)
    check_estimate(make_estimator(name, data, **OPTIONS)(small_spec()))


@pytest.mark.parametrize("name", NAMES)
def test_a_misspelled_option_is_an_error(name, data):
    with pytest.raises((TypeError, ValueError)):
        make_estimator(name, data, resolution=16, seeed=1)
