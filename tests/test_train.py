"""The training evaluator (nas.train) and the nas-train CLI.

Tiny specs at 16 px on small subsets of the embedded sample keep this fast.
"""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import nas.recipes as recipes_mod
import nas.train as train_mod
from nas.build import build_model
from nas.data import load_dataset
from nas.presets import load_preset
from nas.spec import Spec
from nas.testing import small_spec
from nas.train import RECIPES, SCHEDULES, Recipe, min_resolution, train_and_evaluate


def tiny_spec(activation="swish", skip="identity", in_channels=3, name="tiny") -> Spec:
    return small_spec(activation=activation, skip=skip, in_channels=in_channels, name=name,
                      stages=[{"op": "dwconv", "expand_ratio": 1}, {}, {"se_ratio": 0.0}])


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def data():
    return load_dataset("sample").subset(320, 160, seed=0)


def run(spec, data, **kw):
    kw.setdefault("resolution", 16)
    kw.setdefault("batch_size", 32)
    return train_and_evaluate(spec, data, **kw)


def test_result_fields_and_json(data):
    r = run(tiny_spec(), data, epochs=2)
    assert not r.failed and r.reason is None and not r.pruned
    assert 0.0 <= r.accuracy <= 1.0 and math.isfinite(r.loss)
    assert r.epochs == 2.0 and r.steps == 2 * (320 // 32)
    assert r.seconds > 0 and r.images_per_second > 0
    assert [h["epoch"] for h in r.history] == [1.0, 2.0]
    assert r.history[-1]["val_accuracy"] == r.accuracy and r.history[-1]["val_loss"] == r.loss
    assert set(r.history[0]) == {"epoch", "train_loss", "val_accuracy", "val_loss", "seconds"}
    d = r.to_dict()
    assert "model" not in d
    assert json.loads(json.dumps(d)) == d
    assert r.model is None


def test_deterministic_with_a_seed_and_leaves_global_rng_alone(data):
    state = torch.get_rng_state()
    a = run(tiny_spec(), data, epochs=1, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = run(tiny_spec(), data, epochs=1, seed=3)
    assert a.accuracy == b.accuracy and a.loss == b.loss
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]


def test_different_seeds_give_different_runs(data):
    a = run(tiny_spec(), data, steps=3, seed=0)
    b = run(tiny_spec(), data, steps=3, seed=1)
    assert a.history[0]["train_loss"] != b.history[0]["train_loss"]


def test_steps_budget_and_partial_epochs(data):
    r = run(tiny_spec(), data, steps=4)
    assert r.steps == 4 and r.epochs == pytest.approx(4 / 10)
    assert len(r.history) == 1
    r = run(tiny_spec(), data, epochs=1.5)
    assert r.steps == 15 and [h["epoch"] for h in r.history] == [1.0, 1.5]


def test_on_epoch_can_stop_training(data):
    seen = []

    def on_epoch(i, acc):
        seen.append((i, acc))
        return i == 0

    r = run(tiny_spec(), data, epochs=3, on_epoch=on_epoch)
    assert r.pruned and not r.failed
    assert seen == [(0, r.history[0]["val_accuracy"])]
    assert r.epochs == 1.0 and len(r.history) == 1 and r.accuracy is not None


def test_on_epoch_returning_none_or_false_keeps_training(data):
    calls = []
    r = run(tiny_spec(), data, epochs=2, on_epoch=lambda i, a: calls.append(i))
    assert calls == [0, 1] and not r.pruned and r.epochs == 2.0


def test_diverging_learning_rate_is_a_failed_result(data):
    r = run(tiny_spec(), data, steps=30, lr=1e12)
    assert r.failed and r.accuracy is None and r.loss is None
    assert r.reason.startswith("loss became") and " at step " in r.reason
    assert "nan" in r.reason or "inf" in r.reason


def test_nan_loss_reports_the_step(data, monkeypatch):
    real = nn.CrossEntropyLoss

    class NanAtStep3(real):
        calls = 0

        def forward(self, out, y):
            NanAtStep3.calls += 1
            loss = super().forward(out, y)
            return loss * float("nan") if NanAtStep3.calls == 3 else loss

    monkeypatch.setattr(train_mod.nn, "CrossEntropyLoss", NanAtStep3)
    r = run(tiny_spec(), data, steps=5)
    assert r.failed and r.reason == "loss became nan at step 3"
    assert r.steps == 2


@pytest.mark.parametrize("error", [RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 GB"),
                                   MemoryError()])
def test_out_of_memory_is_a_failed_result(data, monkeypatch, error):
    class Boom(nn.Module):
        def __init__(self, spec):
            super().__init__()
            self.classifier = nn.Linear(4, spec.num_classes)

        def forward(self, x):
            raise error

    monkeypatch.setattr(train_mod, "build_model", Boom)
    r = run(tiny_spec(), data, steps=2)
    assert r.failed and r.reason.startswith("out of memory")


def test_programming_errors_still_raise(data, monkeypatch):
    class Broken(nn.Module):
        def __init__(self, spec):
            super().__init__()
            self.classifier = nn.Linear(4, spec.num_classes)

        def forward(self, x):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(train_mod, "build_model", Broken)
    with pytest.raises(RuntimeError, match="shapes"):
        run(tiny_spec(), data, steps=2)


def test_classifier_sized_to_data_and_channels_adapted(data):
    r = run(tiny_spec(in_channels=1), data, steps=2, return_model=True)
    assert r.model.classifier.out_features == data.num_classes == 10
    assert r.model.stem[0].in_channels == 1
    r = run(tiny_spec(in_channels=3), data, steps=2, return_model=True)
    assert r.model.stem[0].in_channels == 3
    assert isinstance(r.model, nn.Module) and not r.model.training


def test_trains_channels_last_and_hands_the_model_back_contiguous(data, monkeypatch):
    seen = []
    real = train_mod.build_model

    def spy(spec):
        model = real(spec)
        model.register_forward_pre_hook(lambda m, args: seen.append(
            args[0].is_contiguous(memory_format=torch.channels_last) and m.stem[0].weight.is_contiguous(
                memory_format=torch.channels_last)))
        return model

    monkeypatch.setattr(train_mod, "build_model", spy)
    r = run(tiny_spec(), data, steps=2, return_model=True)
    assert seen and all(seen)  # every training and evaluation forward ran in NHWC
    assert all(p.is_contiguous() for p in r.model.parameters())  # weights.pt holds standard tensors


def test_test_resolution(data, monkeypatch):
    seen = []  # (training?, input side) of every forward
    real = train_mod.build_model

    def spy(spec):
        model = real(spec)
        model.register_forward_pre_hook(lambda m, args: seen.append((m.training, args[0].shape[-1])))
        return model

    monkeypatch.setattr(train_mod, "build_model", spy)
    r = run(tiny_spec(), data, steps=3, test_resolution=24)
    assert (r.resolution, r.test_resolution) == (16, 24)
    assert 0.0 <= r.accuracy <= 1.0
    assert {side for training, side in seen[:3]} == {16}  # the three training steps
    # evaluation (and the BN recalibration before it) sees the test resolution only
    assert seen[3:] and {side for _, side in seen[3:]} == {24}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_trains(data, name):
    r = run(tiny_spec(), data, steps=4, recipe=name)
    assert not r.failed and r.recipe == name
    assert RECIPES[name].name == name


def test_recipe_objects_and_overrides(data, monkeypatch):
    used = []  # (recipe, peak learning rate) handed to the optimizer
    real = train_mod.make_optimizer
    monkeypatch.setattr(train_mod, "make_optimizer", lambda rec, model, lr: used.append((rec, lr)) or real(rec, model, lr))
    custom = dataclasses.replace(RECIPES["resnet"], lr=0.05, schedule="exponential", bn_recalibration=0)
    r = run(tiny_spec(), data, steps=3, recipe=custom)
    assert not r.failed and used[-1] == (custom, 0.05 * 32 / 256)  # per 256 images, batch 32
    run(tiny_spec(), data, steps=1, recipe="efficientnet", lr=0.2)
    assert used[-1] == (dataclasses.replace(RECIPES["efficientnet"], lr=0.2), 0.2 * 32 / 256)
    with pytest.raises(ValueError, match="unknown recipe"):
        run(tiny_spec(), data, steps=1, recipe="lamb")


def test_reference_recipes_are_the_papers():
    # EfficientNet (Tan & Le 2019, Sec. 5.2): RMSProp decay 0.9, momentum 0.9, weight decay 1e-5,
    # label smoothing 0.1; TF's epsilon 1e-3 sits inside the square root, PyTorch's outside.
    e = RECIPES["efficientnet"]
    assert (e.optimizer, e.rmsprop_alpha, e.momentum, e.weight_decay, e.label_smoothing) == \
        ("rmsprop", 0.9, 0.9, 1e-5, 0.1)
    assert e.rmsprop_eps ** 2 == pytest.approx(1e-3)
    # ResNet (He et al. 2016; Goyal et al. 2017): SGD momentum 0.9, 0.1 per 256 images, weight
    # decay 1e-4, x0.1 at epochs 30, 60 and 80 of 90.
    s = RECIPES["resnet"]
    assert (s.optimizer, s.momentum, s.nesterov, s.lr, s.weight_decay, s.label_smoothing) == \
        ("sgd", 0.9, False, 0.1, 1e-4, 0.0)
    assert s.schedule == "step" and s.step_gamma == 0.1
    assert [m * 90 for m in s.step_milestones] == pytest.approx([30, 60, 80])
    with pytest.raises(dataclasses.FrozenInstanceError):  # a shared table: nobody may change it in place
        RECIPES["adamw"].lr = 1.0


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_field_reaches_the_optimizer(name):
    # the recipe as registered, and with every field off its value (a registered value that happens
    # to equal the optimizer's default would hide a field that never arrives)
    odd = dict(momentum=0.85, weight_decay=0.125, nesterov=not RECIPES[name].nesterov, rmsprop_alpha=0.75,
               rmsprop_eps=0.0625)
    for rec in (RECIPES[name], dataclasses.replace(RECIPES[name], **odd)):
        model = build_model(tiny_spec())
        opt = train_mod.make_optimizer(rec, model, 0.5)
        assert type(opt) is {"rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[
            rec.optimizer]
        decay, no_decay = opt.param_groups
        # weight decay on weights only: never on BN scales and biases (1-D tensors)
        assert {p.ndim > 1 for p in decay["params"]} == {True} and {p.ndim for p in no_decay["params"]} == {1}
        assert (decay["weight_decay"], no_decay["weight_decay"]) == (rec.weight_decay, 0.0)
        assert {g["lr"] for g in opt.param_groups} == {0.5}
        if rec.optimizer == "rmsprop":
            assert (decay["alpha"], decay["eps"], decay["momentum"]) == (rec.rmsprop_alpha, rec.rmsprop_eps,
                                                                         rec.momentum)
            # TF's RMSProp starts the mean square at 1, not 0 (else the first steps are ~3x too large)
            assert all(torch.equal(opt.state[p]["square_avg"], torch.ones_like(p)) for p in model.parameters())
        elif rec.optimizer == "sgd":
            assert (decay["momentum"], decay["nesterov"]) == (rec.momentum, rec.nesterov)
        else:
            assert decay["betas"] == (rec.momentum, 0.999)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_schedules_warm_up_then_decay(schedule):
    r = Recipe(name="x", optimizer="sgd", lr=1.0, warmup=0.1, schedule=schedule)
    f = [r.lr_factor(i, 100) for i in range(100)]
    assert f[0] < f[5] < f[9] <= 1.0  # warm-up
    assert max(f) == pytest.approx(1.0, abs=0.1)
    assert all(a >= b - 1e-12 for a, b in zip(f[10:], f[11:]))  # never increases after warm-up
    assert f[-1] < 0.2


def test_bn_recalibration_matters_for_short_runs(data):
    # With BN momentum 0.01 a 10-step run leaves running statistics near their
    # initial values; re-estimating them is what makes evaluation meaningful.
    base = RECIPES["efficientnet"]
    off = run(tiny_spec(), data, epochs=1, recipe=dataclasses.replace(base, bn_recalibration=0))
    on = run(tiny_spec(), data, epochs=1, recipe=base)
    assert on.loss < off.loss


def test_bad_arguments(data):
    with pytest.raises(ValueError, match="too small"):
        run(load_preset("efficientnet-b0"), data, steps=1, resolution=4)
    assert min_resolution(load_preset("efficientnet-b0")) == 8
    with pytest.raises(ValueError, match="batch_size"):
        run(tiny_spec(), data, steps=1, batch_size=1)
    with pytest.raises(ValueError, match="steps"):
        run(tiny_spec(), data, steps=0)
    with pytest.raises(ValueError, match="epochs"):
        run(tiny_spec(), data, epochs=0)


def test_label_smoothing_reaches_the_loss(data, monkeypatch):
    made = []
    real = nn.CrossEntropyLoss

    class Spy(real):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            made.append(self.label_smoothing)

    monkeypatch.setattr(train_mod.nn, "CrossEntropyLoss", Spy)
    for name in ("efficientnet", "resnet"):
        run(tiny_spec(), data, steps=1, recipe=name)
    assert made == [RECIPES["efficientnet"].label_smoothing, RECIPES["resnet"].label_smoothing] == [0.1, 0.0]


# ---------------------------------------------------------------- the CLI


def nas_train(*args, cwd=None):
    exe = [sys.executable, "-c", "from nas.cli.train import entry; entry()"]
    import shutil
    script = shutil.which("nas-train")
    cmd = [script] if script else exe
    return subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_json_output_weights_and_metrics(tmp_path):
    spec_path = tmp_path / "tiny.json"
    tiny_spec().save(spec_path)
    out = tmp_path / "run"
    p = nas_train(str(spec_path), "--steps", "3", "--resolution", "16", "--batch-size", "32", "--limit-train", "200",
                  "--limit-val", "100", "--json", "--output", str(out))
    assert p.returncode == 0, p.stderr
    m = json.loads(p.stdout)  # stdout is exactly one JSON object
    assert p.stdout.count("\n") == 1
    for key in ("accuracy", "loss", "epochs", "seconds", "images_per_second"):
        assert key in m
    assert m["steps"] == 3 and 0 <= m["accuracy"] <= 1
    assert json.loads((out / "metrics.json").read_text()) == m
    state = torch.load(out / "weights.pt", weights_only=True)
    from nas.build import build_model
    trained = Spec.load(out / "spec.json")
    assert trained.num_classes == 10 and trained.resolution == 16
    model = build_model(trained)
    model.load_state_dict(state)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "spec.json", "weights.pt"]


def test_cli_text_summary(tmp_path):
    spec_path = tmp_path / "tiny.json"
    tiny_spec().save(spec_path)
    p = nas_train(str(spec_path), "--steps", "2", "--resolution", "16", "--limit-train", "128", "--limit-val", "64",
                  "--recipe", "resnet", "--quiet")
    assert p.returncode == 0, p.stderr
    assert "held-out accuracy" in p.stdout and "recipe resnet" in p.stdout
    assert p.stderr == ""


@pytest.mark.parametrize("args, code, needle", [
    (["efficientnet-b0", "--data", "nowhere"], 2, "unknown data source"),
    (["efficientnet-b0", "--data", "idx:/nonexistent/dir"], 1, "idx:/nonexistent/dir"),
    (["efficientnet-b0", "--resolution", "0"], 2, "--resolution"),
    (["efficientnet-b0", "--resolution", "4"], 2, "too small"),
    (["efficientnet-b0", "--epochs", "-1"], 2, "--epochs"),
    (["efficientnet-b0", "--epochs", "1", "--steps", "2"], 2, "not allowed"),
    (["efficientnet-b0", "--recipe", "adam"], 2, "--recipe"),
    (["efficientnet-b0", "--batch-size", "1"], 2, "--batch-size"),
    (["no-such-preset"], 2, "unknown preset"),
])
def test_cli_bad_input_is_one_line(args, code, needle, tmp_path):
    p = nas_train(*args, "--json", "--output", str(tmp_path / "out"))
    assert p.returncode == code, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas-train: error:") and needle in lines[0]
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert not (tmp_path / "out").exists()


def test_cli_output_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    p = nas_train("efficientnet-b0", "--output", str(f))
    assert p.returncode == 2 and "not a directory" in p.stderr and f.read_text() == "x"


def test_cli_empty_folder_dataset(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "b").mkdir(parents=True)
    p = nas_train("efficientnet-b0", "--data", f"folder:{tmp_path / 'data'}")
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_cli_offers_the_recipe_registry_without_importing_torch():
    # The commands read nas.recipes (the table nas.train runs) instead of a copy, and must stay torch-free.
    r = subprocess.run([sys.executable, "-c",
                        "import sys; import nas.cli.train, nas.cli.scale, nas.cli.search\n"
                        "assert 'torch' not in sys.modules, 'torch was imported'"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert train_mod.RECIPES is recipes_mod.RECIPES
    p = nas_train("efficientnet-b0", "--recipe", "no-such-recipe")
    assert p.returncode == 2
    assert all(repr(name) in p.stderr for name in RECIPES), p.stderr


def test_augmentation_defaults_on_from_sixteen_epochs_and_is_recorded(data):
    short = run(tiny_spec(), data, epochs=1, limit_train=64)
    long = run(tiny_spec(), data, epochs=16, limit_train=64)
    forced_off = run(tiny_spec(), data, epochs=16, limit_train=64, augment=False)
    assert (short.augment, long.augment, forced_off.augment) == (False, True, False)
    # same seed, same initialisation and order: only the augmented images differ
    assert forced_off.history[0]["train_loss"] != long.history[0]["train_loss"]
    forced_on = run(tiny_spec(), data, epochs=1, limit_train=64, augment=True)
    assert forced_on.augment and forced_on.history[0]["train_loss"] != short.history[0]["train_loss"]


def test_augmented_training_is_deterministic_with_its_seed(data):
    a = run(tiny_spec(), data, epochs=1, limit_train=64, augment=True, seed=3)
    b = run(tiny_spec(), data, epochs=1, limit_train=64, augment=True, seed=3)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"] and a.accuracy == b.accuracy
