"""Tests for nas.export and nas-export: generated code, ONNX, TorchScript, safety, bad input.

Small specs (B0 at 32 px, a few random small specs) keep this under the time budget;
weights are seeded with calibrated BN statistics so that outputs have unit scale and
every comparison can fail (a fresh EfficientNet's logits are ~1e-14).
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nas.export as ex
from nas.bn import recalibrate_bn
from nas.build import build_model
from nas.presets import load_spec
from nas.spec import Spec

torch.set_num_threads(1)  # other work shares these cores; small models do not need two

# --------------------------------------------------------------------------- helpers


def b0_small() -> Spec:
    return load_spec("efficientnet-b0").replace(resolution=32, num_classes=10)


def random_spec(seed: int) -> Spec:
    """A small spec drawn from every op, skip, activation and SE choice (expand ratios not integral too)."""
    rng = random.Random(seed)
    stages = []
    for i in range(rng.randint(2, 4)):
        op = rng.choice(["mbconv", "dwconv", "conv"])
        expand = 1 if op == "dwconv" else rng.choice([1, 2.5, 3, 6]) if op == "mbconv" else rng.choice([1, 2])
        act = rng.choice(["swish", "relu", "relu6"])
        stages.append({
            "op": op, "kernel": rng.choice([1, 3, 5]), "stride": rng.choice([1, 2]), "expand_ratio": expand,
            "se_ratio": rng.choice([0, 0.25, 0.5]), "skip": rng.choice(["identity", "none", "pool"]),
            "out_channels": rng.choice([8, 12, 16, 24]), "repeats": rng.randint(1, 3), "activation": act,
            "se_activation": rng.choice(["swish", "relu", "relu6"])})
    return Spec.from_dict({
        "format": "nas-spec", "version": 1, "name": f"random-{seed}", "in_channels": rng.choice([1, 3]),
        "resolution": 32, "num_classes": rng.choice([7, 10]), "activation": rng.choice(["swish", "relu"]),
        "stem": {"out_channels": rng.choice([8, 16]), "kernel": 3, "stride": rng.choice([1, 2])},
        "stages": stages, "head": {"out_channels": rng.choice([32, 64])}, "dropout": 0.2,
        "drop_connect_rate": rng.choice([0.0, 0.2]), "bn": {"eps": rng.choice([1e-3, 1e-5]), "momentum": 0.01},
        "provenance": {"seed": seed}})


SPECS = {"b0@32": b0_small, **{f"random-{s}": (lambda s=s: random_spec(s)) for s in (1, 2, 24, 32)}}  # seeds chosen for coverage


def test_random_specs_cover_the_space():
    stages = [st for make in SPECS.values() for st in make().stages]
    assert {s.op for s in stages} == {"mbconv", "dwconv", "conv"}
    assert {s.skip for s in stages} == {"identity", "none", "pool"}
    assert {s.activation for s in stages} | {s.se_activation for s in stages} == {"swish", "relu", "relu6"}
    assert any(s.op == "conv" and s.expand_ratio != 1 for s in stages)  # Fused-MBConv
    assert any(s.expand_ratio == 2.5 for s in stages)  # rounded expanded width
    assert any(s.skip == "pool" and s.stride == 2 for s in stages)


def import_file(path: Path, name: str | None = None):
    name = name or f"exported_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generated_module(tmp_path: Path, spec, class_name=None):
    path = tmp_path / f"net_{uuid.uuid4().hex[:8]}.py"
    path.write_text(ex.export_python(spec, class_name), encoding="utf-8")
    module = import_file(path)
    return module, getattr(module, module.__all__[0])


def calibrated_state(spec: Spec, seed: int = 0) -> dict:
    """Seeded weights with BN statistics from 32 random images: unit-scale, well-conditioned outputs."""
    torch.manual_seed(seed)
    model = build_model(spec)
    x = torch.randn(32, spec.in_channels, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(seed))
    return recalibrate_bn(model, [x]).state_dict()


def x_for(spec: Spec, batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, spec.in_channels, spec.resolution, spec.resolution, generator=g)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- generated Python


@pytest.mark.parametrize("name", list(SPECS))
def test_python_state_dict_and_outputs_match_the_builder(tmp_path, name):
    spec = SPECS[name]()
    _, cls = generated_module(tmp_path, spec)
    ours, theirs = build_model(spec), cls()
    # Same names, same order, same shapes (parameters and buffers).
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
           [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    # Same stochastic-depth ramp and init scheme.
    ramp = lambda m: [mod.p for mod in m.modules() if type(mod).__name__ == "StochasticDepth"]  # noqa: E731
    assert ramp(ours) == ramp(theirs)
    # Weights load both ways with strict=True, and the outputs are bitwise identical.
    state = calibrated_state(spec)
    ours.load_state_dict(state, strict=True)
    theirs.load_state_dict(state, strict=True)
    ours.eval(), theirs.eval()
    x = x_for(spec)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.abs().max() > 1e-2  # a meaningful comparison, not two vanishing outputs
    assert torch.equal(a, b)
    back = build_model(spec)
    back.load_state_dict(theirs.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(back.eval()(x), a)


def test_python_training_mode_matches_with_the_same_seed(tmp_path):
    spec = random_spec(2)
    _, cls = generated_module(tmp_path, spec)
    ours, theirs = build_model(spec), cls()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = x_for(spec, batch=4)
    torch.manual_seed(5)
    a = ours.train()(x)
    torch.manual_seed(5)
    b = theirs.train()(x)
    assert torch.equal(a, b)  # same dropout and drop-path draws in the same order


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_python_is_scriptable_and_keeps_constructor_options(tmp_path):
    spec = b0_small()
    _, cls = generated_module(tmp_path, spec, class_name="TinyNet")
    assert cls.__name__ == "TinyNet"
    model = cls(num_classes=3, in_channels=1).eval()
    assert model.classifier.out_features == 3 and model.stem[0].in_channels == 1
    scripted = torch.jit.script(model)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))


def test_python_is_a_literal_table_that_needs_only_torch():
    spec = load_spec("mnasnet-a1")
    code = ex.export_python(spec)
    tree = ast.parse(code)
    imports = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imports |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imports == {"__future__", "torch", "typing"}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"open", "json", "eval", "exec", "__import__", "compile"}
    table = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "STAGES")
    rows = ast.literal_eval(table)
    assert rows == [(s.op, s.kernel, s.stride, s.expand_ratio, s.se_ratio, s.skip, s.out_channels, s.repeats,
                     s.activation, s.se_activation) for s in spec.stages]
    assert json.loads(ast.get_docstring(tree).split("Provenance (JSON):\n", 1)[1]) == spec.provenance
    assert "class MnasnetA1(Network):" in code


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_python_imports_in_a_fresh_interpreter_without_the_toolkit(tmp_path):
    spec = b0_small()
    path = tmp_path / "my_net.py"
    path.write_text(ex.export_python(spec, class_name="MyNet"), encoding="utf-8")
    ex.export_torchscript(spec, tmp_path / "my_net.pt")
    script = (
        "import sys, runpy\n"
        "for name in ('nas', 'scaling', 'search_spaces'):\n"
        "    sys.modules[name] = None  # any import of the toolkit now fails\n"
        "try:\n"
        "    import nas\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('toolkit still importable')\n"
        "import my_net\n"
        "m = my_net.MyNet().eval()\n"
        "print(sorted(k for k in sys.modules if k == 'nas' or k.startswith('nas.')))\n"
        "runpy.run_path('my_net.py', run_name='__main__')\n"
        "import torch\n"
        "print(tuple(torch.jit.load('my_net.pt')(torch.randn(2, 3, 32, 32)).shape))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    out = subprocess.run([sys.executable, "-s", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "['nas']"  # only our None placeholder: nothing of the toolkit loaded
    assert "output (1, 10) at 32x32" in lines[1]
    assert lines[2] == "(2, 10)"  # the TorchScript file needs no toolkit either


# --------------------------------------------------------------------------- safety

SENTINEL = "NAS_EXPORT_PWNED"
PAYLOADS = [
    '"""',
    "'''",
    '\\"""',
    '"',
    'ends with a quote "',
    "ends with a backslash \\",
    '"""\nimport builtins; builtins.NAS_EXPORT_PWNED = 1\n"""',
    "'''\nimport builtins; builtins.NAS_EXPORT_PWNED = 1\n'''",
    "__import__('builtins').__setattr__('NAS_EXPORT_PWNED', 1)",
    "{__import__('builtins').__setattr__('NAS_EXPORT_PWNED', 1)}",
    "\r\nimport builtins; builtins.NAS_EXPORT_PWNED = 1\r\n",
    "\x00\x0b\x0c\x1b[31m",
    "\u2028\u2029\x85 line separators",
    "\ud800 lone surrogate",
    "\u202e right-to-left override \u202d",
    "emoji \U0001F600 and ünïcödé",
    "__CLASS__",
    "\\N{BULLET} \\x41 \\u0041 \\",
    "\t tab \\t",
]


def hostile_spec(payload: str) -> Spec:
    base = random_spec(1)
    return base.replace(name=payload, provenance={
        "note": payload, payload: [payload, {"nested": payload}], "n": 3, "list": [payload * 2, None, True]})


def _shape(tree: ast.AST) -> str:
    """The AST with every string constant blanked: the code's structure, independent of the spec's text."""
    tree = ast.parse(ast.unparse(tree))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = ""
        if isinstance(node, ast.ClassDef) and node.name not in ex._GENERATED_NAMES:
            node.name = "X"
        if isinstance(node, ast.Name) and node.id == "NetX":
            node.id = "X"
    return ast.dump(tree)


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_hostile_specs_cannot_inject_code(tmp_path, payload):
    import builtins

    spec = hostile_spec(payload)
    code = ex.export_python(spec, class_name="NetX")
    benign = ex.export_python(random_spec(1), class_name="NetX")
    tree = ast.parse(code)
    # Same program as for a harmless spec: only string contents differ.
    assert _shape(tree) == _shape(ast.parse(benign))
    # The text arrives intact, as data.
    doc = ast.get_docstring(tree, clean=False)
    assert json.loads(doc.split("Provenance (JSON):\n", 1)[1]) == spec.provenance
    assert f"Spec name: {json.dumps(payload, ensure_ascii=False)}\n" in doc
    path = tmp_path / "hostile.py"
    path.write_bytes(code.encode("utf-8"))  # the file is valid UTF-8 (no raw surrogates)
    assert not hasattr(builtins, SENTINEL)
    module = import_file(path)
    assert not hasattr(builtins, SENTINEL)
    assert module.SPEC_NAME == payload
    # ...and it still is the same network.
    model = module.NetX().eval()
    ours = build_model(spec).eval()
    model.load_state_dict(ours.state_dict(), strict=True)
    x = x_for(spec, batch=1)
    with torch.no_grad():
        assert torch.equal(model(x), ours(x))


def test_default_class_name_from_a_hostile_name_is_plain_ascii():
    for payload in PAYLOADS + ["", "123", "class", "int", "-", "efficientnet-b0"]:
        name = ex.default_class_name(Spec.from_dict({**random_spec(1).to_dict(), "name": payload}))
        assert name.isidentifier() and name.isascii() and ex.check_class_name(name) == name
    assert ex.default_class_name(load_spec("efficientnet-b0")) == "EfficientnetB0"


_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
_json = st.recursive(st.none() | st.booleans() | st.integers() | _text,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3), max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_text, provenance=st.dictionaries(_text, _json, max_size=4))
def test_any_name_and_provenance_round_trip_as_data(name, provenance):
    spec = random_spec(3).replace(name=name, provenance=provenance)
    code = ex.export_python(spec)
    code.encode("utf-8")
    tree = ast.parse(code)
    doc = ast.get_docstring(tree, clean=False)
    assert json.loads(doc.split("Provenance (JSON):\n", 1)[1]) == spec.provenance
    values = {n.targets[0].id: n.value for n in tree.body if isinstance(n, ast.Assign)}
    assert ast.literal_eval(values["SPEC_NAME"]) == name
    assert [type(n).__name__ for n in tree.body] == [type(n).__name__ for n in ast.parse(ex.export_python(random_spec(3))).body]


@pytest.mark.parametrize("bad", ["class", "1Net", "my-net", "", "My Net", "int", "object", "torch", "nn", "STAGES",
                                 "Network", "MBConv", "plan_layers", "Stage", "ConvBNAct", "__init__", "\uff49\uff4e\uff54", "match", "a\nb", "Net;x"])
def test_bad_class_names_are_refused(bad):
    with pytest.raises(ValueError) as info:
        ex.export_python(b0_small(), class_name=bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("good", ["MyNet", "Net_2", "_Private", "Ünet"])
def test_good_class_names_are_kept(good):
    assert f"class {good}(Network):" in ex.export_python(b0_small(), class_name=good)


# --------------------------------------------------------------------------- weights


def test_load_weights_accepts_state_dicts_and_checkpoints(tmp_path):
    spec = random_spec(1)
    state = calibrated_state(spec)
    torch.save(state, tmp_path / "w.pt")
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pt")
    for source in (tmp_path / "w.pt", str(tmp_path / "ckpt.pt"), state):
        model = ex.load_weights(spec, source)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def _mismatch_cases(spec):
    state = calibrated_state(spec)
    first = next(iter(state))
    missing = dict(state)
    del missing[first]
    wrong = dict(state)
    key = "classifier.weight"
    wrong[key] = torch.zeros(wrong[key].shape[0] + 1, wrong[key].shape[1])
    extra = {**state, "extra.weight": torch.zeros(1)}
    return [(missing, f"missing tensor {first}"), (wrong, f"{key} has shape"), (extra, "unexpected tensor extra.weight"),
            (calibrated_state(b0_small()), "do not match the spec")]


def test_mismatching_weights_name_the_tensor(tmp_path):
    spec = random_spec(1)
    for i, (state, fragment) in enumerate(_mismatch_cases(spec)):
        path = tmp_path / f"w{i}.pt"
        torch.save(state, path)
        with pytest.raises(ex.WeightsError) as info:
            ex.load_weights(spec, path)
        assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_unreadable_weights_are_one_line_errors(tmp_path):
    spec = random_spec(1)
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a torch file")
    torch.save([1, 2, 3], tmp_path / "list.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    import pickle
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"stem.0.weight": Evil()}))
    for name, fragment in [("garbage.pt", "cannot read weights"), ("list.pt", "not a state_dict"),
                           ("evil.pt", "cannot read weights"), ("absent.pt", "no such file")]:
        with pytest.raises(ex.WeightsError) as info:
            ex.load_weights(spec, tmp_path / name)
        assert fragment in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- ONNX and TorchScript


def _onnx_check(path: Path, spec: Spec, state: dict):
    import numpy as np
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = build_model(spec)
    model.load_state_dict(state)
    x = x_for(spec, batch=5, seed=9)  # a batch size the exporter never saw: the axis is dynamic
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= ex.TOLERANCE
    assert np.abs(ref).max() > 1e-2


@pytest.mark.parametrize("name", ["b0@32", "random-2"])
def test_onnx_export_is_verified_and_has_a_dynamic_batch(tmp_path, name):
    spec = SPECS[name]()
    state = calibrated_state(spec)
    path = tmp_path / "net.onnx"
    report = ex.export_onnx(spec, path, weights=state)
    assert report["exporter"] == "torchscript (legacy)"
    assert isinstance(report["opset"], int) and report["opset"] >= 13
    assert report["max_abs_diff"] <= ex.TOLERANCE and report["max_abs_output"] > 1e-2
    assert report["batch_sizes"] == [1, 3] and report["resolution"] == 32
    _onnx_check(path, spec, state)
    assert no_temp_files(tmp_path)


def test_onnx_export_at_another_resolution_and_opset(tmp_path):
    spec = random_spec(4)
    report = ex.export_onnx(spec, tmp_path / "n.onnx", resolution=48, opset=17)
    assert report["opset"] == 17 and report["resolution"] == 48
    assert report["weights"].startswith("initialised")


def test_onnx_falls_back_to_the_dynamo_exporter(tmp_path, monkeypatch, capfd):
    def broken(*args):
        raise RuntimeError("legacy exporter unavailable")

    monkeypatch.setitem(ex._ONNX_EXPORTERS, "torchscript (legacy)", broken)
    spec = random_spec(1)
    state = calibrated_state(spec)
    report = ex.export_onnx(spec, tmp_path / "d.onnx", weights=state)
    assert report["exporter"] == "dynamo" and report["max_abs_diff"] <= ex.TOLERANCE
    _onnx_check(tmp_path / "d.onnx", spec, state)
    out, err = capfd.readouterr()
    assert out == "" and "torchvision" not in err  # the exporter's chatter stays out of the command's output


def test_a_failed_verification_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(ex._verify, "TOLERANCE", -1.0)  # no export can pass (the exporters' shared check)
    monkeypatch.setattr(ex._verify, "RTOL", 0.0)
    spec = random_spec(1)
    with pytest.raises(ex.ExportError) as info:
        ex.export_onnx(spec, tmp_path / "n.onnx", exporter="torchscript (legacy)")
    assert "nothing written" in str(info.value)
    with pytest.raises(ex.ExportError):
        ex.export_torchscript(spec, tmp_path / "n.pt")
    assert list(tmp_path.iterdir()) == []


def test_the_check_is_relative_to_the_outputs_scale():
    """|diff| <= TOLERANCE + RTOL * max|output|, each output: rounding that grows with large raw outputs
    (EfficientDet-D0's reach ~84 and differed by 6e-4 on some CPUs) passes; the same difference on small
    outputs, or a difference of the outputs' own size (a real export bug), fails. Both figures are reported."""
    import numpy as np

    big = np.full((2, 5), 84.0, dtype=np.float32)
    small = np.full((2, 5), 0.1, dtype=np.float32)
    r = ex.compare_outputs("x", [big, small], [big + 6e-4, small])
    assert r["within"] and r["max_abs_output"] == 84.0
    assert r["max_abs_diff"] == pytest.approx(6e-4, rel=1e-2) and r["max_rel_diff"] == pytest.approx(6e-4 / 84, rel=1e-2)
    assert ex.tolerance(84.0) == pytest.approx(ex.TOLERANCE + ex.RTOL * 84.0)
    assert not ex.compare_outputs("x", [big, small], [big, small + 6e-4])["within"]  # tolerance 2e-4 there
    assert not ex.compare_outputs("x", [big], [big * 1.01])["within"]
    assert ex.compare_outputs("x", [small * 0], [small * 0])["within"]  # all-zero outputs: exact match needed
    assert not ex.compare_outputs("x", [small * 0], [small * 0 + 2e-4])["within"]
    with pytest.raises(ex.ExportError, match="output y has shape"):
        ex.compare_outputs("x", [big], [small[:1]], labels=["y"])
    with pytest.raises(ex.ExportError, match="not finite"):
        ex.compare_outputs("x", [big], [big * np.nan])
    msg = ex.mismatch("onnxruntime", ex.compare_outputs("x", [small], [small + 1e-3]))
    assert "by 0.001, relative 0.01" in msg and f"tolerance {ex.TOLERANCE:g} + {ex.RTOL:g} x max |output|" in msg


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_export_reloads_and_matches(tmp_path):
    spec = random_spec(3)
    state = calibrated_state(spec)
    path = tmp_path / "net.pt"
    report = ex.export_torchscript(spec, path, weights=state)
    assert report["method"] == "script" and report["max_abs_diff"] <= ex.TOLERANCE
    loaded = torch.jit.load(str(path))
    model = build_model(spec)
    model.load_state_dict(state)
    x = x_for(spec, batch=2, seed=4)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=ex.TOLERANCE, rtol=0)
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_current_umask())
    assert no_temp_files(tmp_path)


def test_export_registry_refuses_unknown_formats(tmp_path):
    assert set(ex.FORMATS) == {"py", "onnx", "torchscript"}
    with pytest.raises(ValueError):
        ex.export(b0_small(), "tflite", tmp_path / "x")


# --------------------------------------------------------------------------- inference helpers


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_bn_model_computes_the_same_function(tmp_path, channels_last):
    spec = random_spec(2)
    model = build_model(spec)
    model.load_state_dict(calibrated_state(spec))
    model.eval()
    fast = ex.optimize_for_inference(model, channels_last=channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = x_for(spec, batch=3)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert ref.abs().max() > 1e-2
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # It works on the exported Python code too (same module layout).
    _, cls = generated_module(tmp_path, spec)
    theirs = cls()
    theirs.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ex.fuse_bn(theirs)(x), ref, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- the command


def nas_export(*args, cwd, env=None):
    return subprocess.run(["nas-export", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=240,
                          env=env)


def assert_one_line_error(out, code, *fragments):
    assert out.returncode == code, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas-export: error: "), out.stderr
    assert "Traceback" not in out.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_cli_writes_python(tmp_path):
    out = nas_export("efficientnet-b0", "--format", "py", "--output", "b0.py", "--class-name", "B0", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "class B0" in out.stdout and out.stderr == ""
    code = (tmp_path / "b0.py").read_text()
    assert "class B0(Network):" in code and "efficientnet-b0" in code


def test_cli_writes_onnx_and_torchscript(tmp_path):
    spec = random_spec(2)
    spec.save(tmp_path / "s.json")
    state = calibrated_state(spec)
    torch.save(state, tmp_path / "w.pt")
    out = nas_export("s.json", "--format", "onnx", "--output", "s.onnx", "--weights", "w.pt", "--resolution", "32",
                     cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "opset" in out.stdout and "max |diff|" in out.stdout
    _onnx_check(tmp_path / "s.onnx", spec, state)
    out = nas_export("s.json", "--format", "torchscript", "-o", "s.pt", "--weights", "w.pt", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["method"] == "script"
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("args, code, fragments", [
    (["efficientnet-b0", "--format", "tflite", "-o", "x"], 2, ["unknown --format 'tflite'"]),
    (["efficientnet-b0", "--format", "py"], 2, ["--output"]),
    (["efficientnet-b0", "--format", "py", "-o", "missing/x.py"], 2, ["no such directory"]),
    (["efficientnet-b0", "--format", "py", "-o", "sub"], 2, ["is a directory"]),
    (["efficientnet-b0", "--format", "py", "-o", "file.txt/x.py"], 2, ["not a directory"]),
    (["efficientnet-b0", "--format", "py", "-o", "x.py", "--class-name", "my net"], 2, ["--class-name", "identifier"]),
    (["efficientnet-b0", "--format", "py", "-o", "x.py", "--class-name", "torch"], 2, ["shadow"]),
    (["efficientnet-b0", "--format", "py", "-o", "x.py", "--weights", "w.pt"], 2, ["load_state_dict"]),
    (["efficientnet-b0", "--format", "onnx", "-o", "x.onnx", "--class-name", "X"], 2, ["--class-name"]),
    (["efficientnet-b0", "--format", "torchscript", "-o", "x.pt", "--opset", "17"], 2, ["--opset"]),
    (["efficientnet-b0", "--format", "onnx", "-o", "x.onnx", "--resolution", "0"], 2, ["--resolution"]),
    (["efficientnet-b0", "--format", "onnx", "-o", "x.onnx", "--weights", "absent.pt"], 2, ["absent.pt"]),
    (["efficientnet-b9", "--format", "py", "-o", "x.py"], 2, ["unknown preset"]),
    (["random-1.json", "--format", "onnx", "-o", "x.onnx", "--weights", "b0.pt"], 2,
     ["do not match the spec", "stem.0.weight"]),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, args, code, fragments):
    (tmp_path / "sub").mkdir()
    (tmp_path / "file.txt").write_text("x")
    random_spec(1).save(tmp_path / "random-1.json")
    if "b0.pt" in args:
        torch.save(build_model(load_spec("mnasnet-a1").replace(num_classes=10)).state_dict(), tmp_path / "b0.pt")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = nas_export(*args, cwd=tmp_path)
    assert_one_line_error(out, code, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temp files left


def test_cli_without_onnx_says_how_to_install(tmp_path):
    script = ("import sys\nsys.modules['onnxruntime'] = None\nfrom nas.cli.export import main\n"
              "sys.exit(main(['efficientnet-b0', '--format', 'onnx', '-o', 'x.onnx']))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert_one_line_error(out, 1, "pip install nas-toolkit[export]")
    assert list(tmp_path.iterdir()) == []


def test_cli_failed_verification_exits_1_and_writes_nothing(tmp_path):
    random_spec(1).save(tmp_path / "s.json")
    # One interpreter for both formats (a torch start-up each would double the cost).
    script = ("import nas.export as ex\nex._verify.TOLERANCE, ex._verify.RTOL = -1.0, 0.0  # no export can pass\n"
              "del ex._ONNX_EXPORTERS['dynamo']  # the slow fallback would fail the same way\n"
              "from nas.cli.export import main\n"
              "print([main(['s.json', '--format', f, '-o', 'out']) for f in ('onnx', 'torchscript')])\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[1, 1]"
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and all(ln.startswith("nas-export: error: ") and "nothing written" in ln for ln in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask
