"""What a latency table is keyed by: one :class:`Entry` per distinct piece of a network.

A network is stem -> layers -> head -> pool -> classifier (:mod:`nas.build`); each
piece's cost depends only on the fields of its entry: op, expansion, kernel, stride,
SE ratio and activation, the *effective* skip (what the block really adds: nothing,
the input, or a pooling/projection shortcut), input and output widths and the input
resolution.  Stochastic depth and dropout do nothing at inference and BN's eps and
momentum change no cost, so they are not part of the key.  Torch-free: the table can
be read and a spec predicted without importing torch.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from ..spec import Spec, expanded_channels, iter_layers

__all__ = ["Entry", "conv_out", "effective_skip", "spec_entries", "space_entries", "stage_variants", "tail_entries"]


def conv_out(resolution: int, stride: int) -> int:
    """Output side of a 'same'-padded odd-kernel conv (padding (k-1)//2): floor((r-1)/s)+1.

    The pooling skip (kernel = stride, ceil mode) gives the same ceil(r/s).
    """
    return (resolution - 1) // stride + 1


def effective_skip(skip: str, stride: int, in_channels: int, out_channels: int) -> str:
    """What the block adds to its body's output: ``none``, ``identity`` (the input) or ``pool``.

    Mirrors :class:`nas.blocks._Layer`: an identity skip across a stride or width
    change adds nothing, and a pooling skip on a layer that keeps the shape is the identity.
    """
    same = stride == 1 and in_channels == out_channels
    if skip == "pool":
        return "identity" if same else "pool"
    if skip == "identity" and same:
        return "identity"
    return "none"


@dataclass(frozen=True)
class Entry:
    """One distinct piece of a network, with exactly the fields that change its cost."""

    kind: str
    in_channels: int
    out_channels: int
    resolution: int  # input side in pixels (1 for the classifier)
    kernel: int = 1
    stride: int = 1
    op: str = ""
    expand_ratio: float = 1
    se_ratio: float = 0.0
    skip: str = "none"
    activation: str = ""
    se_activation: str = ""

    @property
    def key(self) -> str:
        """The table key: a canonical one-line form (the table's JSON object keys)."""
        c = f"c{self.in_channels}-{self.out_channels}"
        if self.kind == "stem":
            return f"stem {c} k{self.kernel} s{self.stride} r{self.resolution} {self.activation}"
        if self.kind == "head":
            return f"head {c} r{self.resolution} {self.activation}"
        if self.kind == "pool":
            return f"pool c{self.in_channels} r{self.resolution}"
        if self.kind == "classifier":
            return f"classifier {c}"
        se = f"se{self.se_ratio:g}/{self.se_activation}" if self.se_ratio else "se0"
        return (f"layer {self.op} e{self.expand_ratio:g} k{self.kernel} s{self.stride} {se} skip-{self.skip} "
                f"{c} r{self.resolution} {self.activation}")

    @property
    def out_resolution(self) -> int:
        return conv_out(self.resolution, self.stride)

    @classmethod
    def layer(cls, op: str, expand_ratio: float, kernel: int, stride: int, se_ratio: float, skip: str,
              in_channels: int, out_channels: int, resolution: int, activation: str, se_activation: str) -> "Entry":
        """A block, normalised so that identical modules get identical keys."""
        if op == "mbconv" and expanded_channels(in_channels, expand_ratio) == in_channels:
            op, expand_ratio = "dwconv", 1  # MBConv without expansion builds exactly a dwconv block
        if isinstance(expand_ratio, float) and expand_ratio.is_integer():
            expand_ratio = int(expand_ratio)
        return cls("layer", in_channels, out_channels, resolution, kernel, stride, op, expand_ratio,
                   float(se_ratio), effective_skip(skip, stride, in_channels, out_channels), activation,
                   se_activation if se_ratio else "")


def _stem(spec: Spec) -> Entry:
    return Entry("stem", spec.in_channels, spec.stem.out_channels, spec.resolution, spec.stem.kernel,
                 spec.stem.stride, activation=spec.activation)


def tail_entries(spec: Spec, in_channels: int, resolution: int) -> list[tuple[str, Entry]]:
    head = spec.head.out_channels
    return [("head", Entry("head", in_channels, head, resolution, activation=spec.activation)),
            ("pool", Entry("pool", head, head, resolution)),
            ("classifier", Entry("classifier", head, spec.num_classes, 1))]


def spec_entries(spec: Spec) -> list[tuple[str, Entry]]:
    """``(name, entry)`` for every piece of ``spec`` in forward order; names as in :mod:`nas.build`."""
    stem = _stem(spec)
    out = [("stem", stem)]
    res = stem.out_resolution
    for p in iter_layers(spec):
        s = p.stage
        e = Entry.layer(s.op, s.expand_ratio, s.kernel, p.stride, s.se_ratio, s.skip, p.in_channels,
                        s.out_channels, res, s.activation, s.se_activation)
        out.append((f"stages[{p.stage_index}].{p.layer_index}", e))
        res = e.out_resolution
    return out + tail_entries(spec, spec.stages[-1].out_channels, res)


def stage_variants(space: Any, skeleton: Spec) -> list[set]:
    """Every Stage object each stage of ``space`` can decode to (others held at the skeleton's choices).

    The space's parameters are named ``s<stage>_<choice>`` (see search_spaces/mnasnet.py);
    decoding every combination of one stage's choices is exact and cheap (432 per stage).
    """
    base_choices = space.encode(space.base)
    dists = space.distributions()
    variants = []
    for i in range(len(skeleton.stages)):
        names = [n for n in space.param_names if n.startswith(f"s{i + 1}_")]
        seen = set()
        for values in itertools.product(*(dists[n].choices for n in names)):
            spec = space.decode({**base_choices, **dict(zip(names, values))})
            seen.add(spec.stages[i])
        variants.append(seen)
    return variants


def space_entries(space: Any, resolution: int | None = None) -> dict[str, Entry]:
    """Every distinct entry any member of ``space`` can contain at ``resolution`` (default: the skeleton's).

    ``space`` is a search space object (:mod:`search_spaces`): ``base``, ``param_names``,
    ``distributions()``, ``encode`` and ``decode``.  A stage's first layer takes any
    output width of the stage before it; its other layers keep their own width, stride 1.
    Strides are the skeleton's (the space does not search them), so the resolution
    every stage sees is fixed.
    """
    skeleton = space.base if resolution is None else space.base.replace(resolution=resolution)
    variants = stage_variants(space, skeleton)
    stem = _stem(skeleton)
    out: dict[str, Entry] = {stem.key: stem}
    in_widths = {stem.out_channels}
    res = stem.out_resolution
    for i, stage in enumerate(skeleton.stages):
        next_res = conv_out(res, stage.stride)
        for v in sorted(variants[i], key=lambda s: s.short()):
            if v.stride != stage.stride:
                raise ValueError(f"space {space.name}: stage {i + 1} changes its stride; the table assumes fixed strides")
            for cin in sorted(in_widths):
                e = Entry.layer(v.op, v.expand_ratio, v.kernel, v.stride, v.se_ratio, v.skip, cin, v.out_channels,
                                res, v.activation, v.se_activation)
                out.setdefault(e.key, e)
            if v.repeats > 1:
                e = Entry.layer(v.op, v.expand_ratio, v.kernel, 1, v.se_ratio, v.skip, v.out_channels,
                                v.out_channels, next_res, v.activation, v.se_activation)
                out.setdefault(e.key, e)
        in_widths = {v.out_channels for v in variants[i]}
        res = next_res
    for cin in sorted(in_widths):
        for _, e in tail_entries(skeleton, cin, res):
            out.setdefault(e.key, e)
    return out
