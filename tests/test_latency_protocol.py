"""The latency measurement protocol (nas.latency._protocol), the load check, the correction (refit) and
validate's floor.  Fast: no assertion on a real timing (fake callables and a fake backend)."""
from __future__ import annotations

import gc
import json
import math
import os
from pathlib import Path

import pytest

import nas
from nas.latency import (BACKENDS, BusyMachine, LatencyTable, Pass, Protocol, TableError, Timing, check_load,
                         fit_correction, iqr_mean, load_record, new_table, predict, round_order, space_members,
                         spec_entries, spec_features, summarise, time_callables)
from nas.latency._backends import Backend

ROOT = Path(__file__).resolve().parents[1]
RES = 32


@pytest.fixture(scope="module")
def space():
    from search_spaces import get_space

    return get_space("mnasnet-b0")


@pytest.fixture
def idle(monkeypatch):
    import nas.latency._protocol as protocol

    monkeypatch.delenv("NAS_ALLOW_LOAD", raising=False)
    monkeypatch.setattr(protocol.os, "getloadavg", lambda: (0.0, 0.0, 0.0))


@pytest.fixture
def busy(monkeypatch):
    import nas.latency._protocol as protocol

    monkeypatch.delenv("NAS_ALLOW_LOAD", raising=False)
    monkeypatch.setattr(protocol.os, "getloadavg", lambda: (5.0, 4.0, 3.0))


# ---------------------------------------------------------------- statistics


def test_iqr_mean_on_known_data():
    assert iqr_mean([1, 2, 3, 4, 5, 6, 7, 8]) == 4.5          # 3, 4, 5, 6
    assert iqr_mean([3, 1, 100, 2, 4]) == 3.0                 # 2, 3, 4: the outlier dropped
    assert iqr_mean([7.0]) == 7.0 and iqr_mean([1.0, 3.0]) == 2.0
    with pytest.raises(ValueError):
        iqr_mean([])
    rounds = [[1.0, 9.0], [2.0, 3.0], [4.0, 5.0]]
    assert summarise(rounds, "median") == 3.5
    assert summarise(rounds, "min_block_median") == 2.5
    # duet: every time divided by its round's reference, scaled to the baseline
    assert summarise([[2.0], [4.0]], "median", ref_rounds=[1.0, 2.0], baseline=10.0) == 20.0


def test_protocol_defaults_round_trip_and_the_old_protocol():
    p = Protocol()
    assert (p.threads, p.core, p.warmup, p.runs, p.rounds, p.statistic, p.gc_off) == (1, -1, 10, 30, 3, "iqr_mean", True)
    assert p.block_sizes() == [10, 10, 10] and Protocol(runs=7, rounds=3).block_sizes() == [3, 2, 2]
    assert Protocol(runs=2, rounds=3).block_sizes() == [1, 1]
    assert Protocol.from_dict(p.to_dict()) == p
    old = Protocol.from_dict({"batch": 1, "warmup": 5, "runs": 15, "statistic": "median", "clock": "wall",
                              "evict_bytes": 0})
    assert (old.rounds, old.statistic, old.core, old.gc_off, old.runs) == (1, "median", None, False, 15)
    with pytest.raises(ValueError, match="protocol.statistic"):
        Protocol(statistic="mean")
    with pytest.raises(ValueError, match="protocol.runs"):
        Protocol(runs=0)
    with pytest.raises(ValueError, match="unknown field"):
        Protocol.from_dict({**p.to_dict(), "turbo": True})


# ---------------------------------------------------------------- interleaving, affinity, GC


def test_interleaving_order():
    assert round_order(3, 0) == [0, 1, 2] and round_order(3, 1) == [1, 2, 0] and round_order(3, 2) == [2, 0, 1]
    log = []
    fns = [Pass(run=(lambda n=n: log.append(n)), self_timed=False) for n in "abc"]
    ref = lambda: log.append("R")  # noqa: E731
    p = Protocol(core=None, warmup=1, runs=6, rounds=3, block_warmup=0, gc_off=False)
    timings, rt = time_callables(fns, p, reference=ref)
    warm, timed = "".join(log[:4]), "".join(log[4:])
    assert warm == "Rabc"
    assert timed == "RRaabbcc" + "RRbbccaa" + "RRccaabb"
    assert [len(t.rounds) for t in timings] == [3, 3, 3] and all(len(b) == 2 for b in timings[0].rounds)
    assert rt is not None and len(rt.rounds) == 3


def test_self_timed_passes_and_duet_normalisation():
    times = iter([2.0] * 100)
    ref_times = iter([1.0, 1.0, 2.0, 2.0] + [1.0] * 100)  # the machine is twice as slow in round 2
    member = Pass(run=lambda: next(times), self_timed=True)
    ref = Pass(run=lambda: next(ref_times), self_timed=True)
    p = Protocol(core=None, warmup=0, runs=4, rounds=2, block_warmup=0, statistic="median", duet=True)
    (t,), rt = time_callables([member], p, reference=ref, reference_seconds=1.0)
    assert t.raw_seconds == 2.0 and t.rounds == [[2.0, 2.0], [2.0, 2.0]]
    assert t.ref_rounds == [1.0, 2.0] and t.baseline == 1.0
    assert t.seconds == pytest.approx(1.5)  # median of 2/1, 2/1, 2/2, 2/2 (times the baseline 1.0)
    assert t.figure("median", duet=False) == 2.0 and t.figure("min_block_median", duet=True) == 1.0
    assert Timing.from_dict(json.loads(json.dumps(t.to_dict()))) == t


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity call here")
def test_affinity_and_gc_are_set_while_timing_and_restored():
    before = os.sched_getaffinity(0)
    gc.enable()
    seen = []

    def probe():
        seen.append((os.sched_getaffinity(0), gc.isenabled()))

    time_callables([probe], Protocol(warmup=0, runs=2, rounds=1, block_warmup=0))
    assert seen and all(aff == {max(before)} and not enabled for aff, enabled in seen)
    assert os.sched_getaffinity(0) == before and gc.isenabled()

    def boom():
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        time_callables([boom], Protocol(warmup=0, runs=1, rounds=1))
    assert os.sched_getaffinity(0) == before and gc.isenabled()
    gc.disable()  # a disabled GC stays disabled
    try:
        time_callables([lambda: None], Protocol(warmup=0, runs=1, rounds=1))
        assert not gc.isenabled()
    finally:
        gc.enable()
    seen.clear()
    time_callables([probe], Protocol(core=None, warmup=0, runs=1, rounds=1, gc_off=False))
    assert seen[0] == (before, True)  # core None: not pinned; gc_off False: GC untouched


# ---------------------------------------------------------------- the load check


def test_load_check_refuses_a_busy_machine(busy, monkeypatch):
    with pytest.raises(BusyMachine, match="the machine is busy: load average 5.00"):
        check_load(0.5)
    warned = []
    rec = check_load(0.5, allow=True, warn=warned.append)
    assert warned and "measuring anyway" in warned[0] and rec["load1"] == 5.0 and rec["others"] <= 5.0
    assert check_load(10.0)["load5"] == 4.0  # under the threshold: no refusal
    monkeypatch.setenv("NAS_ALLOW_LOAD", "1")
    check_load(0.5, warn=warned.append)
    assert len(warned) == 2


def test_load_record_fields(idle):
    rec = load_record()
    assert set(rec) == {"load1", "load5", "load15", "cores", "own", "others", "time"} and rec["others"] == 0.0


def test_cli_refuses_a_busy_machine_with_one_line(busy, tmp_path, capsys):
    from nas.cli.latency import main

    out = tmp_path / "t.json"
    assert main(["table", "--resolution", str(RES), "--output", str(out), "--quiet", "--limit", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the machine is busy" in err and "--allow-load" in err
    assert not out.exists()
    assert main(["table", "--resolution", str(RES), "--warmup", "0", "--runs", "1", "--output", str(out), "--quiet",
                 "--limit", "1", "--allow-load"]) == 0
    assert "WARNING" in capsys.readouterr().err
    t = LatencyTable.load(out)
    assert t.load_log[0]["before"]["load1"] == 5.0 and "after" in t.load_log[0]
    assert t.measure_protocol().core == -1 and t.protocol["version"] == 2


# ---------------------------------------------------------------- the table's versions


def test_a_version_1_table_still_loads_and_saves_as_version_2(tmp_path):
    old = json.loads((ROOT / "results" / "latency" / "lat-cpu.json").read_text())
    assert old["version"] == 1
    t = LatencyTable.from_dict(old)
    p = t.measure_protocol()
    assert (p.statistic, p.rounds, p.core, p.runs) == ("median", 1, None, old["protocol"]["runs"])
    b0 = nas.load_spec("efficientnet-b0")
    before = predict(b0, t)
    t.save(tmp_path / "t.json")
    back = LatencyTable.load(tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text())["version"] == 2
    assert predict(b0, back) == before and back.correction is None and back.measure_protocol() == p
    with pytest.raises(TableError, match="correction: unknown field"):  # version 1 has no correction
        LatencyTable.from_dict({**old, "correction": None})


# ---------------------------------------------------------------- the correction


def _table(space, members, per_entry=1e-4):
    entries = {e.key: per_entry for s in members for _, e in spec_entries(s)}
    t = new_table(space=space.name, resolution=RES, backend=BACKENDS["torch"], expected_entries=len(entries),
                  fit_networks=0)
    t.entries.update(entries)
    t.overhead = 0.0
    return t


def test_fit_correction_recovers_a_known_linear_correction():
    import random

    rng = random.Random(0)
    true = [0.002, 1.3e-3, 2e-5, 4e-3, 1e-5]  # s per unit of one, sum (ms), layers, gflops, act_mb
    X = [[1.0, rng.uniform(5, 40), rng.randint(15, 30), rng.uniform(0.1, 0.6), rng.uniform(5, 60)] for _ in range(30)]
    y = [sum(a * f for a, f in zip(true, x)) for x in X]
    assert fit_correction(X, y, ridge=0.0) == pytest.approx(true, rel=1e-6)
    fitted = fit_correction(X, y)  # the default ridge barely moves an exact fit's predictions
    pred = [sum(a * f for a, f in zip(fitted, x)) for x in X]
    assert max(abs(p / m - 1) for p, m in zip(pred, y)) < 0.02
    with pytest.raises(TableError, match="at least 6"):
        fit_correction(X[:5], y[:5])


def test_the_correction_keeps_only_the_features_that_predict_held_out_members():
    import random

    from nas.latency._workflow import select_correction

    rng = random.Random(1)
    X = [[1.0, rng.uniform(5, 40), rng.randint(15, 30), rng.uniform(0.1, 0.6), rng.uniform(5, 60)] for _ in range(30)]
    # the truth uses one and sum only; the measurements carry 5 % noise
    y = [(2.0 + 1.2 * x[1]) * 1e-3 * (1 + rng.gauss(0, 0.05)) for x in X]
    coef, sel = select_correction(X, y, ["one", "sum", "layers", "gflops", "act_mb"])
    assert set(sel["loo_rmspe"]) == {"one,sum", "one,sum,layers", "one,sum,layers,gflops",
                                     "one,sum,layers,gflops,act_mb"}
    assert sel["chosen"] == min(sel["loo_rmspe"], key=sel["loo_rmspe"].get)
    assert len(coef) == 5 and coef[1] == pytest.approx(1.2e-3, rel=0.1)


def test_refit_measures_members_fits_and_validation_holds_them_out(space, tmp_path, monkeypatch):
    import nas.latency._workflow as wf

    fit_members = wf.correction_members(_cover(space), space, 8, seed=1)
    table = _cover(space)
    # the machine's "truth": 1.5 ms per model plus 1.2x the layer sum (features one and sum)
    def fake(specs, backend, protocol, reference=None, reference_seconds=None):
        out = []
        for s in specs:
            total = sum(v for _, _, v in nas.latency.predict_breakdown(s, table))
            m = 1.5e-3 + 1.2 * total
            out.append(Timing(m, m, m, 0.0, 0.0, [[m]]))
        return out, None

    monkeypatch.setattr(wf, "measure_networks", fake)
    monkeypatch.setattr(wf, "tune_allocator", lambda: None)
    c = wf.refit_correction(table, space, BACKENDS["torch"], tmp_path / "t.json", n=8, seed=1,
                            features=["one", "sum"], ridge=0.0, progress=False)
    assert c["coef"] == pytest.approx([1.5e-3, 1.2e-3], rel=1e-6) and c["fit"]["within_10pct"] == 1.0
    back = LatencyTable.load(tmp_path / "t.json")
    s = fit_members[0]
    assert predict(s, back) == pytest.approx(1.5e-3 + 1.2 * sum(v for _, _, v in
                                                                nas.latency.predict_breakdown(s, back)))
    assert spec_features(s, back, names=["one", "layers"])[0] == 1.0
    # validation draws with the same seed here, yet never a fitted member
    held_out = wf.validation_members(back, space, 6, seed=1)
    fitted = {m["fingerprint"] for m in back.correction["members"]}
    assert len(held_out) == 6 and not fitted & {m.fingerprint() for m in held_out}


def _cover(space):
    members = space_members(space, 40, 1, RES)
    return _table(space, members)


def test_cli_refit_usage(tmp_path, capsys, space):
    from nas.cli.latency import main

    p = tmp_path / "t.json"
    _cover(space).save(p)
    assert main(["refit", str(p)]) == 2
    assert "give one of --members N" in capsys.readouterr().err
    assert main(["refit", str(p), "--members", "3"]) == 2
    assert "--members must be at least 6" in capsys.readouterr().err
    assert main(["refit", str(p), "--members", "10", "--features", "one,warp"]) == 2
    assert "unknown feature warp" in capsys.readouterr().err
    assert main(["refit", "--table", str(p), "--model", "constant"]) == 2  # the old form: no fit networks here
    assert "no fit networks measured" in capsys.readouterr().err


# ---------------------------------------------------------------- validate's floor, with a fake backend


class FakeBackend(Backend):
    """Self-timed passes: a network's parameter count x 1 ns; its second measurement is 30 % slower for every
    other member (a jitter the floor must show)."""

    name = "torch"  # the table's backend name
    cpu_clock = False

    def __init__(self):
        self.calls: dict[int, int] = {}

    def runner(self, module, x, *, threads, evict_bytes=0):
        n = sum(p.numel() for p in module.parameters())
        k = self.calls[n] = self.calls.get(n, 0) + 1
        slow = 1.3 if (k == 2 and n % 2) else 1.0
        return Pass(run=lambda: n * 1e-9 * slow, self_timed=True)

    def timer(self, clock, threads):
        return None


def test_validate_reports_the_floor_with_a_fake_backend(space, idle):
    from nas.latency import validate

    members = space_members(space, 6, 1, RES)
    table = _table(space, members)
    backend = FakeBackend()
    r = validate(table, members, backend, protocol=Protocol(core=None, warmup=0, runs=3, rounds=3), chunk=4,
                 reference=False)
    odd = [sum(p.numel() for p in nas.build_model(s).parameters()) % 2 for s in members]
    assert r["floor"] == pytest.approx(1 - sum(odd) / len(members))  # the jittered ones disagree by 26 %
    assert r["noise"]["within_10pct"] == r["floor"]
    for row in r["rows"]:
        assert row["measured_mean"] == pytest.approx((row["measured"] + row["measured_again"]) / 2)
        assert row["timings"][0]["rounds"] and row["flops"] > 0
    assert set(r["load"]) == {"before", "after"} and r["protocol"]["runs"] == 3
    assert -1 <= r["spearman"] <= 1 and -1 <= r["flops_spearman"] <= 1
    assert set(r["alternatives"]) == {"iqr_mean", "median", "min_block_median"}
    if r["floor"]:
        assert r["predictor_over_floor"] == pytest.approx(r["within_10pct"] / r["floor"])


def test_spearman():
    from nas.latency import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_meters_sharing_a_cache_measure_one_at_a_time_and_reuse_each_others_figures(tmp_path, monkeypatch):
    """A search's local workers: two meters on one cache file never time their nets at once, and a
    spec one of them measured is read back by the other, not measured again."""
    import threading
    import time

    import nas
    from nas.latency import _meter
    from nas.latency._meter import Latency, LatencyMeter

    spans, calls = [], []

    def fake(spec, protocol=None):
        t0 = time.perf_counter()
        time.sleep(0.15)
        calls.append(spec.fingerprint())
        spans.append((t0, time.perf_counter()))
        return Latency(0.01, 1, 30, spec.resolution, protocol=protocol.to_dict())

    monkeypatch.setattr(_meter, "measure_latency", fake)
    cache = tmp_path / "latency_cache.json"
    a, b = LatencyMeter(cache_path=cache), LatencyMeter(cache_path=cache)
    specs = [nas.load_spec(n) for n in ("efficientnet-b0", "mnasnet-a1")]
    threads = [threading.Thread(target=m, args=(s,)) for m, s in zip((a, b), specs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (s1, e1), (s2, e2) = sorted(spans)
    assert e1 <= s2  # never overlapping
    assert b(specs[0]) == 0.01 and len(calls) == 2  # b reads a's figure from the shared file
