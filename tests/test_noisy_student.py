"""Noisy Student (nas.noisy_student, nas-student): pseudo-labeling, filtering and balancing, the noise
switches, soft targets, resumable rounds and bad input; FixRes fine-tuning (nas.fixres, nas-train
--finetune-resolution): which layers learn."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nas.build import build_model
from nas.data import Dataset
from nas.fixres import FINETUNED_LAYERS, fixres_finetune
from nas.noisy_student import (NoiseSettings, NoisyStudent, NoisyStudentError, StudentConfig, pseudo_label,
                               select_pseudo_labels, split_labeled)
from nas.testing import small_spec
from nas.train import freeze_for, train_and_evaluate


def tiny_data(n_train=120, n_val=40, classes=3, size=12, seed=0) -> Dataset:
    """Class c is a bright square in corner c: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.arange(n) % classes
        x = torch.randint(0, 40, (n, 1, size, size), generator=g, dtype=torch.uint8)
        for i, c in enumerate(y.tolist()):
            r, q = divmod(c, 2)
            x[i, :, r * 6:r * 6 + 5, q * 6:q * 6 + 5] = 220
        return x, y

    tx, ty = make(n_train)
    vx, vy = make(n_val)
    return Dataset(name="tiny", classes=[str(c) for c in range(classes)], train_x=tx, train_y=ty, val_x=vx, val_y=vy)


SPEC = small_spec(resolution=12, num_classes=3)


# ---------------------------------------------------------------- filtering and balancing


def test_threshold_drops_unconfident_images():
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    index, targets, counts = select_pseudo_labels(probs, threshold=0.45, per_class=1)
    assert sorted(index.tolist()) == [0, 2, 3]
    assert counts["confident"] == 3 and counts["unlabeled"] == 4


def test_balancing_keeps_the_most_confident_and_duplicates_the_rare():
    # class 0: four images (confidences 0.9, 0.6, 0.8, 0.7); class 1: one image
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8]])
    index, targets, counts = select_pseudo_labels(probs, threshold=0.0, per_class=2)
    assert sorted(index.tolist()) == [0, 2, 4, 4]  # class 0's two most confident; class 1 duplicated
    assert counts["per_class"] == 2 and counts["pseudo_labeled"] == 4 and counts["distinct"] == 3
    # default: the mean count over the classes present ((4 + 1) / 2 -> 2)
    index, _, counts = select_pseudo_labels(probs, threshold=0.0)
    assert counts["per_class"] == 2 and len(index) == 4


def test_soft_targets_are_the_probabilities_and_hard_ones_one_hot():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    index, soft, _ = select_pseudo_labels(probs, threshold=0.0, per_class=1, pseudo="soft")
    assert torch.equal(soft, probs[torch.from_numpy(index)])
    index, hard, _ = select_pseudo_labels(probs, threshold=0.0, per_class=1, pseudo="hard")
    assert torch.equal(hard, torch.nn.functional.one_hot(probs[torch.from_numpy(index)].argmax(1), 3).float())


def test_pseudo_labels_come_from_the_un_noised_teacher():
    data = tiny_data()
    model = build_model(SPEC.replace(dropout=0.9, drop_connect_rate=0.9))
    model.train()  # pseudo_label must switch dropout and stochastic depth off itself
    a = pseudo_label(model, data, 12)
    b = pseudo_label(model, data, 12)
    assert a.shape == (data.num_train, 3) and torch.allclose(a.sum(1), torch.ones(data.num_train))
    assert torch.equal(a, b) and not model.training


def test_labeled_draw_is_stratified_and_seeded_and_checked():
    data = tiny_data()
    lab, rest = split_labeled(data, 30, seed=3)
    assert len(lab) == 30 and len(rest) == data.num_train - 30 and not set(lab) & set(rest)
    assert np.bincount(data.train_y[lab].numpy()).tolist() == [10, 10, 10]
    assert np.array_equal(lab, split_labeled(data, 30, seed=3)[0])
    with pytest.raises(NoisyStudentError, match="between 1 and 119"):
        split_labeled(data, 120, seed=0)


# ---------------------------------------------------------------- data and noise


def test_with_train_keeps_the_normalization_and_yields_soft_targets():
    data = tiny_data()
    soft = torch.full((5, 3), 1 / 3)
    mixed = data.with_train(data.train_x[:5] // 2, soft.argmax(1), train_soft=soft)
    assert mixed.normalization(1) == data.normalization(1)  # not recomputed from the darker images
    x, y = next(iter(mixed.loader("train", batch_size=5, resolution=12, channels=3, shuffle=False)))
    assert y.dtype == torch.float32 and torch.equal(y, soft)
    _, yv = next(iter(mixed.loader("val", batch_size=5, resolution=12, channels=3, shuffle=False)))
    assert yv.dtype == torch.int64


def test_noise_switches():
    spec = SPEC.replace(dropout=0.3, drop_connect_rate=0.2)
    assert NoiseSettings().student_spec(spec) == spec
    off = NoiseSettings.off()
    assert not off.randaugment and off.student_spec(spec).dropout == 0 and off.student_spec(spec).drop_connect_rate == 0


def test_randaugment_changes_training_and_is_seeded():
    data = tiny_data()
    kw = dict(steps=3, resolution=12, batch_size=16, recipe="adamw", seed=0, return_model=True)
    plain = train_and_evaluate(SPEC, data, **kw).model.state_dict()
    ra = train_and_evaluate(SPEC, data, randaugment=(2, 9), **kw).model.state_dict()
    again = train_and_evaluate(SPEC, data, randaugment=(2, 9), **kw).model.state_dict()
    w = "classifier.weight"
    assert not torch.equal(plain[w], ra[w]) and torch.equal(ra[w], again[w])


def test_training_on_soft_targets_matches_hard_ones_when_they_are_one_hot():
    data = tiny_data()
    onehot = torch.nn.functional.one_hot(data.train_y, 3).float()
    as_soft = data.with_train(data.train_x, data.train_y, train_soft=onehot)
    kw = dict(steps=3, resolution=12, batch_size=16, recipe="adamw", seed=0)
    assert train_and_evaluate(SPEC, data, **kw).loss == pytest.approx(train_and_evaluate(SPEC, as_soft, **kw).loss,
                                                                      rel=1e-5)


# ---------------------------------------------------------------- the loop


def config(**kw):
    base = dict(labeled=30, rounds=1, steps=4, resolution=12, batch_size=16, threshold=0.0)
    return StudentConfig(**{**base, **kw})


def test_rounds_write_their_files_and_resume(tmp_path):
    data = tiny_data()
    out = tmp_path / "ns"
    s1 = NoisyStudent(out, data, SPEC, config(rounds=1)).run()
    assert [r["round"] for r in s1["rounds"]] == [1] and 0 <= s1["teacher"]["accuracy"] <= 1
    for name in ("weights.pt", "spec.json", "metrics.json", "pseudo.pt"):
        assert (out / "round-1" / name).exists()
    assert json.loads((out / "summary.json").read_text()) == s1
    stamp = (out / "round-1" / "weights.pt").stat().st_mtime_ns
    s2 = NoisyStudent(out, data, SPEC, config(rounds=2)).run()  # more rounds: 0 and 1 are read back
    assert (out / "round-1" / "weights.pt").stat().st_mtime_ns == stamp
    assert s2["rounds"][0] == s1["rounds"][0] and len(s2["rounds"]) == 2
    m = json.loads((out / "round-1" / "metrics.json").read_text())
    assert m["train_images"] == 30 + m["pseudo_labeled"]


def test_another_request_in_the_same_directory_is_refused(tmp_path):
    data = tiny_data()
    NoisyStudent(tmp_path, data, SPEC, config()).run()
    with pytest.raises(NoisyStudentError, match="other settings"):
        NoisyStudent(tmp_path, data, SPEC, config(pseudo="hard")).run()


def test_larger_student_and_given_teacher(tmp_path):
    data = tiny_data()
    teacher = train_and_evaluate(SPEC, data, steps=3, resolution=12, batch_size=16, recipe="adamw",
                                 return_model=True)
    wider = small_spec(resolution=12, num_classes=3, head_channels=48)
    s = NoisyStudent(tmp_path, data, SPEC, config(), student=wider,
                     teacher_weights=teacher.model.state_dict()).run()
    assert s["teacher"]["accuracy"] == pytest.approx(teacher.accuracy)  # evaluated, not retrained
    state = torch.load(tmp_path / "round-1" / "weights.pt", weights_only=True)
    assert state["classifier.weight"].shape == (3, 48)


# ---------------------------------------------------------------- FixRes


def test_fixres_trains_only_the_classifier_and_batchnorm():
    data = tiny_data()
    r = train_and_evaluate(SPEC, data, steps=4, resolution=12, batch_size=16, recipe="adamw", return_model=True)
    before = {k: v.clone() for k, v in r.model.state_dict().items()}
    fix = fixres_finetune(SPEC, r.model, data, 16, epochs=1, batch_size=16)
    after = fix.model.state_dict()
    assert fix.layers == FINETUNED_LAYERS and 0 <= fix.no_finetune_accuracy <= 1
    model = build_model(SPEC.replace(num_classes=3))
    freeze_for(model, FINETUNED_LAYERS)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    bn = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert trainable == {f"{m}.{p}" for m in bn for p in ("weight", "bias")} | {"classifier.weight", "classifier.bias"}
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], after[name])
        assert changed == (name in trainable), name
    assert torch.equal(r.model.state_dict()["classifier.weight"], before["classifier.weight"])  # input untouched


# ---------------------------------------------------------------- the commands


def _student(argv, capsys):
    from nas.cli.student import main
    code = main(argv)
    return code, capsys.readouterr()


@pytest.mark.parametrize("flags, message", [
    (["--labeled", "5000"], "--labeled must be between 1 and 2999"),
    (["--labeled", "100", "--student", "no-such-spec"], "--student"),
    (["--labeled", "100", "--resolution", "0"], "--resolution must be >= 1"),
    (["--labeled", "100", "--threshold", "1"], "--threshold must be below 1"),
])
def test_student_bad_input_is_one_line_and_exit_2(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    code, cap = _student(["efficientnet-b0", "--data", "sample", *flags, "--output", str(out)], capsys)
    assert code == 2 and message in cap.err and cap.err.count("\n") == 1 and "Traceback" not in cap.err
    assert not out.exists()  # nothing half-written


def test_student_refuses_a_teacher_of_another_class_count(tmp_path, capsys):
    spec = small_spec(resolution=16)
    weights = tmp_path / "w.pt"
    torch.save(build_model(spec.replace(num_classes=7)).state_dict(), weights)
    out = tmp_path / "run"
    code, cap = _student([spec.to_json(), "--data", "sample", "--labeled", "100", "--teacher-weights", str(weights),
                          "--resolution", "16", "--output", str(out)], capsys)
    assert code == 2 and "the teacher has 7 classes, the data 10" in cap.err and not out.exists()


def test_student_command_runs_and_exports(tmp_path, capsys):
    out = tmp_path / "run"
    spec = small_spec(resolution=16)
    code, cap = _student([spec.to_json(), "--data", "sample", "--labeled", "60", "--rounds", "1", "--steps", "3",
                          "--resolution", "16", "--batch-size", "16", "--output", str(out), "--quiet", "--json"], capsys)
    assert code == 0, cap.err
    summary = json.loads(cap.out)
    assert set(summary["teacher"]) >= {"accuracy"} and summary["rounds"][0]["round"] == 1
    assert {"student_accuracy", "pseudo_labeled", "seconds"} <= set(summary["rounds"][0])
    from nas.cli.export import main as export
    r1 = out / "round-1"
    assert export([str(r1 / "spec.json"), "--weights", str(r1 / "weights.pt"), "--format", "torchscript",
                   "--output", str(tmp_path / "s.pt")]) == 0


def test_train_finetune_flags(tmp_path, capsys):
    from nas.cli.train import main as train
    spec = small_spec(resolution=16).to_json()
    assert train([spec, "--resolution", "16", "--test-resolution", "20", "--finetune-resolution", "20"]) == 2
    assert "not both" in capsys.readouterr().err
    assert train([spec, "--resolution", "16", "--finetune-resolution", "0"]) == 2
    out = tmp_path / "t"
    assert train([spec, "--resolution", "16", "--finetune-resolution", "20", "--steps", "3", "--limit-train", "64",
                  "--limit-val", "64", "--batch-size", "16", "--quiet", "--output", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["fixres"]["layers"] == "classifier+bn" and m["fixres"]["test_resolution"] == 20
    assert {"no_finetune_accuracy", "finetune_accuracy"} <= set(m["fixres"])
    assert json.loads((out / "spec.json").read_text())["resolution"] == 20  # the fine-tuned weights' resolution


def test_evaluating_only_at_the_end_changes_nothing_but_the_history():
    data = tiny_data()
    kw = dict(steps=24, resolution=12, batch_size=16, recipe="adamw", seed=0, return_model=True)  # 3 epochs + 3 steps
    each = train_and_evaluate(SPEC, data, **kw)
    end = train_and_evaluate(SPEC, data, evaluate_each_epoch=False, **kw)
    assert len(each.history) == 4 and len(end.history) == 1
    # the same training; only the final BN calibration draws other batches (its loader advanced per evaluation)
    a, b = dict(each.model.named_parameters()), dict(end.model.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert end.loss == pytest.approx(each.loss, rel=0.05)


def test_unlabeled_images_from_another_source_are_conformed():
    from nas.noisy_student import conform_images
    data = tiny_data()  # grey 12x12
    rgb = torch.zeros(2, 3, 24, 24, dtype=torch.uint8)
    rgb[:, 0] = 90  # mean over channels: 30
    out = conform_images(rgb, data)
    assert out.dtype == torch.uint8 and out.shape == (2, 1, 12, 12) and int(out.max()) == 30 == int(out.min())
