"""Latency (issue 15): the per-layer table, its keys, the predictor, the backends, nas-latency, devices.

Measurements here are tiny (32 px, 1-2 timed runs) and never assert how fast
anything is beyond orders of magnitude: the machine is shared, so timings are
noisy; the real table and its validation are figures in results/latency/.
"""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nas
from nas.build import build_model
from nas.latency import (BACKENDS, Entry, LatencyTable, MissingEntryError, TableError, build_table, fit_linear,
                         fit_overhead,
                         get_backend, measure_latency, new_table, predict, predict_breakdown, space_entries,
                         space_members, spec_entries)
from nas.latency._modules import entry_module
from search_spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
HAS_CUDA = torch.cuda.is_available()
RES = 32  # a tiny resolution keeps every measurement well under a millisecond


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(autouse=True)
def _idle_machine(monkeypatch):
    """The suite runs beside other work: the load check sees an idle machine (tests/test_latency_protocol.py
    checks the refusal itself)."""
    import nas.latency._protocol as protocol

    monkeypatch.setattr(protocol.os, "getloadavg", lambda: (0.0, 0.0, 0.0))


@pytest.fixture(scope="module")
def space():
    return get_space("mnasnet-b0")


def _net_pieces(model):
    """The network's modules in forward order, named like spec_entries."""
    out = [("stem", model.stem)]
    for i, stage in enumerate(model.stages):
        out += [(f"stages[{i}].{j}", layer) for j, layer in enumerate(stage)]
    return out + [("head", model.head), ("pool", model.pool), ("classifier", model.classifier)]


def _n_params(m):
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------- keys


def test_space_entries_cover_every_member(space):
    """Every piece of random members (and the skeleton) is in the enumerated table, at two resolutions."""
    rng = random.Random(0)
    for res in (224, RES):
        keys = space_entries(space, res)
        members = [space.base.replace(resolution=res)] + [
            space.decode(space.sample(rng)).replace(resolution=res) for _ in range(150)]
        for spec in members:
            for name, e in spec_entries(spec):
                assert e.key in keys, (name, e.key)


def test_entry_modules_are_the_networks_pieces(space):
    """An entry's module has the parameters of the network's module at that place, and maps the
    shape the network feeds it to the shape the next piece gets (so an entry times what runs there)."""
    rng = random.Random(3)
    for _ in range(6):
        spec = space.decode(space.sample(rng)).replace(resolution=RES, num_classes=7)
        entries = spec_entries(spec)
        pieces = _net_pieces(build_model(spec).eval())
        assert [n for n, _ in entries] == [n for n, _ in pieces]
        for (name, e), (_, module) in zip(entries, pieces):
            m, x = entry_module(e)
            assert _n_params(m) == _n_params(module), name
            with torch.no_grad():
                ref = module(x)
                if name == "pool":  # Network.forward flattens after pooling; the entry times both
                    ref = torch.flatten(ref, 1)
                assert m(x).shape == ref.shape, name
        # the chain: each entry's output is the next entry's input
        for (n1, e1), (n2, e2) in zip(entries, entries[1:]):
            if e2.kind in ("layer", "head", "pool"):
                assert (e1.out_channels, e1.out_resolution) == (e2.in_channels, e2.resolution), (n1, n2)


def test_keys_ignore_what_costs_nothing_and_normalise_the_skip():
    b0 = nas.load_spec("efficientnet-b0")
    other = b0.replace(drop_connect_rate=0.0, dropout=0.5, bn={"eps": 1e-5, "momentum": 0.1}, name="x")
    assert [e.key for _, e in spec_entries(b0)] == [e.key for _, e in spec_entries(other)]
    # an identity skip across a stride adds nothing: the same block as skip none
    a = Entry.layer("mbconv", 6, 3, 2, 0.25, "identity", 16, 24, 112, "swish", "swish")
    b = Entry.layer("mbconv", 6, 3, 2, 0.25, "none", 16, 24, 112, "swish", "swish")
    c = Entry.layer("mbconv", 6, 3, 2, 0.25, "pool", 16, 24, 112, "swish", "swish")
    assert a.key == b.key != c.key
    # a pooling skip on a layer that keeps the shape is the identity
    assert (Entry.layer("conv", 1, 5, 1, 0.0, "pool", 40, 40, 28, "swish", "swish").key
            == Entry.layer("conv", 1, 5, 1, 0.0, "identity", 40, 40, 28, "swish", "swish").key)
    # MBConv without expansion builds the dwconv block; SE activation matters only with SE
    assert (Entry.layer("mbconv", 1, 3, 1, 0.0, "none", 32, 16, 112, "swish", "relu").key
            == Entry.layer("dwconv", 1, 3, 1, 0.0, "none", 32, 16, 112, "swish", "swish").key)
    # B0: stem, 16 layers, head, pool, classifier
    assert len(spec_entries(b0)) == 1 + 16 + 3


# ---------------------------------------------------------------- the table and the predictor


def _table(entries, overhead=0.0, **kw) -> LatencyTable:
    t = new_table(space="mnasnet-b0", resolution=RES, backend=BACKENDS["torch"], threads=1, warmup=1, runs=1,
                  expected_entries=len(entries), fit_networks=0)
    t.entries.update(entries)
    t.overhead = overhead
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def test_predict_sums_entries_and_adds_the_overhead():
    b0 = nas.load_spec("efficientnet-b0")
    keys = [e.key for _, e in spec_entries(b0)]
    # a distinct power of two per distinct key: the sum identifies which entries were added how often
    values = {k: 2.0 ** -(i + 1) for i, k in enumerate(dict.fromkeys(keys))}
    table = _table(values, overhead=0.25)
    expected = sum(values[k] for k in keys) + 0.25
    assert predict(b0, table) == pytest.approx(expected, rel=1e-12)
    # B0 repeats its stride-1 layers: stage 6 has three identical 192-wide layers
    assert sum(1 for k in keys if k == keys[14]) == 3
    table.scale = 2.0
    assert predict(b0, table) == pytest.approx(2 * (expected - 0.25) + 0.25, rel=1e-12)
    assert [n for n, _, _ in predict_breakdown(b0, table)][:2] == ["stem", "stages[0].0"]


def test_a_missing_entry_names_the_piece():
    b0 = nas.load_spec("efficientnet-b0")
    entries = {e.key: 1e-3 for _, e in spec_entries(b0)}
    key = spec_entries(b0)[5][1].key
    del entries[key]
    with pytest.raises(MissingEntryError, match=r"stages\[2\]\.1 \(" + key.replace(".", r"\.") + r"\)"):
        predict(b0, _table(entries))
    with pytest.raises(MissingEntryError, match="stem"):  # another resolution: other keys
        predict(b0.replace(resolution=100), _table(entries))
    full = _table({e.key: 1e-3 for _, e in spec_entries(b0)}, overhead=None)
    with pytest.raises(TableError, match="no fitted overhead"):
        predict(b0, full)


def test_least_squares_fits():
    sums, measured = [1.0, 2.0, 3.0], [2.5, 4.5, 6.5]  # measured = 2 * sum + 0.5 exactly
    assert fit_linear("affine", sums, measured) == pytest.approx((2.0, 0.5))
    assert fit_linear("constant", sums, measured) == pytest.approx((1.0, 2.5))  # mean of 1.5, 2.5, 3.5
    with pytest.raises(TableError, match="at least 2"):
        fit_linear("affine", [1.0], [2.0])
    with pytest.raises(TableError, match="unknown fit model"):
        fit_linear("cubic", sums, measured)


def test_table_json_round_trip_and_validation(tmp_path):
    t = _table({"stem c3-32 k3 s2 r32 swish": 1e-4, "pool c1280 r1": 2e-6}, overhead=-1e-5)
    p = tmp_path / "t.json"
    t.save(p)
    back = LatencyTable.load(p)
    assert back.to_dict() == t.to_dict()
    assert json.loads(p.read_text())["format"] == "nas-latency-table"
    good = t.to_dict()
    bad_cases = [
        ({**good, "entries": {"x": -1.0}}, r'entries\["x"\]: must be >= 0'),
        ({**good, "entries": {"x": "fast"}}, r'entries\["x"\]: must be a finite number'),
        ({**good, "format": "nas-spec"}, "format: must be"),
        ({**good, "version": 3}, "version: unsupported version 3"),
        ({**good, "protocol": {**good["protocol"], "rounds": 0}}, "protocol.rounds: must be an integer >= 1"),
        ({**good, "protocol": {**good["protocol"], "statistic": "mean"}}, "protocol.statistic: must be one of"),
        ({**good, "threads": 0}, "threads: must be an integer >= 1"),
        ({**good, "extra": 1}, "extra: unknown field"),
        ({k: v for k, v in good.items() if k != "overhead"}, "overhead: missing required field"),
        ({**good, "fit": {"model": "cubic", "expected": 1, "networks": []}}, "fit.model"),
        ({**good, "scale": 0}, "scale: must be > 0"),
        ({**good, "protocol": {**good["protocol"], "clock": "sundial"}}, "protocol.clock: must be wall or cpu"),
        ({**good, "protocol": {**good["protocol"], "evict_bytes": -1}}, "protocol.evict_bytes: must be an integer >= 0"),
    ]
    for d, msg in bad_cases:
        with pytest.raises(TableError, match=msg):
            LatencyTable.from_dict(d)
    (tmp_path / "nan.json").write_text(p.read_text().replace("-1e-05", "NaN"))
    with pytest.raises(TableError, match="not JSON"):
        LatencyTable.load(tmp_path / "nan.json")
    (tmp_path / "cut.json").write_text(p.read_text()[:50])
    with pytest.raises(TableError, match="cut.json: not a valid latency table"):
        LatencyTable.load(tmp_path / "cut.json")
    with pytest.raises(TableError, match="cannot read"):
        LatencyTable.load(tmp_path / "absent.json")


# ---------------------------------------------------------------- backends: one contract suite


@pytest.mark.parametrize("name", list(BACKENDS))
def test_backend_contract(name):
    backend = get_backend(name)
    if backend.unavailable():
        pytest.skip(backend.unavailable())
    small, x_small = entry_module(Entry("head", 8, 8, 4, activation="swish"))
    big, x_big = entry_module(Entry.layer("conv", 1, 5, 1, 0.0, "none", 64, 64, 64, "swish", "swish"))
    threads = torch.get_num_threads()
    t_small = backend.measure(small, x_small, threads=1, warmup=1, runs=3)
    t_big = backend.measure(big, x_big, threads=1, warmup=1, runs=3)
    assert torch.get_num_threads() == threads  # restored
    assert len(t_small) == 3 and all(t > 0 and math.isfinite(t) for t in t_small + t_big)
    # 64x64x64 5x5 conv (~420M multiply-adds) against an 8-channel 1x1 at 4 px: orders of magnitude apart
    assert sorted(t_big)[1] > 20 * sorted(t_small)[1]
    assert backend.device() and "torch" in backend.versions()
    if backend.cpu_clock:  # the cache sweep before each pass is untimed and changes nothing else
        t = backend.measure(small, x_small, threads=1, warmup=0, runs=2, clock="cpu", evict_bytes=1 << 20)
        assert len(t) == 2 and all(v > 0 for v in t)


def test_cuda_backend_refuses_without_a_gpu():
    if HAS_CUDA:
        pytest.skip("a GPU is present")
    assert "no CUDA device" in get_backend("cuda").unavailable()


@pytest.mark.skipif(not HAS_CUDA, reason="no GPU")
def test_cuda_backend_times_on_the_gpu():
    m, x = entry_module(Entry.layer("mbconv", 6, 3, 1, 0.25, "identity", 32, 32, 56, "swish", "swish"))
    times = get_backend("cuda").measure(m, x, threads=1, warmup=2, runs=3)
    assert len(times) == 3 and all(t > 0 for t in times)


def test_measure_latency_is_still_public():
    from nas.latency import Latency, LatencyMeter  # noqa: F401  (the search imports these)

    lat = measure_latency(nas.load_spec("efficientnet-b0").replace(resolution=RES), runs=2, warmup=1)
    assert lat.seconds > 0 and lat.threads == 1 and lat.resolution == RES


# ---------------------------------------------------------------- building: resumable, fitted


def _small_members(space, n=2, seed=5):
    return space_members(space, n, seed, RES)


def test_build_resumes_and_keeps_what_an_interruption_measured(tmp_path, space):
    members = _small_members(space)
    entries = {e.key: e for s in members for _, e in spec_entries(s)}
    backend = BACKENDS["torch"]
    path = tmp_path / "t.json"

    def fresh():
        return new_table(space=space.name, resolution=RES, backend=backend, threads=1, warmup=0, runs=1,
                         expected_entries=len(entries), fit_networks=len(members))

    t = fresh()
    assert build_table(t, entries, backend, path=path, limit=3) == 3
    assert len(LatencyTable.load(path).entries) == 3

    t = LatencyTable.load(path)
    seen = []

    def interrupt(key, seconds):
        seen.append(key)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_table(t, entries, backend, path=path, on_entry=interrupt)
    on_disk = LatencyTable.load(path)
    assert len(on_disk.entries) == 5 and set(seen) <= set(on_disk.entries)

    assert build_table(on_disk, entries, backend, path=path) == len(entries) - 5
    t = LatencyTable.load(path)
    assert set(t.entries) == set(entries) and t.overhead is None
    overhead = fit_overhead(t, members, backend, path=path)
    back = LatencyTable.load(path)
    assert back.complete and back.overhead == overhead
    nets = back.fit["networks"]
    assert [n["fingerprint"] for n in nets] == [s.fingerprint() for s in members]
    assert overhead == pytest.approx(sum(n["measured"] - n["sum"] for n in nets) / len(nets))
    # the prediction reproduces each fit network's sum + overhead
    assert predict(members[0], back) == pytest.approx(nets[0]["sum"] + overhead)


# ---------------------------------------------------------------- the command


def _cli(*args):
    from nas.cli.latency import main

    return main([str(a) for a in args])


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nas-latency: error:") and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err
    return err


def test_cli_table_in_pieces_and_refusals(tmp_path, capsys):
    out = tmp_path / "t.json"
    common = ["table", "--resolution", RES, "--warmup", 0, "--runs", 1, "--output", out, "--quiet"]
    assert _cli(*common, "--limit", 2) == 0
    assert "2 of 2086 entries" in capsys.readouterr().out
    assert _cli(*common, "--limit", 2) == 0
    assert "4 of 2086 entries (2 measured now)" in capsys.readouterr().out
    before = out.read_bytes()
    assert _cli(*[a if a != RES else 64 for a in common], "--limit", 1) == 2  # another resolution
    _one_line_error(capsys, "another set-up", "resolution: 32 there, 64 here")
    assert _cli(*common[:-3], "--threads", 2, "--output", out, "--limit", 1) == 2
    _one_line_error(capsys, "threads: 1 there, 2 here")
    assert out.read_bytes() == before
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "nas-latency-table"')
    assert _cli("table", "--output", corrupt, "--limit", 1) == 2
    _one_line_error(capsys, "corrupt.json", "not a valid latency table")
    assert corrupt.read_text() == '{"format": "nas-latency-table"'
    for argv, msg in [(["--backend", "tpu"], "unknown latency backend 'tpu'"),
                      (["--space", "nope"], "unknown search space 'nope'"),
                      (["--runs", 0], "--runs must be >= 1"),
                      (["--evict-mb", "-1"], "--evict-mb must be a finite number >= 0"),
                      (["--output", tmp_path / "no" / "t.json"], "does not exist")]:
        assert _cli("table", "--output", tmp_path / "x.json", *argv) == 2
        _one_line_error(capsys, msg)
    assert not (tmp_path / "x.json").exists()


def test_cli_table_onnxruntime(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "ort.json"
    assert _cli("table", "--backend", "onnxruntime", "--resolution", RES, "--warmup", 0, "--runs", 1,
                "--output", out, "--quiet", "--limit", 2) == 0
    t = LatencyTable.load(out)
    assert t.backend == "onnxruntime" and "onnxruntime" in t.versions and len(t.entries) == 2
    assert capsys.readouterr().err == ""  # the exporter's warnings stay out of the command's output


@pytest.mark.skipif(HAS_CUDA, reason="a GPU is present")
def test_cli_cuda_without_gpu_is_a_usage_error(tmp_path, capsys):
    assert _cli("table", "--backend", "cuda", "--output", tmp_path / "t.json") == 2
    _one_line_error(capsys, "no CUDA device")
    assert not (tmp_path / "t.json").exists()


@pytest.mark.skipif(HAS_CUDA, reason="a GPU is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cli_device_cuda_without_gpu_is_a_usage_error(tmp_path, capsys, device):
    assert _cli("table", "--device", device, "--output", tmp_path / "t.json") == 2
    _one_line_error(capsys, "no CUDA device")
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize("args, message", [
    (("--backend", "cuda", "--device", "cpu"), "measures on a GPU"),
    (("--device", "tpu"), "unknown device"),
])
def test_cli_device_and_backend_that_disagree(tmp_path, capsys, args, message):
    assert _cli("table", *args, "--output", tmp_path / "t.json") == 2
    _one_line_error(capsys, message)
    assert not (tmp_path / "t.json").exists()


@pytest.mark.skipif(HAS_CUDA, reason="a GPU is present")
def test_cli_device_auto_without_gpu_measures_on_the_cpu(tmp_path):
    out = tmp_path / "t.json"
    assert _cli("table", "--device", "auto", "--resolution", RES, "--warmup", 0, "--runs", 1,
                "--output", out, "--quiet", "--limit", 1) == 0
    assert LatencyTable.load(out).backend == "torch"


@pytest.fixture(scope="module")
def covering_table(tmp_path_factory, space):
    """A complete table for the members `validate --n 3 --seed 1` draws at 32 px, fitted on B0 and a member
    of seed 7 (validation skips the members a table was fitted on), measured for real."""
    fit = [nas.load_spec("efficientnet-b0").replace(resolution=RES), space_members(space, 1, 7, RES)[0]]
    members = space_members(space, 3, 1, RES) + fit
    entries = {e.key: e for s in members for _, e in spec_entries(s)}
    backend = BACKENDS["torch"]
    t = new_table(space=space.name, resolution=RES, backend=backend, threads=1, warmup=1, runs=2, clock="cpu",
                  expected_entries=len(entries), fit_networks=2)
    build_table(t, entries, backend)
    fit_overhead(t, fit, backend)
    path = tmp_path_factory.mktemp("lat") / "lat.json"
    t.save(path)
    return path


def test_cli_predict(covering_table, tmp_path, capsys):
    b0 = nas.load_spec("efficientnet-b0").replace(resolution=RES)
    spec_path = tmp_path / "b0.json"
    b0.save(spec_path)
    assert _cli("predict", spec_path, "--table", covering_table, "--json") == 0
    got = json.loads(capsys.readouterr().out)
    assert got["seconds"] == predict(b0, LatencyTable.load(covering_table)) and got["seconds"] > 0
    assert _cli("predict", spec_path, "--table", covering_table) == 0
    assert "ms predicted" in capsys.readouterr().out
    assert _cli("predict", "efficientnet-b0", "--table", covering_table) == 2  # 224 px: not in a 32 px table
    _one_line_error(capsys, "no entry for stem (stem c3-32 k3 s2 r224 swish)", "at 32 px")
    assert _cli("predict", spec_path, "--table", tmp_path / "absent.json") == 2
    _one_line_error(capsys, "cannot read latency table")
    assert _cli("predict", "efficientnet-b99", "--table", covering_table) == 2
    capsys.readouterr()


def test_cli_validate(covering_table, tmp_path, capsys):
    out = tmp_path / "val"
    assert _cli("validate", "--table", covering_table, "--n", 3, "--runs", 1, "--warmup", 0, "--json", "--quiet",
                "--output-dir", out) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["n"] == 3 and 0 <= got["within_10pct"] <= 1 and got["rmspe"] >= 0
    assert set(got["noise"]) == {"within_10pct", "rmspe", "worst_error"}
    assert got["floor"] == got["noise"]["within_10pct"] and -1 <= got["spearman"] <= 1
    assert got["seconds_per_prediction"] < got["seconds_per_measurement"]
    assert set(got["alternatives"]) == {"iqr_mean", "iqr_mean+duet", "median", "median+duet", "min_block_median",
                                        "min_block_median+duet"}
    assert got["load"]["before"]["load1"] == 0.0  # recorded (the idle machine of the fixture)
    report = json.loads((out / "validate.json").read_text())
    assert report["command"].startswith("nas-latency validate --table") and len(report["rows"]) == 3
    for r in report["rows"]:  # the agreement figures are recomputed from the rows
        assert r["predicted"] > 0 and r["measured"] > 0 and r["measured_again"] > 0
    within = sum(abs(r["predicted"] / r["measured_mean"] - 1) <= 0.1 for r in report["rows"]) / 3
    assert report["within_10pct"] == within
    floor = sum(abs(r["measured_again"] - r["measured"]) <= 0.1 * r["measured_mean"] for r in report["rows"]) / 3
    assert report["floor"] == floor
    assert (out / "validate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validate_resumes_from_its_checkpoint(covering_table, tmp_path, space, monkeypatch):
    import nas.latency._validate as v
    from nas.latency import Timing

    table = LatencyTable.load(covering_table)
    members = space_members(space, 3, 1, RES)
    calls = []

    def fake(specs, backend, protocol, **kw):  # one member per chunk (chunk=1)
        calls.append(specs[0].fingerprint())
        if len(calls) == 3:
            raise KeyboardInterrupt
        s = 0.001 * len(calls)
        return [Timing(s, s, s, 0.0, 0.0, [[s]])], None

    monkeypatch.setattr(v, "measure_networks", fake)
    ck = tmp_path / "ck.json"
    with pytest.raises(KeyboardInterrupt):
        v.validate(table, members, BACKENDS["torch"], checkpoint=ck, chunk=1, reference=False)
    assert len(json.loads(ck.read_text())["measured"]) == 2
    r = v.validate(table, members, BACKENDS["torch"], checkpoint=ck, chunk=1, reference=False)
    assert len(calls) == 3 + 4  # 6 measurements in all: 2 kept, the interrupted one and 3 more
    assert [row["measured"] for row in r["rows"][:2]] == [0.001, 0.002]
    other = v.validate(table, members[:2], BACKENDS["torch"], checkpoint=ck, chunk=1, reference=False)
    assert len(calls) == 7 + 4 and other["n"] == 2  # other members: a fresh start


def test_cli_validate_refusals(covering_table, tmp_path, capsys):
    t = LatencyTable.load(covering_table)
    other = tmp_path / "other.json"
    t.machine = {**t.machine, "cpu": "Some Other CPU"}
    t.save(other)
    assert _cli("validate", "--table", other, "--n", 1, "--output-dir", tmp_path / "v") == 2
    _one_line_error(capsys, "another set-up", "Some Other CPU")
    t = LatencyTable.load(covering_table)
    t.expected_entries += 1
    t.save(other)
    assert _cli("validate", "--table", other, "--n", 1, "--output-dir", tmp_path / "v") == 2
    _one_line_error(capsys, "incomplete")
    t = LatencyTable.load(covering_table)
    t.space = "mnasnet-mbv2"  # the members of another space have pieces this table lacks
    t.save(other)
    assert _cli("validate", "--table", other, "--n", 2, "--runs", 1, "--output-dir", tmp_path / "v") == 2
    _one_line_error(capsys, "no entry for")
    assert not (tmp_path / "v").exists()


def test_cli_refit(covering_table, tmp_path, capsys):
    t = LatencyTable.load(covering_table)
    # fit networks with known numbers: measured = 1.5 * sum + 2 ms exactly
    t.fit["networks"] = [{"name": f"n{i}", "fingerprint": str(i), "sum": s, "measured": 1.5 * s + 0.002}
                         for i, s in enumerate((0.01, 0.02, 0.04))]
    p = tmp_path / "t.json"
    t.save(p)
    assert _cli("refit", "--table", p, "--model", "affine") == 0
    t = LatencyTable.load(p)
    assert t.fit["model"] == "affine" and (t.scale, t.overhead) == pytest.approx((1.5, 0.002))
    assert _cli("refit", "--table", p, "--model", "constant") == 0
    t = LatencyTable.load(p)
    assert (t.scale, t.overhead) == pytest.approx((1.0, 0.002 + 0.5 * (0.01 + 0.02 + 0.04) / 3))
    capsys.readouterr()
    # measured falling with the sum: no positive scale; refused, the table kept
    t.fit["networks"] = [{"name": "a", "fingerprint": "a", "sum": 0.01, "measured": 0.03},
                         {"name": "b", "fingerprint": "b", "sum": 0.02, "measured": 0.02}]
    t.save(p)
    before = p.read_bytes()
    assert _cli("refit", "--table", p, "--model", "affine") == 2
    _one_line_error(capsys, "gives scale -1")
    assert p.read_bytes() == before


def test_cli_cpu_clock(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert _cli("table", "--resolution", RES, "--warmup", 0, "--runs", 1, "--output", out, "--quiet", "--limit", 2,
                "--clock", "cpu") == 0
    t = LatencyTable.load(out)
    assert t.protocol["clock"] == "cpu" and len(t.entries) == 2 and all(v > 0 for v in t.entries.values())
    capsys.readouterr()
    assert _cli("table", "--output", tmp_path / "u.json", "--clock", "cpu", "--threads", 2) == 2
    _one_line_error(capsys, "--threads 1")
    with pytest.raises(ValueError, match="needs --threads 1"):
        BACKENDS["torch"].measure(*entry_module(Entry("pool", 8, 8, 4)), threads=2, warmup=0, runs=1, clock="cpu")


def test_cli_subprocess_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "nas.cli.latency", "predict", "efficientnet-b0", "--table",
                        str(tmp_path / "none.json")], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_validate_device_must_match_the_table(covering_table, tmp_path, capsys):
    if not HAS_CUDA:
        assert _cli("validate", "--table", covering_table, "--device", "cuda", "--n", 1) == 2
        _one_line_error(capsys, "no CUDA device")
    else:
        assert _cli("validate", "--table", covering_table, "--device", "cuda", "--n", 1) == 2
        _one_line_error(capsys, "not on --device cuda")


# ---------------------------------------------------------------- devices


def test_resolve_device():
    from nas.devices import DeviceError, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")
    for bad in ("gpu", "cuda:x", ""):
        with pytest.raises(DeviceError, match="unknown device"):
            resolve_device(bad)
    if not HAS_CUDA:
        for name in ("cuda", "cuda:0", "cuda:3"):
            with pytest.raises(DeviceError, match="no CUDA device"):
                resolve_device(name)


@pytest.mark.skipif(HAS_CUDA, reason="a GPU is present")
def test_nas_train_device_cuda_without_gpu(capsys):
    from nas.cli.train import main

    assert main(["efficientnet-b0", "--device", "cuda", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err


def _tiny_train(device):
    from nas.data import load_dataset
    from nas.train import train_and_evaluate

    spec = nas.load_spec("efficientnet-b0").replace(
        stages=[{**s.to_dict(), "out_channels": 8, "repeats": 1} for s in nas.load_spec("efficientnet-b0").stages[:3]],
        head={"out_channels": 16})
    data = load_dataset("sample").subset(64, 32, seed=0)
    return train_and_evaluate(spec, data, steps=2, resolution=16, batch_size=16, seed=0, device=device)


def test_train_device_cpu_is_the_default():
    a, b = _tiny_train(None), _tiny_train("cpu")
    assert a.accuracy == b.accuracy and a.loss == b.loss


@pytest.mark.skipif(not HAS_CUDA, reason="no GPU")
def test_train_on_cuda_matches_cpu_up_to_rounding():
    a, b = _tiny_train("cpu"), _tiny_train("cuda")
    assert not b.failed and abs(a.loss - b.loss) < 0.05  # bf16 autocast: equal up to rounding


# ---------------------------------------------------------------- the fastest member (a target below it cannot be met)


def test_fastest_member_is_the_minimum_prediction(space):
    from nas.latency import fastest_member

    keys = space_entries(space, RES)
    # arbitrary but fixed seconds per entry, unrelated to size, so the minimum is not the obvious smallest net
    values = {k: (int.from_bytes(k.encode()[-6:], "big") % 997 + 1) * 1e-6 for k in keys}
    table = _table(values, overhead=1e-3)
    fastest = fastest_member(space, table)
    best = predict(fastest, table)
    rng = random.Random(11)
    for _ in range(300):
        assert predict(space.decode(space.sample(rng)).replace(resolution=RES), table) >= best
    choices = space.encode(fastest.replace(resolution=space.base.resolution))
    for nb in space.neighbours(choices):  # no single change makes it faster
        assert predict(space.decode(nb).replace(resolution=RES), table) >= best - 1e-15
    del table.entries[spec_entries(fastest)[3][1].key]
    with pytest.raises(MissingEntryError, match="no entry for layer"):
        fastest_member(space, table)


def test_reading_a_table_and_predicting_do_not_import_torch():
    code = ("import sys, nas.latency, nas.cli.latency\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
