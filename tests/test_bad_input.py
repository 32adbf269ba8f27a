"""Bad input on every command (issue 7, part 5): a table of wrong inputs, each answered by exactly one
line on stderr, exit 2 (usage) or 1 (runtime), no traceback, and nothing written.

Every row runs in-process through the command's ``main(argv)`` (the console scripts call exactly
that); a sample of rows, one or more per command, also runs through the installed console script
in a subprocess, which proves the wiring and the absence of tracebacks end to end.
"""
from __future__ import annotations

import gzip
import importlib
import os
import shutil
import subprocess

import pytest

INVALID_SPEC = ('{"in_channels": 3, "resolution": 224, "num_classes": 10, "stem": {"out_channels": 32, "kernel": 3, '
                '"stride": 2}, "stages": [{"op": "mbconv", "kernel": 4, "stride": 1, "expand_ratio": 6, "se_ratio": 0.25,'
                ' "skip": "identity", "out_channels": 16, "repeats": 1}], "head": {"out_channels": 1280}}')


def _setup(tmp):
    """Files the table refers to as {name}: bad specs, corrupt and empty datasets, a file in the way."""
    (tmp / "bad.json").write_text('{"stages": [')
    (tmp / "empty.json").write_text("")
    (tmp / "invalid.json").write_text(INVALID_SPEC)
    (tmp / "dup.json").write_text('{"resolution": 224, "resolution": 225}')
    (tmp / "afile").write_text("x")
    (tmp / "emptydir").mkdir()
    corrupt = tmp / "corrupt"
    corrupt.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (corrupt / name).write_bytes(gzip.compress(b"\x00\x00\x08\x03garbage"))
    trunc = tmp / "truncated"
    trunc.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (trunc / name).write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    folder = tmp / "classes"  # folder:DIR with class folders holding no images, and a broken image
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    (tmp / "weights.pt").write_bytes(b"not a state dict")
    # alpha*beta^2*gamma^2 = 5.38: breaks the compound-scaling constraint (~2)
    (tmp / "badgrid.json").write_text('{"best": {"alpha": 1.4, "beta": 1.4, "gamma": 1.4}}')
    return {"bad": tmp / "bad.json", "empty": tmp / "empty.json", "invalid": tmp / "invalid.json",
            "dup": tmp / "dup.json", "file": tmp / "afile", "afile": tmp / "afile", "emptydir": tmp / "emptydir", "corrupt": corrupt,
            "trunc": trunc, "classes": folder, "weights": tmp / "weights.pt", "out": tmp / "out",
            "badgrid": tmp / "badgrid.json"}


T = ["--target-flops", "400M"]
S = ["--no-progress", "--output", "{out}"]
CASES = [
    # id, command, argv, exit code
    ("show-no-spec", "show", [], 2),
    ("show-unknown-preset", "show", ["efficientnet-b99"], 2),
    ("show-malformed-json", "show", ["{bad}"], 2),
    ("show-empty-file", "show", ["{empty}"], 2),
    ("show-invalid-kernel", "show", ["{invalid}"], 2),
    ("show-duplicate-keys", "show", ["{dup}"], 2),
    ("show-json-string-wrong-type", "show", ['{"resolution": "big"}'], 2),
    ("show-resolution-zero", "show", ["efficientnet-b0", "--resolution", "0"], 2),
    ("show-resolution-negative", "show", ["efficientnet-b0", "--resolution", "-224"], 2),
    ("show-resolution-not-int", "show", ["efficientnet-b0", "--resolution", "2.5e2x"], 2),
    ("show-unknown-flag", "show", ["efficientnet-b0", "--bogus"], 2),
    ("show-directory-as-spec", "show", ["{emptydir}"], 2),
    ("train-no-spec", "train", [], 2),
    ("train-epochs-zero", "train", ["efficientnet-b0", "--epochs", "0", "--output", "{out}"], 2),
    ("train-epochs-nan", "train", ["efficientnet-b0", "--epochs", "nan", "--output", "{out}"], 2),
    ("train-batch-size-zero", "train", ["efficientnet-b0", "--batch-size", "0", "--output", "{out}"], 2),
    ("train-limit-train-zero", "train", ["efficientnet-b0", "--limit-train", "0", "--output", "{out}"], 2),
    ("train-resolution-absurd", "train", ["efficientnet-b0", "--resolution", "1000000", "--output", "{out}"], 2),
    ("train-lr-negative", "train", ["efficientnet-b0", "--lr", "-1", "--output", "{out}"], 2),
    ("train-seed-negative", "train", ["efficientnet-b0", "--seed", "-1", "--output", "{out}"], 2),
    ("train-unknown-recipe", "train", ["efficientnet-b0", "--recipe", "sgd9000", "--output", "{out}"], 2),
    ("train-unknown-data", "train", ["efficientnet-b0", "--data", "nosuch:x", "--output", "{out}"], 2),
    ("train-empty-dataset-folder", "train", ["efficientnet-b0", "--data", "idx:{emptydir}", "--output", "{out}"], 1),
    ("train-corrupt-idx", "train", ["efficientnet-b0", "--data", "idx:{corrupt}", "--output", "{out}"], 1),
    ("train-truncated-gzip", "train", ["efficientnet-b0", "--data", "idx:{trunc}", "--output", "{out}"], 1),
    ("train-folder-without-images", "train", ["efficientnet-b0", "--data", "folder:{classes}", "--output", "{out}"], 1),
    ("train-invalid-spec", "train", ["{invalid}", "--output", "{out}"], 2),
    ("train-output-under-a-file", "train", ["efficientnet-b0", "--output", "{file}/sub"], (1, 2)),
    ("search-no-target", "search", S, 2),
    ("search-both-targets", "search", T + ["--target-latency", "20ms"] + S, 2),
    ("search-target-unparsable", "search", ["--target-flops", "four hundred"] + S, 2),
    ("search-seed-negative", "search", T + ["--seed", "-1"] + S, 2),
    ("search-target-zero", "search", ["--target-flops", "0"] + S, 2),
    ("search-target-negative", "search", ["--target-flops", "-400M"] + S, 2),
    ("search-absolute-beta-not-negative", "search", T + ["--constraint", "absolute", "--w", "0.1"] + S, 2),
    ("search-latency-table-without-latency-target", "search", T + ["--latency-table", "{afile}"] + S, 2),
    ("search-latency-table-corrupt", "search", ["--target-latency", "20ms", "--latency-table", "{bad}"] + S, 2),
    ("search-latency-table-missing", "search", ["--target-latency", "20ms", "--latency-table",
                                                "{emptydir}/lat.json"] + S, 2),
    ("search-device-cuda-without-a-gpu", "search", T + ["--device", "cuda:7"] + S, 2),
    ("search-device-with-a-proxy", "search", T + ["--estimator", "proxy:synflow", "--device", "cpu"] + S, 2),
    ("search-supernet-missing", "search", T + ["--estimator", "supernet:{emptydir}/sn"] + S, 2),
    ("search-target-infinite", "search", ["--target-flops", "1e400"] + S, 2),
    ("search-latency-bad-unit", "search", ["--target-latency", "20 parsecs"] + S, 2),
    ("search-unknown-strategy", "search", T + ["--strategy", "genetic9"] + S, 2),
    ("search-unknown-evaluator", "search", T + ["--evaluator", "proxy:oracle"] + S, 2),
    ("search-unknown-estimator", "search", T + ["--estimator", "oracle"] + S, 2),
    ("search-option-the-estimator-does-not-take", "search",
     T + ["--estimator", "proxy:synflow", "--epochs", "2"] + S, 2),
    ("search-budget-zero", "search", T + ["--budget", "0"] + S, 2),
    ("search-budget-negative", "search", T + ["--budget", "-5"] + S, 2),
    ("search-budget-fractional", "search", T + ["--budget", "1.5"] + S, 2),
    ("search-unknown-space", "search", T + ["--space", "nasbench"] + S, 2),
    ("search-constraint", "search", T + ["--constraint", "medium"] + S, 2),
    ("search-w-infinite", "search", T + ["--w", "inf"] + S, 2),
    ("search-unknown-recipe", "search", T + ["--recipe", "sgd9000"] + S, 2),
    ("search-epochs-zero", "search", T + ["--epochs", "0"] + S, 2),
    ("search-resolution-absurd", "search", T + ["--resolution", "100000"] + S, 2),
    ("search-storage-not-a-url", "search", T + ["--storage", "study.db"] + S, 2),
    ("search-output-under-a-file", "search", T + ["--no-progress", "--output", "{file}/sub"], 2),
    ("search-unknown-data", "search", T + ["--data", "nosuch:x", "--budget", "1"] + S, 2),
    ("search-corrupt-dataset", "search", T + ["--data", "idx:{corrupt}", "--budget", "1"] + S, 1),
    ("search-empty-dataset", "search", T + ["--data", "idx:{emptydir}", "--budget", "1"] + S, 1),
    ("search-workers-zero", "search", T + ["--workers", "0"] + S, 2),
    ("search-workers-not-an-int", "search", T + ["--workers", "two"] + S, 2),
    ("search-workers-absurd", "search", T + ["--workers", "100000"] + S, 2),
    ("search-unknown-backend", "search", T + ["--backend", "spark"] + S, 2),
    ("search-address-without-ray", "search", T + ["--address", "auto"] + S, 2),
    ("search-cpus-per-trial-zero", "search", T + ["--backend", "ray", "--cpus-per-trial", "0"] + S, 2),
    ("search-sqlite-with-workers", "search", T + ["--storage", "sqlite:///{out}.db", "--workers", "2"] + S, 2),
    ("scale-no-mode", "scale", ["--output", "{out}/s.json"], 2),
    ("scale-phi-negative", "scale", ["--phi", "-1", "--output", "{out}/s.json"], 2),
    ("scale-phi-not-a-number", "scale", ["--phi", "one", "--output", "{out}/s.json"], 2),
    pytest.param("scale-phi-absurd", "scale", ["--phi", "60", "--output", "{out}/s.json"], 2),
    ("scale-alpha-below-one", "scale", ["--phi", "1", "--alpha", "0.5", "--output", "{out}/s.json"], 2),
    ("scale-malformed-base", "scale", ["--phi", "1", "--base", "{bad}", "--output", "{out}/s.json"], 2),
    ("scale-unknown-published", "scale", ["--published", "efficientnet-b99", "--output", "{out}/s.json"], 2),
    ("scale-family-backwards", "scale", ["--family", "7-0", "--output", "{out}"], 2),
    ("scale-coefficients-missing", "scale", ["--phi", "1", "--coefficients", "{emptydir}/grid.json",
                                             "--output", "{out}/s.json"], 2),
    ("scale-coefficients-corrupt", "scale", ["--phi", "1", "--coefficients", "{bad}", "--output", "{out}/s.json"], 2),
    ("scale-coefficients-not-a-grid", "scale", ["--phi", "1", "--coefficients", "{invalid}",
                                                "--output", "{out}/s.json"], 2),
    ("scale-coefficients-break-the-constraint", "scale", ["--phi", "1", "--coefficients", "{badgrid}",
                                                          "--output", "{out}/s.json"], 2),
    ("scale-max-params-unparsable", "scale", ["--phi", "1", "--max-params", "lots", "--output", "{out}/s.json"], 2),
    pytest.param("scale-output-under-a-file", "scale", ["--phi", "1", "--output", "{file}/sub/s.json"], (1, 2)),
    ("export-no-format", "export", ["efficientnet-b0", "--output", "{out}/m.py"], 2),
    ("export-unknown-format", "export", ["efficientnet-b0", "--format", "pdf", "--output", "{out}/m.pdf"], 2),
    ("export-invalid-spec", "export", ["{invalid}", "--format", "py", "--output", "{emptydir}/m.py"], 2),
    ("export-output-is-a-folder", "export", ["efficientnet-b0", "--format", "py", "--output", "{emptydir}"], 2),
    ("export-output-under-a-file", "export", ["efficientnet-b0", "--format", "py", "--output", "{file}/m.py"], 2),
    ("export-resolution-absurd", "export", ["efficientnet-b0", "--format", "onnx", "--resolution", "100000000",
                                            "--output", "{emptydir}/m.onnx"], 2),
    ("export-opset-zero", "export", ["efficientnet-b0", "--format", "onnx", "--opset", "0",
                                     "--output", "{emptydir}/m.onnx"], 2),
    ("export-missing-weights", "export", ["efficientnet-b0", "--format", "torchscript", "--weights", "{out}/none.pt",
                                          "--output", "{emptydir}/m.pt"], 2),
    ("export-corrupt-weights", "export", ["efficientnet-b0", "--format", "torchscript", "--weights", "{weights}",
                                          "--output", "{emptydir}/m.pt"], (1, 2)),
]
# rows that also run through the console script (cheap ones, at least one per command)
VIA_SCRIPT = {"show-malformed-json", "show-resolution-zero", "train-epochs-zero", "train-corrupt-idx",
              "search-target-zero", "search-unknown-strategy", "search-corrupt-dataset", "search-unknown-backend", "scale-alpha-below-one",
              "export-unknown-format", "export-corrupt-weights"}


def _argv(argv, files):
    out = []
    for a in argv:  # {name} -> a path from _setup (not str.format: JSON arguments have braces)
        for k, v in files.items():
            a = a.replace("{" + k + "}", str(v))
        out.append(a)
    return out


def _snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _codes(code):
    return code if isinstance(code, tuple) else (code,)


def _row(c):
    return tuple(c.values) if hasattr(c, "values") else c


NAMES = [_row(c)[0] for c in CASES]


@pytest.mark.parametrize("name, cmd, argv, code", CASES, ids=NAMES)
def test_bad_input_in_process(name, cmd, argv, code, tmp_path, capsys, monkeypatch):
    files = _setup(tmp_path)
    monkeypatch.chdir(tmp_path)  # a stray default output (runs/...) would show up in the snapshot
    before = _snapshot(tmp_path)
    main = importlib.import_module(f"nas.cli.{cmd}").main
    rc = main(_argv(argv, files))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc in _codes(code), (rc, err)
    assert len(lines) == 1 and lines[0].startswith(f"nas-{cmd}: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    assert _snapshot(tmp_path) == before, "bad input must leave nothing behind"


@pytest.mark.parametrize("name, cmd, argv, code", [c for c in CASES if _row(c)[0] in VIA_SCRIPT],
                         ids=[n for n in NAMES if n in VIA_SCRIPT])
def test_bad_input_through_the_console_script(name, cmd, argv, code, tmp_path):
    files = _setup(tmp_path)
    exe = shutil.which(f"nas-{cmd}")
    assert exe, f"nas-{cmd} is not installed (pip install -e .)"
    before = _snapshot(tmp_path)
    r = subprocess.run([exe, *_argv(argv, files)], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode in _codes(code), (r.returncode, r.stderr)
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert _snapshot(tmp_path) == before


def test_the_table_is_large_and_covers_every_command():
    assert len(CASES) >= 40
    assert {_row(c)[1] for c in CASES} == {"show", "train", "search", "scale", "export"}
    assert len(set(NAMES)) == len(CASES) and VIA_SCRIPT <= set(NAMES)
