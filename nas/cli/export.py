"""``nas-export SPEC --format py|onnx|torchscript --output PATH``: a spec as code, ONNX or TorchScript.

Every output is written atomically; ONNX and TorchScript files are verified
against PyTorch first (see :mod:`nas.export`), so a failed export leaves nothing.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import ArgumentParser, RuntimeFailure, UsageError, command
from ..presets import load_spec, preset_names
from ..spec import MAX_RESOLUTION

FORMATS = ("py", "onnx", "torchscript")  # the registry itself (nas.export.FORMATS) imports lazily


def _check_output(path: str) -> Path:
    p = Path(path)
    if not path or path.endswith(os.sep):
        raise UsageError(f"--output must be a file path, got {path!r}")
    if p.is_dir():
        raise UsageError(f"--output {path} is a directory; give a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise UsageError(f"cannot write --output {path}: no such directory {parent}")
    if not parent.is_dir():
        raise UsageError(f"cannot write --output {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write --output {path}: directory {parent} is not writable")
    return p


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


@command("nas-export")
def main(argv=None) -> int:
    from ..detection import detector_names

    ap = ArgumentParser(prog="nas-export",
                        description="Export a spec as standalone PyTorch code (py), ONNX or TorchScript. "
                                    "ONNX and TorchScript files are checked against PyTorch before they are written. "
                                    "Detectors export as ONNX only (raw per-level outputs).",
                        epilog=f"classifier presets: {', '.join(preset_names())}; "
                               f"detector presets (onnx only): {', '.join(detector_names())}")
    ap.add_argument("spec", help="a classifier or detector: a preset name, a JSON file, or a JSON string")
    ap.add_argument("--format", required=True, metavar="|".join(FORMATS),
                    help="py: readable model code that needs only torch; onnx: ONNX with a dynamic batch axis "
                         "(needs nas-toolkit[export]); torchscript: a scripted module")
    ap.add_argument("--output", "-o", required=True, metavar="PATH", help="the file to write (atomically)")
    ap.add_argument("--class-name", metavar="NAME", help="py only: the model class name (default: from the spec name)")
    ap.add_argument("--weights", metavar="W", help="onnx/torchscript: a state_dict (.pt) saved from the toolkit's model")
    ap.add_argument("--resolution", type=int, metavar="R",
                    help="onnx/torchscript: the input size to export and check at (default: the spec's)")
    ap.add_argument("--opset", type=int, help="onnx only: the ONNX opset (default: the exporter's)")
    ap.add_argument("--json", action="store_true", help="print the export report as JSON")
    args = ap.parse_args(argv)

    if args.format not in FORMATS:
        raise UsageError(f"unknown --format {args.format!r}; one of {', '.join(FORMATS)}")
    if args.format == "py" and (args.weights or args.resolution is not None or args.opset is not None):
        raise UsageError("--weights, --resolution and --opset apply to onnx and torchscript; the py format writes "
                         "code only (load weights with model.load_state_dict)")
    if args.format != "py" and args.class_name is not None:
        raise UsageError("--class-name applies to --format py only")
    if args.format != "onnx" and args.opset is not None:
        raise UsageError("--opset applies to --format onnx only")
    if args.resolution is not None and not 1 <= args.resolution <= MAX_RESOLUTION:
        raise UsageError(f"--resolution must be in [1, {MAX_RESOLUTION}], got {args.resolution}")
    if args.opset is not None and not 7 <= args.opset <= 30:
        raise UsageError(f"--opset must be in [7, 30], got {args.opset}")
    out = _check_output(args.output)
    from ..detection import is_detector

    if is_detector(args.spec):
        from .detector import export as export_detector

        return export_detector(args, out)
    spec = load_spec(args.spec)

    from .. import export as ex  # torch and friends load only past argument checks

    if args.class_name is not None:
        try:
            ex.check_class_name(args.class_name)
        except ValueError as e:
            raise UsageError(f"--class-name: {e}") from None
    if args.weights is not None and not Path(args.weights).is_file():
        raise UsageError(f"--weights {args.weights}: no such file")
    notes: list[str] = []
    if args.weights is not None:  # inherited or nas-train weights carry the data's classes; a searched spec the skeleton's
        try:
            spec, notes = ex.fit_spec_to_weights(spec, args.weights)
        except ex.WeightsError as e:
            raise UsageError(str(e)) from None
    try:
        report = ex.export(spec, args.format, out, class_name=args.class_name, weights=args.weights,
                           resolution=args.resolution, opset=args.opset)
    except ex.WeightsError as e:
        raise UsageError(str(e)) from None
    except ex.ExportError as e:
        raise RuntimeFailure(str(e)) from None

    if notes:  # only once the weights proved to fit: a failed export stays one line
        print(f"nas-export: note: adapted the spec to the weights: {', '.join(notes)}", file=sys.stderr)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif args.format == "py":
        sys.stdout.write(f"wrote {out} ({_size(report['bytes'])}): class {report['class_name']}, needs only torch\n")
    else:
        what = (f"ONNX opset {report['opset']} via the {report['exporter']} exporter, dynamic batch; "
                f"onnxruntime {report['onnxruntime']}" if args.format == "onnx"
                else f"TorchScript ({report['method']}); reloaded module")
        sys.stdout.write(f"wrote {out} ({_size(report['bytes'])}): {what} matches PyTorch at batch "
                         f"{' and '.join(map(str, report['batch_sizes']))}, {report['resolution']}x{report['resolution']}: "
                         f"{ex.describe_check(report)}\n")
    return 0


entry = main.entry
