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

import json
import math
import shlex
import sys
from pathlib import Path

from . import (ArgumentParser, RuntimeFailure, UsageError, command, load_data, non_negative_int, parse_quantity,
               positive_int, write_spec)
from ..atomic import atomic_write_text
from ..spec import MAX_RESOLUTION, min_resolution, total_stride

DEFAULT_BASE = "efficientnet-b0"
#: how far alpha*beta^2*gamma^2 may be from 2 in a --coefficients file (the grid search's default tolerance)
COEFFICIENT_TOLERANCE = 0.1


def _note(msg: str) -> None:
    print(f"nas-scale: {msg}", file=sys.stderr)


def _number(label: str, *, lo: float | None = None):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise UsageError(f"{label}: not a number: {text!r}") from None
        if not math.isfinite(v):
            raise UsageError(f"{label} must be finite, got {text}")
        if lo is not None and v < lo:
            raise UsageError(f"{label} must be >= {lo:g}, got {text}")
        return v
    return parse




def parse_phis(text: str) -> list[float]:
    """'0-7' -> [0..7]; '0,1,2.5' -> [0, 1, 2.5]; '0-3,5' -> [0, 1, 2, 3, 5]."""
    out: list[float] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise UsageError(f"--family: empty item in {text!r}")
        lo, sep, hi = part.partition("-")
        try:
            if sep and lo.strip():
                a, b = int(lo), int(hi)
                if b < a:
                    raise UsageError(f"--family: range {part!r} runs backwards")
                if b - a > 100:
                    raise UsageError(f"--family: range {part!r} is too long (at most 100 members)")
                out.extend(float(i) for i in range(a, b + 1))
            else:
                out.append(float(part))
        except ValueError:
            raise UsageError(f"--family: cannot read {part!r} (use e.g. 0-7 or 0,1,2.5)") from None
    for phi in out:
        if not math.isfinite(phi) or phi < 0:
            raise UsageError(f"--family: phi must be finite and >= 0, got {phi:g}")
    return sorted(set(out))


def default_coefficients() -> tuple[tuple[float, float, float], str]:
    """(alpha, beta, gamma) when none are given: the paper's, as a user of EfficientNet expects."""
    from scaling.compound import PAPER_COEFFICIENTS

    return PAPER_COEFFICIENTS, "the paper's (EfficientNet, Tan & Le 2019)"


def coefficients_from_file(path: str) -> tuple[float, float, float]:
    """The ``best`` (alpha, beta, gamma) of a grid-search result (``nas-scale --grid-search``'s grid.json).

    A missing or unreadable file, a file without ``best``, or coefficients that break the
    constraint (each >= 1, alpha*beta^2*gamma^2 within COEFFICIENT_TOLERANCE of 2) are usage errors.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--coefficients: {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--coefficients: {path}: is a folder, not a grid.json") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--coefficients: {path}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise UsageError(f"--coefficients: {path}: not valid JSON ({e})") from None
    try:
        best = doc["best"]
        abg = tuple(float(best[k]) for k in ("alpha", "beta", "gamma"))
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"--coefficients: {path}: no best alpha/beta/gamma (expected a grid.json of "
                         "nas-scale --grid-search)") from None
    if not all(math.isfinite(v) and v >= 1 for v in abg):
        raise UsageError(f"--coefficients: {path}: alpha, beta, gamma must be finite and >= 1, got "
                         f"{', '.join(f'{v:g}' for v in abg)}")
    c = abg[0] * abg[1] ** 2 * abg[2] ** 2
    if abs(c - 2) > COEFFICIENT_TOLERANCE * 2:
        raise UsageError(f"--coefficients: {path}: alpha*beta^2*gamma^2 = {c:.3g}, not 2 within "
                         f"{COEFFICIENT_TOLERANCE:.0%}")
    return abg  # type: ignore[return-value]


def _coefficients(args) -> tuple[tuple[float, float, float], list[str]]:
    """The coefficients and the notes about them; callers print the notes only once the
    work succeeded, so that an error stays the only line on stderr."""
    given = (args.alpha, args.beta, args.gamma)
    if args.coefficients:
        (a, b, g), source = coefficients_from_file(args.coefficients), f"--coefficients {args.coefficients}"
    else:
        (a, b, g), source = default_coefficients()
    if all(v is not None for v in given):
        source = "--alpha/--beta/--gamma"
    elif any(v is not None for v in given):
        source += " with overrides"
    a, b, g = (v if v is not None else d for v, d in zip(given, (a, b, g)))
    notes = [f"coefficients alpha={a:g} beta={b:g} gamma={g:g} from {source}"]
    c = a * b * b * g * g
    if abs(c - 2) > 0.2:
        notes.append(f"warning: alpha*beta^2*gamma^2 = {c:.3g}, not about 2: FLOPs grow {c:.3g}x per unit of phi")
    return (a, b, g), notes


def _scale(base, phi: float, abg, args):
    from scaling.compound import ScalingError, compound_scale

    try:
        return compound_scale(base, phi, *abg, resolution_rule=args.resolution_rule,
                              resolution_divisor=args.resolution_divisor, max_params=args.max_params)
    except ScalingError as e:
        raise UsageError(str(e)) from None


def _family(base, phis, abg, args) -> int:
    from scaling.compound import constraint_value

    from ..cost import cost

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out} exists and is not a folder (--family writes one spec per phi there)")
    members = [(phi, _scale(base, phi, abg, args)) for phi in phis]  # everything checked before anything is written
    c0 = cost(base)
    k = constraint_value(*abg)
    rows = []
    for phi, s in members:
        c = cost(s)
        rows.append({"phi": phi, "name": s.name, "file": f"{s.name}.json", "resolution": s.resolution,
                     "depth": s.n_layers, "width_multiplier": round(s.provenance["scaling"]["width_multiplier"], 4),
                     "dropout": s.dropout, "params": c.params, "flops": c.flops,
                     "flops_ratio": round(c.flops / c0.flops, 4), "expected_ratio": round(k ** phi, 4)})
    table = {"base": base.name, "base_fingerprint": base.fingerprint(), "alpha": abg[0], "beta": abg[1],
             "gamma": abg[2], "constraint": k, "base_params": c0.params, "base_flops": c0.flops, "members": rows}
    md = [f"# Compound-scaled family of {base.name or 'the base'}",
          "",
          f"alpha={abg[0]:g} (depth), beta={abg[1]:g} (width), gamma={abg[2]:g} (resolution); "
          f"alpha*beta^2*gamma^2 = {k:.4g}. FLOPs: fvcore convention (1 multiply-add = 1 flop).",
          "",
          "| phi | spec | res | layers | width x | dropout | params | FLOPs | FLOPs / base | (a*b^2*g^2)^phi |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['phi']:g} | {r['file']} | {r['resolution']} | {r['depth']} | {r['width_multiplier']:g} | "
                  f"{r['dropout']:g} | {r['params']:,} | {r['flops']:,} | {r['flops_ratio']:.3f} | {r['expected_ratio']:.3f} |")
    md += ["", "The published EfficientNet B0..B7 are a table, not this formula for whole phi "
           "(see `nas-scale --published efficientnet-b7`)."]
    out.mkdir(parents=True, exist_ok=True)
    for (phi, s), r in zip(members, rows):
        s.save(out / r["file"])
    atomic_write_text(out / "family.json", json.dumps(table, indent=2) + "\n")
    atomic_write_text(out / "family.md", "\n".join(md) + "\n")
    _note(f"wrote {len(members)} specs, family.md and family.json to {out}")
    return 0


def _published(name: str, args) -> int:
    from scaling.compound import PUBLISHED, PAPER_COEFFICIENTS, compound_multipliers, published_spec

    from ..cost import cost
    from ..presets import load_preset

    if name not in PUBLISHED:
        raise UsageError(f"--published: unknown member {name!r}; one of {', '.join(PUBLISHED)}")
    base = load_preset(DEFAULT_BASE)
    spec = published_spec(base, name) if name != DEFAULT_BASE else base
    p = PUBLISHED[name]
    c = cost(spec)
    line = (f"published {name}: width x{p.width:g}, depth x{p.depth:g}, {p.resolution} px, dropout {p.dropout:g}, "
            f"{c.params:,} params, {c.flops:,} FLOPs")
    if name.startswith("efficientnet-b") and name[-1].isdigit():
        phi = int(name[-1])
        m = compound_multipliers(phi, *PAPER_COEFFICIENTS)
        line += (f"; the formula at phi={phi} with the paper's (1.2, 1.1, 1.15) gives width x{m.width:.3g}, "
                 f"depth x{m.depth:.3g}, {base.resolution * m.resolution:.0f} px (the family is a table, not the formula)")
    _note(line)
    write_spec(spec, args.output, "nas-scale", ' (or use --family)')
    return 0


def _grid(base, args, argv) -> int:
    from scaling.compound import ScalingError
    from scaling.grid import GridError, run_grid_search, write_results

    # everything that can be checked is checked before torch, the data or the output folder are touched
    from scaling.grid import grid_points

    try:
        n_points = len(grid_points(step=args.step, max_coef=args.max_coef, tolerance=args.tolerance))
    except GridError as e:
        raise UsageError(str(e)) from None
    from ..estimators import TRAIN_RECIPE, TRAIN_RESOLUTION
    from ..train import RECIPES

    # the frontier's best point within a grid's budget unless told otherwise: see --help
    resolution = TRAIN_RESOLUTION if args.base_resolution is None else args.base_resolution
    recipe = args.recipe or TRAIN_RECIPE
    if recipe not in RECIPES:
        raise UsageError(f"--recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    if not 1 <= resolution <= MAX_RESOLUTION:
        raise UsageError(f"--base-resolution must be in [1, {MAX_RESOLUTION}], got {resolution}")
    base = base.replace(resolution=resolution)
    if base.resolution < min_resolution(base):
        raise UsageError(f"--base-resolution {base.resolution} is too small for this network (total stride "
                         f"{total_stride(base)}); use at least {min_resolution(base)}")
    out = Path(args.output or "results/scaling")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out} exists and is not a folder")

    import torch

    from ..train import train_and_evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    # the images are drawn once, with --data-seed, as the ground truth draws them: --seed then changes only the
    # initialisation and the order, so two seeds of one candidate differ by training noise alone
    data = load_data(args.data, seed=args.data_seed)
    if args.limit_train is not None or args.limit_val is not None:
        data = data.subset(args.limit_train or data.num_train, args.limit_val, seed=args.data_seed)
    budget = {"data": args.data, "epochs": args.epochs, "batch_size": args.batch_size, "limit_train": args.limit_train,
              "limit_val": args.limit_val, "data_seed": args.data_seed, "seed": args.seed, "recipe": recipe}

    def evaluate(spec):
        return train_and_evaluate(spec, data, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                  recipe=recipe)

    _note(f"grid: {n_points} (alpha, beta, gamma) points with |alpha*beta^2*gamma^2 - 2| <= {args.tolerance:g} x 2; "
          f"base {base.name} at {base.resolution} px; {args.data}, {args.epochs:g} epoch(s), "
          f"limit_train={args.limit_train}")
    try:
        result = run_grid_search(base, evaluate, storage=args.storage, output_dir=out, step=args.step,
                                 max_coef=args.max_coef, tolerance=args.tolerance,
                                 max_candidates=args.max_candidates, budget=budget, progress=not args.quiet,
                                 log=_note)
    except (GridError, ScalingError) as e:
        raise UsageError(str(e)) from None
    if result.info.get("subsampled"):
        _note(result.info["note"])
    cmd = "nas-scale " + shlex.join(list(argv if argv is not None else sys.argv[1:]))
    paths = write_results(result, out, command=cmd)
    if result.best is None:
        raise RuntimeFailure(f"every candidate failed; see {paths[0]}")
    b = result.best
    _note(f"best alpha={b['alpha']:g} beta={b['beta']:g} gamma={b['gamma']:g} (accuracy {b['accuracy']:.4f}); "
          f"wrote {', '.join(str(p) for p in paths)}")
    sys.stdout.write(json.dumps(result.best) + "\n")
    return 0


@command("nas-scale")
def main(argv=None) -> int:
    ap = ArgumentParser(prog="nas-scale", description=(
        "Compound scaling: depth alpha^phi, width beta^phi, resolution gamma^phi from a base spec; "
        "or the grid search for alpha, beta, gamma at phi = 1 (--grid-search). The published EfficientNet "
        "B0..B7 are a table, not the formula for whole phi: --published NAME emits them by name."))
    ap.add_argument("--base", help=f"base spec: preset name, JSON file or JSON string (default {DEFAULT_BASE})")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--phi", type=_number("--phi", lo=0), help="compound coefficient (fractional allowed)")
    mode.add_argument("--family", help="one spec per phi, e.g. 0-7 or 0,1,2.5 (needs --output FOLDER)")
    mode.add_argument("--published", metavar="NAME", help="emit a published family member (efficientnet-b0..b7, -l2)")
    mode.add_argument("--grid-search", action="store_true", help="search alpha, beta, gamma at phi = 1 by training")
    ap.add_argument("--detector", action="store_true",
                    help="wrap a classification --base in EfficientDet-D0's BiFPN, heads and anchors, then scale it "
                         "as a detector (a detector --base, e.g. efficientdet-d0, scales as one without this flag)")
    ap.add_argument("--alpha", type=_number("--alpha", lo=1), help="depth coefficient (>= 1)")
    ap.add_argument("--beta", type=_number("--beta", lo=1), help="width coefficient (>= 1)")
    ap.add_argument("--gamma", type=_number("--gamma", lo=1), help="resolution coefficient (>= 1)")
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
    g = ap.add_argument_group("grid search")
    g.add_argument("--data", default="sample", help="dataset source (default sample; e.g. fashion-mnist)")
    g.add_argument("--base-resolution", type=int,
                   help="train the base at this resolution (default 16: the search's default estimator, the best "
                        "point of the trust-cost frontier, results/evaluation/trust.json)")
    g.add_argument("--recipe", default=None,
                   help="training recipe (default adamw, as the search's default estimator; efficientnet, resnet)")
    g.add_argument("--epochs", type=_number("--epochs", lo=0), default=1.0, help="epochs per candidate (default 1)")
    g.add_argument("--tolerance", type=_number("--tolerance", lo=0), default=0.1,
                   help="|alpha*beta^2*gamma^2 - 2| <= tolerance * 2 (default 0.1)")
    g.add_argument("--step", type=_number("--step"), default=0.05, help="grid step (default 0.05)")
    g.add_argument("--max-coef", type=_number("--max-coef", lo=1), default=1.4, help="largest coefficient (default 1.4)")
    g.add_argument("--max-candidates", type=positive_int("--max-candidates"),
                   help="train at most this many distinct architectures (deterministic even subsample)")
    g.add_argument("--storage", help="Optuna storage URL or journal file (default OUTPUT/grid.journal)")
    g.add_argument("--limit-train", type=positive_int("--limit-train"), help="train images per candidate")
    g.add_argument("--limit-val", type=positive_int("--limit-val"), help="held-out images per candidate")
    g.add_argument("--batch-size", type=positive_int("--batch-size"), default=64)
    g.add_argument("--seed", type=non_negative_int("--seed"), default=0,
                   help="initialisation and order of training (default 0)")
    g.add_argument("--data-seed", type=non_negative_int("--data-seed"), default=0,
                   help="the stratified draw of --limit-train/--limit-val images, made once for every candidate "
                        "and every --seed (default 0)")
    g.add_argument("--threads", type=positive_int("--threads"), help="torch CPU threads")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
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
        return _published(args.published, args)

    from ..presets import load_spec

    base = load_spec(args.base or DEFAULT_BASE)
    if args.grid_search:
        if any(v is not None for v in (args.alpha, args.beta, args.gamma)):
            raise UsageError("--grid-search searches alpha, beta, gamma; drop --alpha/--beta/--gamma")
        return _grid(base, args, argv)
    if args.family is not None:
        if not args.output:
            raise UsageError("--family needs --output FOLDER")
        phis = parse_phis(args.family)
        abg, notes = _coefficients(args)
        rc = _family(base, phis, abg, args)
        for n in notes:
            _note(n)
        return rc
    if args.phi is None:
        raise UsageError("give --phi, --family, --published or --grid-search")
    abg, notes = _coefficients(args)
    spec = _scale(base, args.phi, abg, args)
    write_spec(spec, args.output, "nas-scale", ' (or use --family)')
    for n in notes:
        _note(n)
    return 0


entry = main.entry
