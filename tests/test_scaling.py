"""Compound scaling (scaling.compound), the grid search (scaling.grid) and ``nas-scale``.

Grid tests inject a fake evaluator (no training); the CLI is exercised through
the installed ``nas-scale`` script.  Golden numbers: ``tests/reference.py`` (torchvision
params, fvcore FLOPs of the published family).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from nas.cost import cost
from nas.presets import load_preset
from nas.spec import MAX_REPEATS, SpecError
from scaling.compound import (MAX_PARAMS, PAPER_COEFFICIENTS, PUBLISHED, ScalingError, compound_scale,
                              constraint_value, estimate_params, published_spec, round_filters, round_repeats,
                              scale_spec, scaled_dropout)
from scaling.grid import GridError, grid_points, make_candidates, run_grid_search, write_results

from reference import EFFICIENTNET

B0 = load_preset("efficientnet-b0")

# Coefficient sets for the acceptance check: the paper's, our grid search's best
# (results/scaling/grid.json) and others near the
# constraint.  (alpha = 1.05 is left out on purpose: ceil(1.05 * 1) = 2 doubles
# every one-layer stage, so FLOPs overshoot (a*b^2*g^2)^phi by ~40 % at phi = 1;
# the module docs say so.)
COEFFICIENTS = [PAPER_COEFFICIENTS, (1.0, 1.2, 1.15), (1.1, 1.1, 1.2), (1.3, 1.05, 1.15), (1.0, 1.2, 1.2), (1.0, 1.0, 1.4),
                (1.4, 1.1, 1.1), (1.15, 1.1, 1.15)]


# ---------------------------------------------------------------- published family stays exact


@pytest.mark.parametrize("name", sorted(EFFICIENTNET))
def test_published_members_match_reference_params_and_flops(name):
    spec = published_spec(B0, name) if name != "efficientnet-b0" else B0
    c = cost(spec)
    assert (c.resolution, c.params, c.flops) == EFFICIENTNET[name]
    assert spec == load_preset(name)  # and the bundled preset is the same architecture


def test_published_family_is_not_the_formula():
    # B7 is width 2.0 / depth 3.1 / 600 px; phi = 7 with the paper's coefficients is not
    b7 = PUBLISHED["efficientnet-b7"]
    f = compound_scale(B0, 7)
    m = f.provenance["scaling"]
    assert (round(m["width_multiplier"], 2), round(m["depth_multiplier"], 2)) == (1.95, 3.58)
    assert (b7.width, b7.depth, b7.resolution) == (2.0, 3.1, 600)
    assert f != load_preset("efficientnet-b7")


# ---------------------------------------------------------------- compound rules


@pytest.mark.parametrize("abg", COEFFICIENTS, ids=lambda t: "-".join(map(str, t)))
def test_acceptance_flops_follow_the_constraint(abg):
    f0 = cost(B0).flops
    k = constraint_value(*abg)
    for phi in range(1, 8):
        ratio = cost(compound_scale(B0, phi, *abg)).flops / f0 / k ** phi
        assert 0.75 <= ratio <= 1.25, (phi, ratio)


def test_phi_zero_is_the_base():
    s = compound_scale(B0, 0)
    assert s == B0
    assert {k: v for k, v in s.to_dict().items() if k not in ("name", "provenance")} == \
        {k: v for k, v in B0.to_dict().items() if k not in ("name", "provenance")}
    # even a base off the 4-px resolution grid keeps its resolution
    odd = B0.replace(resolution=226)
    assert compound_scale(odd, 0).resolution == 226


def test_rules_depth_width_resolution_dropout():
    phi = 2.5
    a, b, g = PAPER_COEFFICIENTS
    s = compound_scale(B0, phi)
    for base_stage, stage in zip(B0.stages, s.stages):
        assert stage.repeats == math.ceil(base_stage.repeats * a ** phi)
        assert stage.out_channels == round_filters(base_stage.out_channels, b ** phi)
        assert stage.out_channels % 8 == 0
    assert s.stem.out_channels == round_filters(32, b ** phi)
    assert s.head.out_channels == round_filters(1280, b ** phi)
    target = 224 * g ** phi
    assert s.resolution % 4 == 0 and abs(s.resolution - target) <= 0.05 * target + 4
    assert s.dropout == scaled_dropout(0.2, phi) and 0.2 < s.dropout < 0.5
    assert s.drop_connect_rate == B0.drop_connect_rate == 0.2
    near = compound_scale(B0, phi, resolution_rule="nearest")
    assert near.resolution == 4 * round(target / 4)


def test_dropout_schedule():
    assert scaled_dropout(0.2, 0) == 0.2
    assert scaled_dropout(0.2, 7) == 0.5
    assert scaled_dropout(0.2, 12) == 0.5  # capped
    assert scaled_dropout(0.2, 3.5) == 0.35
    assert scaled_dropout(0.6, 3) == 0.6  # a base above the cap keeps its rate


def test_small_bases_use_one_pixel_steps():
    b16 = B0.replace(resolution=16)
    assert compound_scale(b16, 1, 1.0, 1.0, 1.15, resolution_rule="nearest").resolution == 18
    assert compound_scale(B0, 1, 1.0, 1.0, 1.15, resolution_rule="nearest").resolution == 256


def test_fractional_phi_grows_monotonically():
    flops = [cost(compound_scale(B0, p / 4)).flops for p in range(0, 13)]
    assert flops == sorted(flops) and len(set(flops)) > 8


def test_provenance():
    s = compound_scale(B0, 1.5, 1.2, 1.1, 1.15)
    p = s.provenance["scaling"]
    assert p["base"] == "efficientnet-b0" and p["base_fingerprint"] == B0.fingerprint()
    assert (p["phi"], p["alpha"], p["beta"], p["gamma"]) == (1.5, 1.2, 1.1, 1.15)
    assert p["depth_multiplier"] == pytest.approx(1.2 ** 1.5)
    assert p["width_multiplier"] == pytest.approx(1.1 ** 1.5)
    assert p["resolution_multiplier"] == pytest.approx(1.15 ** 1.5)
    assert s.name == "efficientnet-b0-phi1.5"


@pytest.mark.parametrize("kw", [dict(width=1.3), dict(depth=2.2), dict(width=2.0, depth=3.1), dict(width=4.3, depth=5.3)])
@pytest.mark.parametrize("base", ["efficientnet-b0", "mnasnet-a1", "mobilenet-v2"])
def test_estimate_params_is_exact(base, kw):
    b = load_preset(base)
    assert estimate_params(b, **kw) == cost(scale_spec(b, **kw)).params


@pytest.mark.parametrize("phi", [-1, -0.01, float("nan"), float("inf")])
def test_bad_phi(phi):
    with pytest.raises(ScalingError, match="phi"):
        compound_scale(B0, phi)


@pytest.mark.parametrize("abg", [(0.9, 1.1, 1.15), (1.2, 0.5, 1.15), (1.2, 1.1, 0.99), (1.2, float("nan"), 1.1)])
def test_bad_coefficients(abg):
    with pytest.raises(ScalingError, match="alpha|beta|gamma"):
        compound_scale(B0, 1, *abg)


def test_too_large_is_refused_with_the_estimate():
    with pytest.raises(ScalingError, match=r"about \d\.\d+e\+\d+ parameters.*limit of 2e\+09"):
        compound_scale(B0, 40)
    with pytest.raises(ScalingError, match="far too large"):
        compound_scale(B0, 10_000)
    with pytest.raises(ScalingError, match="parameters"):
        compound_scale(B0, 3, max_params=1e7)
    assert cost(compound_scale(B0, 3, max_params=None)).params < MAX_PARAMS


def test_spec_limits_become_clear_messages():
    # depth 2^6 = 64 -> B0's 4-layer stage needs 256 layers; params stay under the limit
    with pytest.raises(ScalingError, match=f"above the spec limit {MAX_REPEATS}"):
        compound_scale(B0, 6, 2.0, 1.0, 1.0)
    with pytest.raises(ScalingError, match="resolution"):
        compound_scale(B0, 20, 1.0, 1.0, 1.2)
    assert not issubclass(ScalingError, SpecError)  # scaling errors name the request, not a JSON path


def test_reference_rounding_helpers_unchanged():
    assert round_filters(32, 1.0) == 32
    assert [round_filters(c, 1.1) for c in (32, 16, 24, 40, 80, 112, 192, 320, 1280)] == \
        [32, 16, 24, 48, 88, 120, 208, 352, 1408]
    assert [round_repeats(n, 3.1) for n in (1, 2, 3, 4)] == [4, 7, 10, 13]


# ---------------------------------------------------------------- grid


def test_grid_points_satisfy_the_constraint():
    pts = grid_points()
    assert len(pts) == 147  # step 0.05 up to 1.4, tolerance 0.1
    assert all(v >= 1 for p in pts for v in p)
    assert all(abs(constraint_value(*p) - 2) <= 0.2 + 1e-9 for p in pts)
    assert (1.2, 1.1, 1.15) in pts
    tight = grid_points(tolerance=0.02)
    assert set(tight) < set(pts)


@pytest.mark.parametrize("kw", [dict(step=0), dict(step=-0.1), dict(tolerance=-0.1), dict(tolerance=0),
                                dict(max_coef=0.9), dict(step=float("nan"))])
def test_grid_points_bad_input(kw):
    with pytest.raises(GridError):
        grid_points(**kw)


def test_candidates_merge_twins_and_subsample_deterministically():
    b16 = B0.replace(resolution=16)
    pts = grid_points()
    cands, info = make_candidates(b16, pts)
    assert len(cands) == 147 and info["unique"] < 147 and not info["subsampled"]
    for c in cands:
        if c.duplicate_of is not None:
            assert c.spec == cands[c.duplicate_of].spec
    fps = {c.spec.fingerprint() for c in cands}
    assert len(fps) == info["unique"]
    _, sub = make_candidates(b16, pts, max_candidates=6)
    _, again = make_candidates(b16, pts, max_candidates=6)
    assert sub["run"] == again["run"] and len(sub["run"]) == 6 and sub["subsampled"]
    unique = [c.index for c in cands if c.duplicate_of is None]
    assert sub["run"][0] == unique[0] and sub["run"][-1] == unique[-1]


class FakeEvaluator:
    """Accuracy from the architecture (more layers and pixels: better); some candidates fail."""

    def __init__(self, fail=(), raise_on=(), interrupt_on=()):
        self.calls = []
        self.fail, self.raise_on, self.interrupt_on = set(fail), set(raise_on), set(interrupt_on)

    def __call__(self, spec):
        n = len(self.calls)
        self.calls.append(spec.fingerprint())
        if n in self.interrupt_on:
            raise KeyboardInterrupt
        if n in self.raise_on:
            raise RuntimeError("out of memory")
        if n in self.fail:
            return {"accuracy": None, "failed": True, "reason": "loss is nan"}
        return {"accuracy": 0.5 + spec.n_layers / 1000 + spec.resolution / 10000, "failed": False, "seconds": 0.01}


def test_grid_search_picks_best_records_failures_and_resumes(tmp_path):
    b16 = B0.replace(resolution=16)
    ev = FakeEvaluator(fail={1}, raise_on={2})
    r = run_grid_search(b16, ev, output_dir=tmp_path, max_candidates=6, progress=False)
    assert len(ev.calls) == 6 and len(set(ev.calls)) == 6
    trained = [c for c in r.candidates if "duplicate_of" not in c and c["state"] != "SKIPPED"]
    assert sorted(c["state"] for c in trained) == ["COMPLETE"] * 4 + ["FAIL"] * 2
    reasons = sorted(c["reason"] for c in trained if c["state"] == "FAIL")
    assert reasons == ["RuntimeError: out of memory", "loss is nan"]
    ok = [c for c in trained if c["accuracy"] is not None]
    top = max(ok, key=lambda c: c["accuracy"])
    assert (r.best["alpha"], r.best["beta"], r.best["gamma"]) == (top["alpha"], top["beta"], top["gamma"])
    # resume: nothing is trained again (failures are results, not retried)
    ev2 = FakeEvaluator()
    r2 = run_grid_search(b16, ev2, output_dir=tmp_path, max_candidates=6, progress=False)
    assert ev2.calls == [] and r2.best == r.best
    # a larger budget reuses the finished candidates that it keeps
    ev3 = FakeEvaluator()
    r3 = run_grid_search(b16, ev3, output_dir=tmp_path, max_candidates=8, progress=False)
    done_before = {c["fingerprint"] for c in trained}
    assert not done_before & set(ev3.calls)
    assert sum(c["state"] != "SKIPPED" and "duplicate_of" not in c for c in r3.candidates) >= 8


def test_interrupted_candidate_runs_again(tmp_path):
    b16 = B0.replace(resolution=16)
    ev = FakeEvaluator(interrupt_on={2})
    with pytest.raises(KeyboardInterrupt):
        run_grid_search(b16, ev, output_dir=tmp_path, max_candidates=4, progress=False)
    assert len(ev.calls) == 3
    ev2 = FakeEvaluator()
    r = run_grid_search(b16, ev2, output_dir=tmp_path, max_candidates=4, progress=False)
    # the interrupted candidate and the one never started; the two finished ones are not repeated
    assert len(ev2.calls) == 2 and ev.calls[2] in ev2.calls and not set(ev.calls[:2]) & set(ev2.calls)
    assert [c["state"] for c in r.candidates if c["state"] != "SKIPPED" and "duplicate_of" not in c] == ["COMPLETE"] * 4


def test_a_smaller_rerun_trains_exactly_its_own_selection(tmp_path):
    # an interrupted run with 8 picks leaves 5 queued trials; a rerun with 4 picks must not train those
    b16 = B0.replace(resolution=16)
    pts = grid_points()
    cands, info4 = make_candidates(b16, pts, max_candidates=4)
    ev = FakeEvaluator(interrupt_on={3})
    with pytest.raises(KeyboardInterrupt):
        run_grid_search(b16, ev, output_dir=tmp_path, max_candidates=8, progress=False)
    ev2 = FakeEvaluator()
    r = run_grid_search(b16, ev2, output_dir=tmp_path, max_candidates=4, progress=False)
    wanted = {cands[i].spec.fingerprint() for i in info4["run"]}
    assert set(ev2.calls) == wanted - set(ev.calls[:3])
    states = {c["fingerprint"]: c["state"] for c in r.candidates if "duplicate_of" not in c}
    assert all(states[f] == "COMPLETE" for f in wanted)
    ev3 = FakeEvaluator()
    run_grid_search(b16, ev3, output_dir=tmp_path, max_candidates=4, progress=False)
    assert ev3.calls == []


def test_another_budget_is_refused_on_the_same_storage(tmp_path):
    b16 = B0.replace(resolution=16)
    run_grid_search(b16, FakeEvaluator(), output_dir=tmp_path, max_candidates=2, progress=False, budget={"epochs": 1})
    with pytest.raises(GridError, match="another"):
        run_grid_search(b16, FakeEvaluator(), output_dir=tmp_path, max_candidates=2, progress=False,
                        budget={"epochs": 2})


def test_grid_json_and_plot(tmp_path):
    b16 = B0.replace(resolution=16)
    r = run_grid_search(b16, FakeEvaluator(fail={0}), output_dir=tmp_path, max_candidates=3, progress=False)
    paths = write_results(r, tmp_path, command="nas-scale --grid-search")
    d = json.loads((tmp_path / "grid.json").read_text())
    assert d["command"] == "nas-scale --grid-search"
    assert set(d["best"]) >= {"alpha", "beta", "gamma"}
    assert len(d["candidates"]) == 147
    for c in d["candidates"]:
        assert set(c) >= {"alpha", "beta", "gamma", "flops", "params", "accuracy", "state"}
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(paths) == 2


# ---------------------------------------------------------------- CLI (the installed script)


def nas_scale(*args, cwd=None):
    return subprocess.run(["nas-scale", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_phi_to_stdout_and_file(tmp_path):
    p = nas_scale("--phi", "2", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15")
    assert p.returncode == 0, p.stderr
    spec = json.loads(p.stdout)
    assert spec["provenance"]["scaling"]["phi"] == 2 and "--alpha/--beta/--gamma" in p.stderr
    out = tmp_path / "b2.json"
    p = nas_scale("--base", "efficientnet-b0", "--phi", "2", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15",
                  "--output", out)
    assert p.returncode == 0 and p.stdout == ""
    assert json.loads(out.read_text()) == spec


def test_cli_default_coefficients_are_the_papers():
    # without coefficients, --phi scales like EfficientNet (Tan & Le 2019, Sec. 3.3: alpha 1.2, beta 1.1, gamma 1.15),
    # whatever results/scaling/grid.json says
    p = nas_scale("--phi", "1")
    assert p.returncode == 0, p.stderr
    assert "coefficients alpha=1.2 beta=1.1 gamma=1.15 from the paper's" in p.stderr
    assert json.loads(p.stdout)["provenance"]["scaling"]["alpha"] == 1.2


def test_cli_coefficients_from_a_grid_file(tmp_path):
    g = tmp_path / "grid.json"
    g.write_text(json.dumps({"best": {"alpha": 1.0, "beta": 1.2, "gamma": 1.15}}))  # 1.904: within 10 % of 2
    p = nas_scale("--phi", "1", "--coefficients", g)
    assert p.returncode == 0, p.stderr
    assert f"alpha=1 beta=1.2 gamma=1.15 from --coefficients {g}" in p.stderr
    prov = json.loads(p.stdout)["provenance"]["scaling"]
    assert (prov["alpha"], prov["beta"], prov["gamma"]) == (1.0, 1.2, 1.15)


def test_cli_base_from_file_and_json(tmp_path):
    base = tmp_path / "best.json"
    load_preset("mnasnet-a1").save(base)
    p = nas_scale("--base", base, "--phi", "1.5")
    assert p.returncode == 0 and json.loads(p.stdout)["provenance"]["scaling"]["base"] == "mnasnet-a1"
    p = nas_scale("--base", load_preset("mobilenet-v2").to_json(indent=None), "--phi", "0")
    assert p.returncode == 0 and json.loads(p.stdout)["stages"] == json.loads(load_preset("mobilenet-v2").to_json())["stages"]


def test_cli_family(tmp_path):
    out = tmp_path / "fam"
    p = nas_scale("--family", "0-2,3.5", "--output", out, "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15")
    assert p.returncode == 0, p.stderr
    table = json.loads((out / "family.json").read_text())
    assert [m["phi"] for m in table["members"]] == [0, 1, 2, 3.5]
    for m in table["members"]:
        assert json.loads((out / m["file"]).read_text())["resolution"] == m["resolution"]
        assert m["flops_ratio"] / m["expected_ratio"] == pytest.approx(1, abs=0.25)
    assert table["members"][0]["flops_ratio"] == 1.0
    assert "(a*b^2*g^2)^phi" in (out / "family.md").read_text()


def test_cli_published_side_by_side():
    p = nas_scale("--published", "efficientnet-b3")
    assert p.returncode == 0
    assert json.loads(p.stdout) == json.loads(load_preset("efficientnet-b3").to_json())
    assert "not the formula" in p.stderr and "300 px" in p.stderr


@pytest.mark.parametrize("args, needle", [
    (["--phi", "-1"], "phi"),
    (["--phi", "nan"], "finite"),
    (["--phi", "1e6"], "too large"),
    (["--phi", "40"], "parameters"),
    (["--phi", "1", "--alpha", "0.9"], "alpha"),
    (["--phi", "1", "--gamma", "0"], "gamma"),
    (["--phi", "1", "--base", "no-such-preset"], "unknown preset"),
    (["--phi", "1", "--base", '{"format": "nas-spec"}'], ""),
    (["--phi", "1", "--base", "/nonexistent/best.json"], "no such file"),
    (["--family", "0,40"], "parameters"),
    (["--family", "3-1"], "backwards"),
    (["--published", "efficientnet-b9"], "unknown"),
    (["--grid-search", "--tolerance", "0"], "tolerance"),
    (["--grid-search", "--step", "0"], "step"),
    (["--grid-search", "--tolerance", "-1"], "tolerance"),
    (["--grid-search", "--alpha", "1.2"], "drop"),
    (["--grid-search", "--base-resolution", "2"], "too small"),
    (["--grid-search", "--data", "nonsense"], "unknown data source"),
    ([], "give --phi"),
    (["--phi", "1", "--base-resolution", "16"], "--grid-search"),
    (["--phi", "1", "--recipe", "adamw"], "--grid-search"),
    (["--grid-search", "--recipe", "sgd-ish"], "--recipe must be one of"),
    (["--grid-search", "--seed", "-1"], "--seed"),
    (["--grid-search", "--data-seed", "-1"], "--data-seed"),
])
def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path, args, needle):
    out = tmp_path / "out"
    extra = ["--output", out]
    p = nas_scale(*args, *extra, cwd=tmp_path)
    assert p.returncode == 2, (p.returncode, p.stderr)
    err = [line for line in p.stderr.splitlines() if "error" in line]
    assert len(err) == 1 and err[0].startswith("nas-scale: error: ") and needle in err[0]
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert not out.exists() and sorted(x.name for x in tmp_path.iterdir()) == []


def test_cli_grid_seeds_change_training_not_images(tmp_path, monkeypatch):
    # the images are drawn once with --data-seed (as the ground truth draws them): --seed changes only the
    # initialisation and the order, so two seeds of a candidate differ by training noise alone
    import nas.train
    from nas.cli.scale import main

    seen = []

    def fake(spec, data, **kw):
        assert "limit_train" not in kw and "limit_val" not in kw  # the data is the drawn subset already
        seen.append((kw["seed"], data.num_train, data.num_val, data.train_x.clone(), data.train_y.clone()))
        return {"accuracy": 0.5}

    monkeypatch.setattr(nas.train, "train_and_evaluate", fake)
    common = ["--grid-search", "--data", "sample", "--limit-train", "40", "--limit-val", "30", "--max-candidates", "1",
              "--quiet"]
    for i, extra in enumerate((["--seed", "0"], ["--seed", "1"], ["--seed", "0", "--data-seed", "1"])):
        assert main([*common, *extra, "--output", str(tmp_path / str(i))]) == 0
    (s0, n0, v0, x0, y0), (s1, n1, v1, x1, y1), (s2, _, _, x2, _) = seen
    assert (s0, s1, s2) == (0, 1, 0) and (n0, v0) == (n1, v1) == (40, 30)
    assert x0.equal(x1) and y0.equal(y1)  # another seed, the same images
    assert not x0.equal(x2)  # another data seed, other images
    budgets = [json.loads((tmp_path / str(i) / "grid.json").read_text())["budget"] for i in range(3)]
    assert [(b["seed"], b["data_seed"]) for b in budgets] == [(0, 0), (1, 0), (0, 1)]


def test_cli_grid_search_end_to_end_on_the_sample(tmp_path, capsys):
    # in-process (torch is imported once); the bad-input cases above go through the script
    from nas.cli.scale import main

    out = tmp_path / "g"
    args = ["--grid-search", "--base", "efficientnet-b0", "--data", "sample", "--base-resolution", "16",
            "--epochs", "1", "--limit-train", "64", "--limit-val", "64", "--batch-size", "32", "--max-candidates", "1",
            "--quiet", "--threads", "1", "--output", str(out)]
    assert main(args) == 0
    d = json.loads((out / "grid.json").read_text())
    assert d["command"].startswith("nas-scale --grid-search") and d["trained"] == 1 and d["subsampled"]
    assert d["budget"]["recipe"] == "adamw"  # the search's default estimator's recipe (the frontier's best point)
    assert json.loads(capsys.readouterr().out) == d["best"]
    assert (out / "grid.png").exists() and (out / "grid.journal").exists()
    assert main(args) == 0  # resumes: nothing left to train
    assert "resuming: 1 candidate(s) already finished, 0 to go" in capsys.readouterr().err
