"""``nas-scale``: compound scaling (EfficientNet step two) and the alpha/beta/gamma grid search (step one).

::

    nas-scale --phi 3                                  # B0 and the paper's coefficients (alpha 1.2, beta 1.1, gamma 1.15)
    nas-scale --phi 3 --coefficients results/scaling/grid.json   # the best of a grid search instead
    nas-scale --base runs/s1/best.json --phi 2.5 --alpha 1.2 --beta 1.1 --gamma 1.15 --output b2.json
    nas-scale --base efficientnet-b0 --family 0-7 --output family/
    nas-scale --published efficientnet-b3              # the published member, beside the formula
    nas-scale --grid-search --base efficientnet-b0 --data fashion-mnist --base-resolution 16 --epochs 3

The published B0..B7 are a table, not alpha^phi/beta^phi/gamma^phi for whole phi.
"""
from __future__ import annotations

import sys
from pathlib import Path

from . import ArgumentParser, UsageError, command, finite_float, parse_quantity, positive_int, write_spec
from .scale_grid import add_grid_arguments, run_grid

DEFAULT_BASE = "efficientnet-b0"


def _note(msg: str) -> None:
    print(f"nas-scale: {msg}", file=sys.stderr)


def _coefficients(args) -> tuple[tuple[float, float, float], list[str]]:
    """The coefficients and the notes about them; callers print the notes only once the
    work succeeded, so that an error stays the only line on stderr."""
    from scaling.coefficients import CoefficientsError, resolve_coefficients

    try:
        return resolve_coefficients(args.coefficients, args.alpha, args.beta, args.gamma)
    except CoefficientsError as e:
        raise UsageError(f"--coefficients: {e}") from None


def _family(base, args) -> int:
    from scaling.coefficients import CoefficientsError, parse_phis
    from scaling.compound import ScalingError
    from scaling.family import scale_family, write_family

    try:
        phis = parse_phis(args.family)
    except CoefficientsError as e:
        raise UsageError(f"--family: {e}") from None
    abg, notes = _coefficients(args)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out} exists and is not a folder (--family writes one spec per phi there)")
    try:
        members = scale_family(base, phis, abg, resolution_rule=args.resolution_rule,
                               resolution_divisor=args.resolution_divisor, max_params=args.max_params)
    except ScalingError as e:
        raise UsageError(str(e)) from None
    write_family(out, base, members, abg)
    _note(f"wrote {len(members)} specs, family.md and family.json to {out}")
    for n in notes:
        _note(n)
    return 0


@command("nas-scale")
def main(argv=None) -> int:
    ap = ArgumentParser(prog="nas-scale", description=(
        "Compound scaling: depth alpha^phi, width beta^phi, resolution gamma^phi from a base spec; "
        "or the grid search for alpha, beta, gamma at phi = 1 (--grid-search). The published EfficientNet "
        "B0..B7 are a table, not the formula for whole phi: --published NAME emits them by name."))
    ap.add_argument("--base", help=f"base spec: preset name, JSON file or JSON string (default {DEFAULT_BASE})")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--phi", type=finite_float("--phi", lo=0), help="compound coefficient (fractional allowed)")
    mode.add_argument("--family", help="one spec per phi, e.g. 0-7 or 0,1,2.5 (needs --output FOLDER)")
    mode.add_argument("--published", metavar="NAME", help="emit a published family member (efficientnet-b0..b7, -l2)")
    mode.add_argument("--grid-search", action="store_true", help="search alpha, beta, gamma at phi = 1 by training")
    ap.add_argument("--detector", action="store_true",
                    help="wrap a classification --base in EfficientDet-D0's BiFPN, heads and anchors, then scale it "
                         "as a detector (a detector --base, e.g. efficientdet-d0, scales as one without this flag)")
    ap.add_argument("--alpha", type=finite_float("--alpha", lo=1), help="depth coefficient (>= 1)")
    ap.add_argument("--beta", type=finite_float("--beta", lo=1), help="width coefficient (>= 1)")
    ap.add_argument("--gamma", type=finite_float("--gamma", lo=1), help="resolution coefficient (>= 1)")
    ap.add_argument("--coefficients", metavar="GRID_JSON",
                    help="take alpha, beta, gamma from a grid search's grid.json (default: the paper's 1.2, 1.1, 1.15)")
    ap.add_argument("--output", "-o", help="spec file (default stdout); a folder for --family and --grid-search "
                                           "(default results/scaling)")
    ap.add_argument("--max-params", type=lambda s: parse_quantity(s), default=None,
                    help="refuse specs above this many parameters (default 2G)")
    ap.add_argument("--resolution-rule", choices=("flops", "nearest"), default="flops",
                    help="flops: the resolution within 5%% of r*gamma^phi whose FLOPs are nearest the target "
                         "(default); nearest: plain rounding")
    ap.add_argument("--resolution-divisor", type=positive_int("--resolution-divisor"),
                    help="resolution grid in px (default 4 for bases of 80 px and up, else 1)")
    add_grid_arguments(ap)
    args = ap.parse_args(argv)
    if args.max_params is not None and args.max_params < 1:
        raise UsageError(f"--max-params must be >= 1, got {args.max_params:g}")
    if args.max_params is None:
        from scaling.compound import MAX_PARAMS

        args.max_params = MAX_PARAMS
    if args.grid_search and args.epochs <= 0:
        raise UsageError(f"--epochs must be > 0, got {args.epochs:g}")

    from ..detection import is_detector

    if args.detector or (args.published or "").startswith("efficientdet") or (args.base and is_detector(args.base)):
        from .detector import scale as scale_detector

        return scale_detector(args, lambda: _coefficients(args))
    if args.base_resolution is not None and not args.grid_search:
        raise UsageError("--base-resolution is for --grid-search (to scale a base at another resolution, "
                         "give a --base spec with that resolution)")
    if args.recipe is not None and not args.grid_search:
        raise UsageError("--recipe is for --grid-search (the recipe its candidates train with)")
    if args.published:
        if args.base:
            raise UsageError("--published scales efficientnet-b0 by the published table; drop --base")
        from scaling.compound import PUBLISHED, describe_published

        if args.published not in PUBLISHED:
            raise UsageError(f"--published: unknown member {args.published!r}; one of {', '.join(PUBLISHED)}")
        spec, line = describe_published(args.published)
        _note(line)
        write_spec(spec, args.output, "nas-scale", ' (or use --family)')
        return 0

    from ..presets import load_spec

    base = load_spec(args.base or DEFAULT_BASE)
    if args.grid_search:
        if any(v is not None for v in (args.alpha, args.beta, args.gamma)):
            raise UsageError("--grid-search searches alpha, beta, gamma; drop --alpha/--beta/--gamma")
        return run_grid(base, args, argv)
    if args.family is not None:
        if not args.output:
            raise UsageError("--family needs --output FOLDER")
        return _family(base, args)
    if args.phi is None:
        raise UsageError("give --phi, --family, --published or --grid-search")
    from scaling.compound import ScalingError, compound_scale

    abg, notes = _coefficients(args)
    try:
        spec = compound_scale(base, args.phi, *abg, resolution_rule=args.resolution_rule,
                              resolution_divisor=args.resolution_divisor, max_params=args.max_params)
    except ScalingError as e:
        raise UsageError(str(e)) from None
    write_spec(spec, args.output, "nas-scale", ' (or use --family)')
    for n in notes:
        _note(n)
    return 0


entry = main.entry
