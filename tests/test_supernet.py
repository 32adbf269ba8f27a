"""The weight-sharing supernet (issue 13): coverage of the space, exact extraction, resumable training,
scoring with recalibrated BN, and the command line.  Tiny settings throughout (16 px, a few steps)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nas
from nas.build import build_model
from nas.data import load_dataset
from nas.supernet import (Supernet, SupernetError, SupernetEstimator, TrainConfig, load_supernet, read_checkpoint,
                          train_supernet)
from search_spaces import CHOICES, get_space

ROOT = Path(__file__).resolve().parents[1]
SPACE = get_space("mnasnet-b0")
TINY = dict(data="sample", resolution=16, batch_size=16, limit_train=32, eval_images=0)


@pytest.fixture(scope="module")
def net(one_torch_thread):
    return _randomised(SPACE)


def _randomised(space):
    torch.manual_seed(0)
    n = Supernet(space, num_classes=10).eval()
    # Fresh BN (mean 0, var 1, identity affine) would hide a wrong slice of any BN tensor.
    g = torch.Generator().manual_seed(1)
    for m in n.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for t, lo, hi in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.5, 2.0), (m.weight.data, 0.5, 1.5),
                              (m.bias.data, -0.2, 0.2)):
                t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return n


def _check_extraction(net, spec):
    member = net.member(spec)
    model = build_model(member.spec)
    model.load_state_dict(net.extract(member), strict=True)
    model.eval()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))  # 3, not 2: hides no axis mix-up
    with torch.no_grad():
        want, got = net(x, member), model(x)
    assert want.abs().max() > 1e-2  # a comparison of near-zero tensors could not fail
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_extraction_equals_the_supernet_for_random_members(net):
    rng = random.Random(0)
    specs = [net.largest.spec, net.smallest.spec, nas.load_spec("efficientnet-b0")]
    specs += [SPACE.decode(SPACE.sample(rng)) for _ in range(8)]
    for spec in specs:
        _check_extraction(net, spec)


def test_the_supernet_is_built_from_any_space_of_the_registry(one_torch_thread):
    space = get_space("mnasnet-mbv2")  # MobileNetV2's skeleton: other widths, depths and strides
    net = _randomised(space)
    rng = random.Random(1)
    for spec in [net.largest.spec, net.smallest.spec] + [space.decode(space.sample(rng)) for _ in range(3)]:
        _check_extraction(net, spec)


@pytest.mark.parametrize("key", list(CHOICES))
def test_every_choice_of_the_space_is_covered(net, key):
    b0 = SPACE.encode(nas.load_spec("efficientnet-b0"))
    for value in CHOICES[key]:
        choices = {**b0, **{n: value for n in SPACE.param_names if n.endswith("_" + key)}}
        _check_extraction(net, SPACE.decode(choices))


def test_extracted_weights_are_copies_cut_from_the_centre(net):
    spec = SPACE.decode({**SPACE.encode(nas.load_spec("efficientnet-b0")), "s3_kernel": 3})
    sd = net.extract(spec)
    w = sd["stages.2.0.body.depthwise.0.weight"]
    stored = net.stages[2][0].ops["mbconv"].depthwise[0].weight
    assert w.shape[-2:] == (3, 3) and stored.shape[-2:] == (5, 5)
    assert torch.equal(w, stored[: w.shape[0], :, 1:4, 1:4])
    assert w.data_ptr() != stored.data_ptr()


def test_the_estimator_takes_the_search_s_factory_options(trained, data):
    import functools

    # what nas.search passes to every estimator factory (_estimator_options), through a registry entry
    factory = functools.partial(SupernetEstimator, trained[0])
    est = factory(data, resolution=None, epochs=1, seed=0, limit_train=None, limit_val=50, recipe="adamw")
    assert est.kind == "supernet" and est.name == f"supernet:{trained[0]}" and est.describe()["resolution"] == 16
    with pytest.raises(TypeError):
        factory(data, epoch=1)  # a misspelled option fails loudly


def test_specs_outside_the_supernet_are_refused_with_the_stage_and_choice(net):
    b0 = nas.load_spec("efficientnet-b0")
    stages = list(b0.stages)
    stages[2] = stages[2].__class__(**{**stages[2].to_dict(), "kernel": 7})
    with pytest.raises(SupernetError, match=r"stages\[2\].*kernel 7"):
        net.member(b0.replace(stages=stages))
    stages = list(b0.stages)
    stages[4] = stages[4].__class__(**{**stages[4].to_dict(), "expand_ratio": 4})
    with pytest.raises(SupernetError, match=r"stages\[4\].*op mbconv with expand 4"):
        net.member(b0.replace(stages=stages))
    with pytest.raises(SupernetError, match="in_channels"):
        net.member(b0.replace(in_channels=1))
    with pytest.raises(SupernetError, match="num_classes"):
        net.member(b0.replace(num_classes=7))
    with pytest.raises(SupernetError, match="not a member"):
        net.member(nas.load_spec("mobilenet-v2"))
    # what a search or nas-train writes is a member: any resolution, the skeleton's or the supernet's classes
    assert net.member(b0.replace(resolution=32, num_classes=10)).spec.num_classes == 10


# ---------------------------------------------------------------- training and scoring


@pytest.fixture(scope="module")
def data():
    return load_dataset("sample")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data, one_torch_thread):
    out = tmp_path_factory.mktemp("sn")
    summary = train_supernet(TrainConfig(epochs=1, **{**TINY, "eval_images": 64}), data, out, progress=False)
    return out, summary


def test_training_writes_a_complete_checkpoint_and_summary(trained):
    out, s = trained
    assert s["complete"] and s["step"] == s["total_steps"] == 2
    assert s["peak_rss_mb"] > 100 and s["images_per_second"] > 0
    ck = read_checkpoint(out)
    assert ck["complete"] and "optimizer" not in ck and ck["space"] == "mnasnet-b0"
    assert json.loads((out / "train.json").read_text())["step"] == 2
    (epoch,) = s["history"]  # the per-epoch check of the sandwich's ends, BN recalibrated
    assert epoch["epoch"] == 1 and 0 <= epoch["largest_accuracy"] <= 1 and 0 <= epoch["smallest_accuracy"] <= 1


def test_rerunning_a_complete_training_does_nothing(trained, data):
    out, s = trained
    before = (out / "supernet.pt").stat().st_mtime_ns
    again = train_supernet(TrainConfig(epochs=1, **{**TINY, "eval_images": 64}), data, out, progress=False)
    assert again["step"] == s["step"] and (out / "supernet.pt").stat().st_mtime_ns == before
    with pytest.raises(SupernetError, match="other settings.*epochs"):
        train_supernet(TrainConfig(epochs=2, **TINY), data, out, progress=False)


def test_the_estimator_scores_a_member_with_recalibrated_bn_and_caches(trained, data):
    out, _ = trained
    est = SupernetEstimator(out, data, limit_val=100, calibration_images=64)
    b0 = nas.load_spec("efficientnet-b0")
    e = est(b0)
    assert not e.failed and 0.0 <= e.score <= 1.0 and e.details["cached"] is False and e.seconds > 0
    # the score is the accuracy of the plain model holding the handed-over weights
    member = est.net.member(b0)
    model = build_model(member.spec)
    model.load_state_dict(est.state_dict(b0), strict=True)
    acc, _ = nas.train.evaluate(model, est._val)
    assert acc == e.score
    # recalibrated: not the supernet's running statistics
    raw = est.net.extract(member)
    assert not torch.equal(raw["stages.0.0.body.depthwise.1.running_var"],
                           est.state_dict(b0)["stages.0.0.body.depthwise.1.running_var"])
    again = est(b0)
    assert again.score == e.score and again.details["cached"] is True
    fresh = SupernetEstimator(out, data, limit_val=100, calibration_images=64)  # the disk cache
    assert fresh(b0).details["cached"] is True
    bad = est(nas.load_spec("mobilenet-v2"))
    assert bad.failed and "not a member" in bad.reason
    assert est.describe()["supernet_step"] == 2


def test_an_estimator_on_data_with_other_classes_is_refused(trained, data):
    out, _ = trained
    other = data.subset(64)
    other = type(other)(name="five", classes=list(other.classes[:5]), train_x=other.train_x[other.train_y < 5],
                        train_y=other.train_y[other.train_y < 5], val_x=other.val_x[other.val_y < 5],
                        val_y=other.val_y[other.val_y < 5])
    with pytest.raises(SupernetError, match="classes"):
        SupernetEstimator(out, other)


def test_corrupt_and_foreign_checkpoints_are_one_line_errors(trained, tmp_path):
    out, _ = trained
    (tmp_path / "supernet.pt").write_bytes((out / "supernet.pt").read_bytes()[:10000])
    with pytest.raises(SupernetError, match="corrupt"):
        load_supernet(tmp_path)
    ck = torch.load(out / "supernet.pt", weights_only=True)
    ck["space"] = "mnasnet-mbv2"
    torch.save(ck, tmp_path / "supernet.pt")
    with pytest.raises(SupernetError, match="another version of space mnasnet-mbv2"):
        load_supernet(tmp_path)
    ck["space"] = "nope"
    torch.save(ck, tmp_path / "supernet.pt")
    with pytest.raises(SupernetError, match="unknown space 'nope'"):
        load_supernet(tmp_path)


def _cli(*argv):
    return [sys.executable, "-c", "import sys; from nas.cli.supernet import main; sys.exit(main(sys.argv[1:]))",
            *argv]


def test_kill_9_mid_training_then_resume_equals_an_uninterrupted_run(tmp_path, data, one_torch_thread):
    cfg = TrainConfig(epochs=3, **TINY)  # 2 steps per epoch
    argv = ["train", "--data", "sample", "--epochs", "3", "--resolution", "16", "--batch-size", "16",
            "--limit-train", "32", "--eval-images", "0", "--output", str(tmp_path / "killed"), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(_cli(*argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    summary = tmp_path / "killed" / "train.json"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if summary.exists() and json.loads(summary.read_text())["step"] >= 2:
                os.kill(p.pid, signal.SIGKILL)  # mid-run: after epoch 1's checkpoint, before the end
                break
            if p.poll() is not None:
                pytest.fail(f"the run ended before the kill: rc {p.returncode}, {p.stderr.read()[-400:]!r}")
            time.sleep(0.02)
        else:
            pytest.fail("no checkpoint in time")
    finally:
        p.wait(30)
    killed_at = read_checkpoint(tmp_path / "killed")
    assert not killed_at["complete"] and killed_at["step"] < 6
    r = subprocess.run(_cli(*argv), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    resumed = read_checkpoint(tmp_path / "killed")
    assert resumed["complete"] and resumed["step"] == 6
    train_supernet(cfg, data, tmp_path / "straight", progress=False)
    straight = read_checkpoint(tmp_path / "straight")
    assert resumed["config"] == straight["config"]
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


# ---------------------------------------------------------------- the command line


def _main(argv):
    from nas.cli.supernet import main

    return main(argv)


def test_cli_score_and_extract(trained, tmp_path, capsys):
    out, _ = trained
    assert _main(["score", "efficientnet-b0", "--supernet", str(out), "--calibration-images", "64",
                  "--limit-val", "100", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert 0 <= rep["accuracy"] <= 1 and rep["flops"] > 0 and rep["space"] == "mnasnet-b0"
    w, s = tmp_path / "w.pt", tmp_path / "w.json"
    assert _main(["extract", "efficientnet-b0", "--supernet", str(out), "--calibration-images", "64",
                  "--output", str(w), "--spec-output", str(s)]) == 0
    spec = nas.load_spec(str(s))
    assert spec.num_classes == 10 and spec.provenance["weights"]["recalibrated"] is True
    build_model(spec).load_state_dict(torch.load(w, weights_only=True), strict=True)


def _bad_checkpoint(tmp_path, trained):
    d = tmp_path / "corrupt"
    d.mkdir()
    (d / "supernet.pt").write_bytes(b"not a checkpoint")
    return d


@pytest.mark.parametrize("argv, code, message", [
    (["score", "mobilenet-v2", "--supernet", "{sn}"], 2, "not a member of supernet space mnasnet-b0"),
    (["extract", "{k7}", "--supernet", "{sn}", "--output", "{tmp}/w.pt"], 2, r"stages\[2\].*kernel 7"),
    (["score", "efficientnet-b0", "--supernet", "{corrupt}"], 1, "corrupt"),
    (["extract", "efficientnet-b0", "--supernet", "{corrupt}", "--output", "{tmp}/w.pt"], 1, "corrupt"),
    (["score", "efficientnet-b0", "--supernet", "{tmp}/none"], 2, "no such directory"),
    (["train", "--epochs", "2", "--resolution", "16", "--batch-size", "16", "--limit-train", "32",
      "--eval-images", "0", "--output", "{sn}"], 2, "other settings"),
    (["train", "--output", "{corrupt}"], 1, "corrupt"),
    (["train", "--space", "nope", "--output", "{tmp}/x"], 2, "unknown --space"),
    (["train", "--resolution", "4", "--output", "{tmp}/x"], 2, "too small"),
    (["score", "efficientnet-b0", "--supernet", "{sn}", "--device", "tpu"], 2, "unknown device 'tpu'"),
    ([], 2, "required"),
    (["train"], 2, "--output"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(argv, code, message, trained, tmp_path, capsys):
    import re

    out, _ = trained
    b0 = nas.load_spec("efficientnet-b0")
    k7 = b0.replace(stages=[{**s.to_dict(), "kernel": 7} if i == 2 else s for i, s in enumerate(b0.stages)])
    fill = {"sn": str(out), "tmp": str(tmp_path), "corrupt": str(_bad_checkpoint(tmp_path, trained)),
            "k7": k7.to_json(indent=None)}
    before = sorted(p.name for p in tmp_path.rglob("*"))
    def contents(d):  # the score cache is not output: earlier tests fill it
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.relative_to(d).parts[0] != "scores")

    sn_before = contents(out)
    assert _main([a.format(**fill) for a in argv]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert contents(out) == sn_before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when there is no GPU")
def test_cli_device_cuda_without_a_gpu_is_a_usage_error(trained, capsys):
    out, _ = trained
    assert _main(["score", "efficientnet-b0", "--supernet", str(out), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_extracted_weights_export_and_fine_tune(trained, tmp_path, capsys):
    from nas.cli.train import main as train_main
    from nas.export import fit_spec_to_weights

    out, _ = trained
    w = tmp_path / "w.pt"
    assert _main(["extract", "efficientnet-b0", "--supernet", str(out), "--calibration-images", "64",
                  "--output", str(w)]) == 0
    spec, notes = fit_spec_to_weights(nas.load_spec("efficientnet-b0"), w)  # a searched spec keeps 1000 classes
    assert spec.num_classes == 10 and notes == ["num_classes 1000 -> 10"]
    capsys.readouterr()
    assert train_main(["efficientnet-b0", "--init", str(w), "--steps", "1", "--resolution", "16", "--limit-train",
                       "64", "--limit-val", "64", "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 1


def test_plain_estimator_supernet_trains_one_into_the_run_folder_first(tmp_path, monkeypatch, capsys,
                                                                       one_torch_thread):
    """``nas-search --estimator supernet``: the run's own supernet (SEARCH_SUPERNET's budget, here shrunk),
    then the search scores with it and hands over weights; a rerun reuses the finished supernet."""
    import nas.supernet
    from nas.cli.search import main as search_main

    monkeypatch.setattr(nas.supernet, "SEARCH_SUPERNET", {"epochs": 1, "resolution": 16, "limit_train": 64})
    run = tmp_path / "run"
    argv = ["--target-flops", "400M", "--estimator", "supernet", "--budget", "2", "--limit-val", "50",
            "--output", str(run), "--no-progress"]
    assert search_main(argv) == 0
    err = capsys.readouterr().err
    assert "training the run's supernet first" in err
    ck = read_checkpoint(run / "supernet")
    assert ck["complete"] and ck["config"]["epochs"] == 1 and ck["config"]["limit_train"] == 64 and ck["config"]["data"] == "sample"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_trials_complete"] == 2
    assert (run / "best.weights.pt").exists()
    before = (run / "supernet" / "supernet.pt").stat().st_mtime_ns
    assert search_main(argv) == 0  # resumed: the study is complete, the supernet is not retrained
    assert "training the run's supernet first" not in capsys.readouterr().err
    assert (run / "supernet" / "supernet.pt").stat().st_mtime_ns == before
