"""The study scripts' pieces that need no training (scripts/ground_truth.py, trust.py, _rows.py, scaling_comparison.py)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from nas.cost import cost
from nas.presets import load_preset
from search_spaces import SPACES
from search_spaces.mnasnet import CHOICES

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, str(SCRIPTS))
    try:
        yield _load("ground_truth"), _load("trust")
    finally:
        sys.path.remove(str(SCRIPTS))


def test_rank_statistics_by_hand(scripts):
    gt, trust = scripts
    # [1,2,3] vs [1,3,2]: d^2 = 0+1+1, rho = 1 - 6*2/(3*(9-1)) = 0.5; pairs: 2 concordant, 1 discordant -> tau 1/3
    assert gt.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert trust.kendall([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # ties: [1,1,2] vs [1,2,3]; ranks (1.5,1.5,3) vs (1,2,3): Pearson 0.8660 (scipy.stats.spearmanr agrees)
    assert gt.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254, abs=1e-6)
    # tau-b with one tie in a: 2 concordant, 0 discordant, (3 - 1) * 3 pairs untied -> 2 / sqrt(2 * 3)
    assert trust.kendall([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 6 ** 0.5)
    assert trust.top_overlap([5, 4, 3, 2, 1] * 2, [5, 4, 3, 2, 1] * 2) == 1.0
    assert trust.top_overlap(list(range(10)), list(range(10))[::-1]) == 0.0


def test_reference_architectures_are_stratified_members(scripts):
    gt, _ = scripts
    archs = gt.reference_architectures(52)
    space = SPACES["mnasnet-b0"]
    assert len(archs) == 52 and len({s.fingerprint() for _, s in archs}) == 52
    assert archs[0][0] == "efficientnet-b0" and archs[0][1] == load_preset("efficientnet-b0").replace(
        name=archs[0][1].name, provenance=archs[0][1].provenance)
    mb = archs[1][1]
    assert all(st.op == "mbconv" and st.expand_ratio == 6 and st.kernel == 3 and st.se_ratio == 0 for st in mb.stages[1:])
    flops = [cost(s).flops for _, s in archs[2:]]
    assert min(flops) >= 150e6 and max(flops) <= 900e6
    assert max(flops) / min(flops) > 5  # spread over the whole range, not bunched in one bin
    seen = {(k.split("_", 1)[1], v) for _, s in archs for k, v in space.encode(s).items()}
    assert seen == {(k, v) for k, vs in CHOICES.items() for v in vs}  # every value of every choice occurs


def test_committed_table_has_the_documented_shape():
    doc = json.loads((ROOT / "results" / "ground_truth" / "table.json").read_text())
    assert {"settings", "rows", "summary", "status"} <= set(doc)
    for r in doc["rows"]:
        assert {"spec", "flops", "params", "accuracy", "seconds"} <= set(r)
        assert set(r["accuracy"]) <= {"0", "1"}


def test_run_pool_hands_each_finished_row_over_in_order(scripts, capsys):
    from _rows import run_pool

    got = []

    def on_row(job, row):
        got.append((job, row))
        return f"job {job} -> {row}"

    run_pool([-3, 1, -2], abs, workers=2, initializer=int, initargs=(), on_row=on_row, total=5, already=2)
    assert got == [(-3, 3), (1, 1), (-2, 2)]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("]")[0].split("|")[0] for line in lines] == ["[3/5 ", "[4/5 ", "[5/5 "]
    assert lines[-1].endswith("job -2 -> 2") and "ETA" in lines[0]


def test_scaling_comparison_pools_the_seed_noise(scripts, tmp_path):
    sc = _load("scaling_comparison")
    rows = [{"accuracy": {"0": 0.8, "1": 0.9}}, {"accuracy": {"0": 0.5, "1": 0.5}}, {"accuracy": {"0": None, "1": 0.7}}]
    # deviations from each mean: (+-0.05), (0, 0); the failed row is left out: sd = sqrt(0.005 / 2) = 0.05,
    # and two 2-seed means must differ by 2 * 0.05 * sqrt(2 / 2) = 0.1 to stand out
    s = sc._summary(rows, [0, 1])
    assert s["pairs"] == 2 and s["seed_noise_sd"] == pytest.approx(0.05) and s["difference_needed"] == pytest.approx(0.1)
    assert s["median_variant_sd"] == pytest.approx((0.05 * 2 ** 0.5) / 2)  # median of sd 0.0707 and 0
    assert sc._summary(rows, [0]) == {"seed_noise_sd": None}
    # row 0 - row 1: mean 0.85 - 0.5; se sqrt(0.005 / 2 + 0 / 2) = 0.05; a failed seed gives no difference
    d, se = sc.versus_base(rows[0], rows[1], [0, 1])
    assert d == pytest.approx(0.35) and se == pytest.approx(0.05)
    assert sc.versus_base(rows[2], rows[1], [0, 1]) == (None, None)
    # the run log: rows of another budget and a torn last line are skipped
    budget = {"epochs": 3}
    log = tmp_path / "comparison.runs.jsonl"
    log.write_text(json.dumps({"fingerprint": "a", "seed": 1, "budget": budget, "accuracy": 0.8}) + "\n"
                   + json.dumps({"fingerprint": "a", "seed": 0, "budget": {"epochs": 1}, "accuracy": 0.1}) + "\n"
                   + '{"fingerprint": "b", "se')
    assert list(sc._finished(log, budget)) == [("a", 1)]


def test_repeat_names_the_machine_it_ran_on(scripts):
    import torch

    gt, _ = scripts
    m = gt._machine()
    assert m["torch"] == torch.__version__ and isinstance(m["cpu"], str) and m["cpu"]


def test_grid_seeds_table_ranks_by_the_mean_over_seeds():
    gs = _load("grid_seeds")

    def doc(seed, accs, budget=None):
        cands = [{"alpha": 1.0, "beta": 1.0, "gamma": 1.35, "resolution": 36, "depth": 16, "flops": 1,
                  "accuracy": accs[0]},
                 {"alpha": 1.2, "beta": 1.0, "gamma": 1.25, "resolution": 34, "depth": 23, "flops": 2,
                  "accuracy": accs[1]},
                 {"alpha": 1.2, "beta": 1.0, "gamma": 1.3, "resolution": 34, "depth": 23, "flops": 2,
                  "accuracy": accs[1], "duplicate_of": 1},
                 {"alpha": 1.4, "beta": 1.0, "gamma": 1.1, "resolution": 31, "depth": 26, "flops": 3,
                  "accuracy": None}]
        return {"budget": {"seed": seed, "epochs": 3, **(budget or {})}, "base_fingerprint": "b", "step": 0.05,
                "max_coef": 1.4, "tolerance": 0.1, "candidates": cands}

    # seed 0 alone would pick the second candidate; the mean over both seeds picks the first
    rows, seeds = gs.combine([doc(0, [0.80, 0.82]), doc(1, [0.84, 0.70])])
    assert seeds == [0, 1] and [(r["alpha"], r["gamma"]) for r in rows] == [(1.0, 1.35), (1.2, 1.25)]
    assert rows[0]["mean"] == pytest.approx(0.82) and rows[0]["sd"] == pytest.approx(0.02 * 2 ** 0.5)
    with pytest.raises(ValueError, match="more than their seed"):
        gs.combine([doc(0, [0.8, 0.8]), doc(1, [0.8, 0.8], {"epochs": 1})])
    with pytest.raises(ValueError, match="more than their seed"):
        gs.combine([doc(0, [0.8, 0.8]), doc(0, [0.8, 0.8])])
