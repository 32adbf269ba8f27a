"""A compound-scaled family: one spec per phi, with ``family.json`` and ``family.md`` beside them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from nas.atomic import atomic_write_text
from nas.spec import Spec

from .compound import compound_scale, constraint_value

__all__ = ["scale_family", "family_table", "write_family"]


def scale_family(base: Spec, phis: Sequence[float], abg: tuple[float, float, float], **options
                 ) -> list[tuple[float, Spec]]:
    """``[(phi, compound_scale(base, phi, *abg, **options))]``: every member, before anything is written
    (a :class:`scaling.compound.ScalingError` for the first that cannot be made)."""
    return [(phi, compound_scale(base, phi, *abg, **options)) for phi in phis]


def family_table(base: Spec, members: Sequence[tuple[float, Spec]], abg: tuple[float, float, float]
                 ) -> tuple[dict, str]:
    """``family.json``'s document and ``family.md``'s text for ``members`` of ``base``."""
    from nas.cost import cost

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
    return table, "\n".join(md) + "\n"


def write_family(folder: str | Path, base: Spec, members: Sequence[tuple[float, Spec]],
                 abg: tuple[float, float, float]) -> None:
    """Each member as ``NAME.json``, then ``family.json`` and ``family.md``, into ``folder`` (made if missing)."""
    out = Path(folder)
    table, md = family_table(base, members, abg)
    out.mkdir(parents=True, exist_ok=True)
    for (phi, s), r in zip(members, table["members"]):
        s.save(out / r["file"])
    atomic_write_text(out / "family.json", json.dumps(table, indent=2) + "\n")
    atomic_write_text(out / "family.md", md)
