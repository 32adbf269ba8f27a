"""NAS-Bench-Macro (Su et al., CVPR 2021) as a built-in space and a lookup estimator.

Reference numbers: the table itself (nas/benchmarks/data/, the NAS-Bench-Macro repository's
data/nas-bench-macro_cifar10.json, SHA-256 checked) and the facts measured on it in
../shared/benchmarks/nas-bench-macro/README.md: best 22212220 at 93.127 %, 85,164,544 FLOPs,
1,985,514 params; 00000000 at 45.36 % with 7,713,280 table FLOPs and 7,897,600 under fvcore;
932 members <= 40M table FLOPs, best 91.507 % (11110200 and 11101200); random search's mean
regret 0.692 / 0.469 / 0.354 / 0.260 / 0.184 at 10 / 25 / 50 / 100 / 200 trials.
"""
from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import pytest
import torch

import nas
from nas.benchmarks import BENCHMARKS
from nas.benchmarks.nas_bench_macro import (CHOICES, NotAMember, key_for_spec, load_table, spec_for_key)
from nas.build import build_model
from nas.cost import cost, count_params, fvcore_flops
from nas.testing import conv_linear_macs
from search_spaces import SPACES, ChoiceError, get_space

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
ALL_KEYS = sorted(r.key for r in load_table())
SAMPLE = ["00000000", "22212220", "01201020", "10000001", "21012012", "12121212"]


def test_table_is_the_published_one():
    t = load_table()  # checks the published SHA-256 on the way in
    assert len(t) == 6561 == 3 ** 8 and BENCHMARKS["nas-bench-macro"].load_table() is t
    best = t.best()
    assert round(best.mean_acc, 3) == 93.127 and (best.flops, best.params) == (85_164_544, 1_985_514)
    assert {r.key for r in t if r.mean_acc == best.mean_acc} == {"22212220", "22212202"}  # a tie in the table
    assert round(t["00000000"].mean_acc, 2) == 45.36 and t["00000000"].flops == 7_713_280
    small = [r for r in t if r.flops <= 40e6]
    assert len(small) == 932
    assert round(t.best(lambda r: r.flops <= 40e6).mean_acc, 3) == 91.507
    assert {r.key for r in small if round(r.mean_acc, 3) == 91.507} == {"11110200", "11101200"}
    assert t.rank("22212220") == t.rank("22212202") == 1 and t.rank("00000000") == 6561
    with pytest.raises(NotAMember, match="8 digits"):
        t["3"]


def test_params_and_table_flops_exact_for_all_6561():
    """The cost model (which equals the built modules, tests/test_ops.py) gives the table's params and FLOPs."""
    t = load_table()
    wrong = [k for k in ALL_KEYS if (lambda c: (c.params, c.conv_linear_flops))(cost(spec_for_key(k)))
             != (t[k].params, t[k].flops)]
    assert wrong == []


def test_built_networks_have_the_table_params_for_all_6561():
    """A member's network is the stem, one module per layer (fixed by its position and choice) and the
    head: the three uniform members' built modules give every member's built parameter count."""
    t = load_table()
    layer = {}  # (position, digit) -> parameters of the built module
    fixed = None
    for d in "012":
        model = build_model(spec_for_key(d * 8))
        for pos, m in enumerate(m for stage in model.stages for m in stage):
            layer[pos, d] = count_params(m)
        rest = count_params(model) - sum(layer[p, d] for p in range(8))
        assert fixed in (None, rest)
        fixed = rest
    assert [k for k in ALL_KEYS if fixed + sum(layer[p, d] for p, d in enumerate(k)) != t[k].params] == []
    for k in SAMPLE:  # and directly, on a sample
        assert count_params(build_model(spec_for_key(k))) == t[k].params


@pytest.mark.parametrize("key", SAMPLE)
def test_fvcore_and_table_flops_on_a_sample(key):
    spec = spec_for_key(key)
    model = build_model(spec)
    c = cost(spec)
    assert c.flops == fvcore_flops(model, 32)  # our convention, as everywhere
    assert c.conv_linear_flops == conv_linear_macs(model, 32) == load_table()[key].flops  # the table's
    if key == "00000000":
        assert c.flops == 7_897_600  # fvcore on the benchmark's own module (shared README)
    assert c.flops_in("fvcore") == c.flops and c.flops_in("conv-linear") == c.conv_linear_flops


def test_member_structure():
    s = spec_for_key("01201020")
    assert (s.resolution, s.num_classes, s.stem.out_channels, s.stem.stride) == (32, 10, 32, 1)
    assert s.head.out_channels == 1280
    assert [st.stride for st in s.stages] == [2, 1, 2, 1, 1, 2, 1, 1]
    assert [st.out_channels for st in s.stages] == [64, 64, 128, 128, 128, 256, 256, 256]
    assert [st.op for st in s.stages] == ["identity", "mbconv", "mbconv", "identity", "mbconv", "identity",
                                          "mbconv", "identity"]
    assert {(st.kernel, st.expand_ratio) for st in s.stages if st.op == "mbconv"} == {(3, 3), (5, 6)}
    assert all(st.se_ratio == 0 and st.activation == "relu" for st in s.stages)
    names = [type(m).__name__ for stage in build_model(s).stages for m in stage]
    assert names[0] == names[3] == "ProjectingIdentity"
    m = build_model(s)
    assert len(m.stages[0][0].body) == 1 and len(m.stages[3][0].body) == 0  # projects only where the shape changes
    assert nas.Spec.from_json(s.to_json()) == s


def test_keys_round_trip_for_all_members():
    space = get_space("nas-bench-macro")
    assert SPACES["nas-bench-macro"] is space and space.size == 6561
    for k in ALL_KEYS:
        choices = space.from_key(k)
        assert space.key(choices) == k and space.decode(choices) is spec_for_key(k)
        assert key_for_spec(spec_for_key(k)) == k
    spec = spec_for_key("22212220")
    assert space.encode(nas.Spec.from_json(spec.to_json())) == space.from_key("22212220")
    assert space.param_names == tuple(f"layer{i}" for i in range(1, 9))
    assert {n: d.choices for n, d in space.distributions().items()} == {n: CHOICES for n in space.param_names}


@pytest.mark.parametrize("change, where", [
    (lambda s: s.replace(resolution=64), "outside the searchable layers"),
    (lambda s: s.replace(stages=list(s.stages[:7])), "8 one-layer stages"),
    (lambda s: s.replace(stages=[s.stages[0].__class__(**{**s.stages[0].to_dict(), "kernel": 5})] + list(s.stages[1:])),
     r"stages\[0\]"),
    (lambda s: s.replace(stages=[s.stages[0].__class__(**{**s.stages[0].to_dict(), "out_channels": 48})]
                         + list(s.stages[1:])), r"stages\[0\]"),
])
def test_non_members_are_refused_by_name(change, where):
    spec = change(spec_for_key("12121212"))
    with pytest.raises(NotAMember, match=where):
        key_for_spec(spec)
    with pytest.raises(ChoiceError):
        get_space("nas-bench-macro").encode(spec)
    with pytest.raises(ChoiceError):
        get_space("nas-bench-macro").from_key("1212121")


def test_exported_member_builds_the_same_network(tmp_path):
    import importlib.util

    from nas.export import export_python

    spec = spec_for_key("01201020")  # identity projections (stride 2) and plain identities
    torch.manual_seed(0)
    model = build_model(spec).eval()
    path = tmp_path / "member.py"
    path.write_text(export_python(spec, "Member"))
    m = importlib.util.spec_from_file_location("member", path)
    mod = importlib.util.module_from_spec(m)
    m.loader.exec_module(mod)
    theirs = mod.Member().eval()
    theirs.load_state_dict(model.state_dict(), strict=True)
    assert count_params(theirs) == load_table()["01201020"].params
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), theirs(x))
    scripted = torch.jit.script(model)
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))


# ---------------------------------------------------------------- the estimator


def test_estimator_answers_by_lookup():
    from nas.estimators import ESTIMATORS, estimator_options, make_estimator

    assert "nas-bench-macro" in ESTIMATORS and "nas-bench-macro:sample" in ESTIMATORS
    assert estimator_options("nas-bench-macro") == ("seed",)
    t = load_table()
    est = make_estimator("nas-bench-macro", None, seed=0)
    e = est(spec_for_key("22212220"))
    assert e.score == t["22212220"].mean_acc / 100 and e.kind == "benchmark" and not e.failed
    assert e.details == {"benchmark_key": "22212220", "accuracy": e.score}
    refused = est(nas.load_spec("efficientnet-b0"))
    assert refused.failed and refused.reason.startswith("nas-bench-macro:")
    draws = {}
    for seed in range(40):
        s = make_estimator("nas-bench-macro:sample", None, seed=seed)
        for k in ("22212220", "00000000"):
            v = s(spec_for_key(k)).score
            assert v in [a / 100 for a in t[k].test_acc]
            assert v == s(spec_for_key(k)).score  # the same seed and key draw the same training
            draws.setdefault(k, set()).add(v)
    assert all(len(v) == 3 for v in draws.values())  # every training gets drawn across seeds


@pytest.mark.parametrize("name", ["nas-bench-macro", "nas-bench-macro:sample"])
def test_lookup_estimators_keep_the_estimator_contract(name):
    """tests/test_estimator_contract.py's rules, for estimators that need no data and score members only."""
    from nas.estimators import Estimate, make_estimator

    est = make_estimator(name, None, seed=7)
    d = est.describe()
    assert json.loads(json.dumps(d)) == d and d["name"] == name and d["seed"] == 7
    for spec in (spec_for_key("11111111"), nas.load_spec("mobilenet-v2")):
        e = est(spec)
        assert isinstance(e, Estimate) and e.seconds >= 0
        assert e.score == make_estimator(name, None, seed=7)(spec).score
        assert e.failed == (e.score is None) and (e.reason is None) != e.failed
        assert e.failed or 0 < e.score < 1
    with pytest.raises(TypeError, match="seeed"):
        make_estimator(name, None, seeed=1)
    with pytest.raises(TypeError, match="resolution"):
        make_estimator(name, None, resolution=16)


# ---------------------------------------------------------------- search and CLI


def _run_cli(args, tmp_path):
    import subprocess

    return subprocess.run([sys.executable, "-c", "from nas.cli.search import entry; entry()", *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_search_maximizes_accuracy_and_reports_the_key(tmp_path):
    r = _run_cli(["--space", "nas-bench-macro", "--estimator", "nas-bench-macro", "--budget", "12", "--seed", "3",
                  "--output", str(tmp_path / "run"), "--no-progress"], tmp_path)
    assert r.returncode == 0, r.stderr
    t = load_table()
    best = json.loads((tmp_path / "run" / "summary.json").read_text())["best"]
    assert best["accuracy"] == best["reward"] == t[best["benchmark_key"]].mean_acc / 100
    rows = list(csv.DictReader(open(tmp_path / "run" / "trials.csv")))
    assert len(rows) == 12 and all(len(r["benchmark_key"]) == 8 for r in rows)
    assert best["accuracy"] == max(t[r["benchmark_key"]].mean_acc for r in rows) / 100
    for r in rows:
        assert float(r["accuracy"]) == t[r["benchmark_key"]].mean_acc / 100
    spec = nas.Spec.load(tmp_path / "run" / "best.json")
    assert key_for_spec(spec) == best["benchmark_key"]


def test_search_with_a_table_flops_target(tmp_path):
    r = _run_cli(["--space", "nas-bench-macro", "--estimator", "nas-bench-macro", "--budget", "12", "--seed", "0",
                  "--target-flops", "40M", "--flops-convention", "conv-linear", "--constraint", "hard",
                  "--output", str(tmp_path / "run"), "--no-progress"], tmp_path)
    assert r.returncode == 0, r.stderr
    t = load_table()
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["target"] == {"metric": "flops", "value": 40e6, "flops_convention": "conv-linear"}
    for row in csv.DictReader(open(tmp_path / "run" / "trials.csv")):
        assert float(row["flops"]) == t[row["benchmark_key"]].flops  # the table's convention, exactly


@pytest.mark.parametrize("args, message", [
    (["--space", "nas-bench-macro", "--estimator", "proxy:flops"], "give exactly one of --target-flops"),
    (["--space", "nas-bench-macro", "--estimator", "nas-bench-macro", "--target-flops", "40M",
      "--flops-convention", "macs"], "--flops-convention must be one of fvcore, conv-linear"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    r = _run_cli(args + ["--output", str(tmp_path / "run")], tmp_path)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "run").exists()


def test_non_member_trials_fail_by_name(tmp_path):
    """The lookup on another space refuses every member (by name) instead of inventing an accuracy."""
    from nas.estimators import make_estimator
    from nas.search import SearchConfig, StorageConfig, run_search

    cfg = SearchConfig(target=400e6, strategy="random", budget=2, seed=0, space="mnasnet-b0",
                       storage=StorageConfig(url=":memory:"))
    res = run_search(cfg, output=tmp_path, estimator=make_estimator("nas-bench-macro", None))
    assert res.n_complete == 0 and res.stopped_reason
    assert all(r["reason"].startswith("nas-bench-macro:") for r in res.rows)


# ---------------------------------------------------------------- the study's harness


def _study():
    sys.path.insert(0, str(ROOT / "scripts"))
    import nas_bench_macro_study

    return nas_bench_macro_study


@pytest.mark.parametrize("strategy", ["random", "tpe", "evolution", "rl", "nsga2"])
@pytest.mark.parametrize("setting", ["accuracy", "flops40m"])
def test_study_harness_asks_what_nas_search_asks(strategy, setting, tmp_path):
    """The study calls the samplers directly; its trials are the trials of the session nas-search runs."""
    from nas.estimators import make_estimator
    from nas.search import SearchConfig, StorageConfig, run_search

    study = _study()
    s = study.SETTINGS[setting]
    cfg = SearchConfig(target=s["target"], constraint=s["constraint"], strategy=strategy, budget=15, seed=5,
                       space="nas-bench-macro", flops_convention="conv-linear", storage=StorageConfig(url=":memory:"))
    res = run_search(cfg, output=tmp_path, estimator=make_estimator("nas-bench-macro", None, seed=5))
    keys = [r["benchmark_key"] for r in sorted(res.rows, key=lambda r: r["number"]) if r["state"] == "COMPLETE"]
    assert study.search_keys(setting, strategy, 5, 15) == keys


def test_random_search_regret_is_known_exactly():
    """The exact expectation the study's random row is checked against equals the shared README's
    simulation (20,000 runs without replacement) within its simulation error."""
    study = _study()
    t = load_table()
    means = [r.mean_acc for r in t]
    best = max(means)
    for n, simulated in ((10, 0.692), (25, 0.469), (50, 0.354), (100, 0.260), (200, 0.184)):
        assert study.random_expected_regret(means, best, n, replacement=False) == pytest.approx(simulated, abs=0.01)
        # Optuna's RandomSampler draws with replacement: a hair more regret
        assert study.random_expected_regret(means, best, n, True) >= study.random_expected_regret(means, best, n, False)
    rng = random.Random(0)
    sims = [best - max(rng.choice(means) for _ in range(10)) for _ in range(4000)]
    assert sum(sims) / len(sims) == pytest.approx(study.random_expected_regret(means, best, 10, True), abs=0.04)


def test_proxy_study_runs_on_a_tiny_synthetic_cifar_folder(tmp_path):
    """Beyond lookup: the proxies' correlation study reads CIFAR-10 (cifar:DIR) and scores members against
    the table; here on a synthetic 60-image folder (real CIFAR-10 is not on disk), 3 members, one proxy."""
    from test_data import write_cifar10

    sys.path.insert(0, str(ROOT / "scripts"))
    import nas_bench_macro_proxies

    root = write_cifar10(tmp_path / "cifar-10-batches-py", per_batch=12)
    out = tmp_path / "proxies.json"
    assert nas_bench_macro_proxies.main(["--data", f"cifar:{root}", "--estimators", "proxy:grad_norm",
                                         "--every", "2187", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    t = load_table()
    assert res["members"] == 3 and set(res["rows"]) == {"00000000", "10000000", "20000000"}
    assert all(r["mean_acc"] == t[k].mean_acc and isinstance(r["proxy:grad_norm"], float)
               for k, r in res["rows"].items())
    est = res["estimators"]["proxy:grad_norm"]
    assert est["scored"] == 3 and -1 <= est["spearman"] <= 1
    assert nas_bench_macro_proxies.main(["--data", f"cifar:{root}", "--every", "0", "--out", str(out)]) == 2
