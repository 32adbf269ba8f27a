"""``nas-show SPEC|PRESET [--resolution R] [--json]``: the per-stage cost table of a spec."""
from __future__ import annotations

import json
import sys

from . import ArgumentParser, UsageError, command
from ..cost import cost
from ..presets import load_spec, preset_names
from ..spec import MAX_RESOLUTION


def _table(spec, c) -> str:
    head = f"{'stage':<10} {'op':<7} {'k':>2} {'rep':>3} {'in res':>7} {'out res':>7} {'in ch':>6} {'out ch':>6} {'params':>13} {'FLOPs':>16} {'share':>6}"
    lines = [f"{spec.name or '(unnamed spec)'} at {c.resolution}x{c.resolution}, {spec.in_channels} input channels, "
             f"{spec.num_classes} classes", head, "-" * len(head)]
    for r in c.stages:
        share = 100.0 * r.flops / c.flops if c.flops else 0.0
        lines.append(f"{r.name:<10} {r.op:<7} {r.kernel:>2} {r.repeats:>3} {r.in_resolution:>7} {r.out_resolution:>7} "
                     f"{r.in_channels:>6} {r.out_channels:>6} {r.params:>13,} {r.flops:>16,} {share:>5.1f}%")
    lines.append("-" * len(head))
    lines.append(f"{'total':<10} {'':<7} {'':>2} {spec.n_layers:>3} {'':>7} {'':>7} {'':>6} {'':>6} "
                 f"{c.params:>13,} {c.flops:>16,} {100.0:>5.1f}%")
    lines.append(f"params {c.params:,}  FLOPs {c.flops:,} (fvcore convention: 1 multiply-add = 1 flop)")
    return "\n".join(lines)


@command("nas-show")
def main(argv=None) -> int:
    ap = ArgumentParser(prog="nas-show", description="Show a spec's per-stage parameters and FLOPs (analytic, exact).",
                        epilog=f"presets: {', '.join(preset_names())}")
    ap.add_argument("spec", help="a preset name, a JSON file, or a JSON string")
    ap.add_argument("--resolution", type=int, help="input resolution (default: the spec's)")
    ap.add_argument("--json", action="store_true", help="print machine-readable JSON (keys params, flops, stages)")
    args = ap.parse_args(argv)
    if args.resolution is not None and not 1 <= args.resolution <= MAX_RESOLUTION:
        raise UsageError(f"--resolution must be in [1, {MAX_RESOLUTION}], got {args.resolution}")
    from ..detection import is_detector

    if is_detector(args.spec):
        from .detector import show as show_detector

        return show_detector(args)
    spec = load_spec(args.spec)
    c = cost(spec, args.resolution)
    if args.json:
        out = {"name": spec.name, "resolution": c.resolution, "params": c.params, "flops": c.flops,
               "stages": [vars(r) for r in c.stages], "fingerprint": spec.fingerprint()}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write(_table(spec, c) + "\n")
    return 0


entry = main.entry
