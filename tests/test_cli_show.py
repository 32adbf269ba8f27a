"""``nas-show`` through the installed console script: totals, --json, --resolution,
spec files and strings, and bad input (one line on stderr, exit 2, no traceback).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nas.cost import cost
from nas.presets import load_preset
from nas.spec import Spec
from reference import B0, EFFICIENTNET


def _script() -> str:
    # Prefer the script installed next to this interpreter (a venv's bin/, not a pyenv shim).
    here = Path(sys.executable).parent / "nas-show"
    found = str(here) if here.exists() else shutil.which("nas-show")
    assert found, "the nas-show console script is not installed (pip install -e .)"
    return found


NAS_SHOW = _script()


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "NAS_DEBUG"}
    e.update(env or {})
    return subprocess.run([NAS_SHOW, *args], capture_output=True, text=True, timeout=60, env=e)


def assert_usage_error(r: subprocess.CompletedProcess, *fragments: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("nas-show: error: ")
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def test_b0_totals():
    r = run("efficientnet-b0")
    assert r.returncode == 0 and r.stderr == ""
    assert f"params {B0.params:,}  FLOPs {B0.flops:,}" in r.stdout
    lines = r.stdout.splitlines()
    assert lines[0].startswith("efficientnet-b0 at 224x224")
    rows = [ln for ln in lines if ln.startswith(("stem", "stages[", "head", "total"))]
    assert [ln.split()[0] for ln in rows] == ["stem"] + [f"stages[{i}]" for i in range(7)] + ["head", "total"]
    total = rows[-1].split()
    assert total[-3:] == [f"{B0.params:,}", f"{B0.flops:,}", "100.0%"]


def test_json_output():
    r = run("efficientnet-b0", "--json")
    assert r.returncode == 0 and r.stderr == ""
    d = json.loads(r.stdout)
    assert (d["params"], d["flops"], d["resolution"], d["name"]) == (B0.params, B0.flops, 224, "efficientnet-b0")
    assert [s["name"] for s in d["stages"]] == ["stem"] + [f"stages[{i}]" for i in range(7)] + ["head"]
    assert sum(s["flops"] for s in d["stages"]) == d["flops"]
    assert sum(s["params"] for s in d["stages"]) == d["params"]
    assert d["fingerprint"] == load_preset("efficientnet-b0").fingerprint()


def test_resolution_flag():
    r = run("efficientnet-b0", "--resolution", "320", "--json")
    assert r.returncode == 0
    d = json.loads(r.stdout)
    expected = cost(load_preset("efficientnet-b0"), 320)
    assert (d["resolution"], d["params"], d["flops"]) == (320, B0.params, expected.flops)
    assert d["flops"] > B0.flops
    r = run("efficientnet-b0", "--resolution", "17")
    assert r.returncode == 0 and "at 17x17" in r.stdout


def test_spec_file_and_json_string(tmp_path):
    s = load_preset("mnasnet-a1").replace(name="my-arch", num_classes=10, resolution=96)
    p = tmp_path / "my_arch.json"
    s.save(p)
    c = cost(s)
    r = run(str(p), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["name"], d["params"], d["flops"], d["resolution"]) == ("my-arch", c.params, c.flops, 96)
    r = run(s.to_json(indent=None))
    assert r.returncode == 0 and f"params {c.params:,}  FLOPs {c.flops:,}" in r.stdout


def test_help():
    r = run("--help")
    assert r.returncode == 0 and "efficientnet-b0" in r.stdout and "--resolution" in r.stdout


def test_unknown_preset_names_closest():
    line = assert_usage_error(run("efficientnet-b9"), "unknown preset 'efficientnet-b9'", "did you mean")
    assert "efficientnet-b7" in line
    assert_usage_error(run("mobilenet-v3"), "did you mean mobilenet-v2")


def test_not_json_names_line_and_column(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{\n  "format": "nas-spec",\n  "version": 1,,\n}\n', encoding="utf-8")
    assert_usage_error(run(str(p)), str(p), "not valid JSON", "line 3 column 16")
    assert_usage_error(run("{bad"), "not valid JSON", "line 1 column 2")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000, encoding="utf-8")
    assert_usage_error(run(str(deep)), "not valid JSON: nested too deeply")


def test_invalid_spec_names_the_path(tmp_path):
    d = load_preset("efficientnet-b0").to_dict()
    d["stages"][3]["kernel"] = 4
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d), encoding="utf-8")
    line = assert_usage_error(run(str(p)))
    assert line == "nas-show: error: stages[3].kernel: must be odd, got 4"


@pytest.mark.parametrize("args, fragment", [
    ((), "required: spec"),
    (("efficientnet-b0", "--resolution", "0"), "--resolution must be in [1, 4096], got 0"),
    (("efficientnet-b0", "--resolution", "abc"), "invalid int value"),
    (("efficientnet-b0", "--bogus"), "unrecognized arguments: --bogus"),
    (("no/such/arch.json",), "no such file"),
], ids=["no-argument", "resolution-0", "resolution-not-int", "unknown-flag", "missing-file"])
def test_bad_usage(args, fragment):
    assert_usage_error(run(*args), fragment)


def test_nothing_is_written(tmp_path):
    before = set(os.listdir(tmp_path))
    subprocess.run([NAS_SHOW, "efficientnet-b9"], cwd=tmp_path, capture_output=True, timeout=60)
    subprocess.run([NAS_SHOW, "efficientnet-b0", "--json"], cwd=tmp_path, capture_output=True, timeout=60)
    assert set(os.listdir(tmp_path)) == before


def test_nas_show_and_import_nas_do_not_import_torch(tmp_path):
    # A fake torch/fvcore ahead of site-packages makes any import of them fail loudly.
    for pkg in ("torch", "fvcore"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(f"raise ImportError('{pkg} was imported')\n", encoding="utf-8")
    env = {"PYTHONPATH": str(tmp_path)}
    r = run("efficientnet-b7", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["params"] == EFFICIENTNET["efficientnet-b7"].params
    assert "was imported" not in r.stderr
    r = subprocess.run([sys.executable, "-c",
                        "import sys, nas; nas.load_spec('efficientnet-b0').fingerprint(); nas.cost; "
                        "assert 'torch' not in sys.modules"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_spec_saved_by_library_is_shown_identically(tmp_path):
    """The CLI reads exactly what Spec.save writes (JSON in, JSON out)."""
    s = load_preset("efficientnet-b3")
    p = tmp_path / "b3.json"
    s.save(p)
    a, b = run(str(p), "--json"), run("efficientnet-b3", "--json")
    assert json.loads(a.stdout) == json.loads(b.stdout)
    assert Spec.load(p) == s
