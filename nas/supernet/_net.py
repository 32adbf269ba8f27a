"""The weight-sharing supernet over a MnasNet factorized space, and extraction of its members.

Every member of the space runs as a path through one set of weights:

* **elastic kernel**: only the largest kernel (5x5) is stored; a 3x3 member uses
  its centre (Once-for-All without the learned kernel transform, as BigNAS does);
* **elastic width and expansion**: every conv, BN and SE tensor is stored at the
  largest width the space allows; a member uses the first channels (no importance
  reordering).  MBConv 3 and MBConv 6 share one set of weights: expansion 3 is the
  first half of expansion 6's channels;
* **elastic depth**: a stage stores its largest number of layers; a member runs the
  first ``repeats``;
* **SE on/off**: one SE module per op branch, skipped when the member has none;
* **skip**: identity and none hold no weights; the pooling skip's 1x1 projection
  is stored once per stage (only a stage's first layer can change shape);
* **op**: regular conv, depthwise-separable and MBConv keep separate weights (one
  branch each per layer).  Sharing makes no sense there: a depthwise-separable
  layer filters the block's *input*, MBConv's depthwise filters *expanded*
  features, and a regular conv mixes channels inside its kernel.

So every member of the space is covered; a spec outside the space is refused by
:meth:`Supernet.member` with one line naming the stage and the choice.

Module names mirror :func:`nas.build_model`'s (``stem``, ``stages.<i>.<j>``,
``head``, ``classifier``), with the op branch inserted: the member's
``stages.i.j.body.<rest>`` lives at ``stages.i.j.ops.<op>.<rest>``.  Extraction
(:meth:`Supernet.extract`) walks the member's own state dict and cuts each tensor
out of the supernet's: first channels on the channel axes, the centre on the
kernel axes.  That one rule is the whole correspondence, so extraction cannot
drift from :meth:`Supernet.forward`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import CHOICES, ChoiceError, MnasNetSpace

from ..blocks import make_activation
from ..build import build_model, init_reference_weights
from ..spec import LayerPlan, Spec, expanded_channels, iter_layers, se_channels

__all__ = ["Supernet", "Member", "SupernetError", "fit_tensor"]


class SupernetError(ValueError):
    """A spec outside the supernet, a checkpoint that does not fit, ...: one line."""


# ---------------------------------------------------------------- elastic modules


class DynamicConvBN(nn.Sequential):
    """Conv (no bias) -> BN stored at the largest width and kernel; any first channels, any centred kernel.

    A subclass of ``nn.Sequential`` so that its parameters are named ``0.weight`` and
    ``1.*`` like :class:`nas.blocks.ConvBNAct`'s.
    """

    def __init__(self, max_in: int, max_out: int, kernel: int, *, depthwise: bool = False,
                 bn_eps: float = 1e-3, bn_momentum: float = 0.01, plain_bn: bool = False):
        bns = [nn.BatchNorm2d(max_out, eps=bn_eps, momentum=bn_momentum) for _ in range(2 if plain_bn else 1)]
        super().__init__(nn.Conv2d(max_in, max_out, kernel, groups=max_out if depthwise else 1, bias=False), *bns)
        self.depthwise = depthwise

    def forward(self, x: torch.Tensor, out_channels: int, kernel: int | None = None,  # type: ignore[override]
                stride: int = 1, plain: bool = False) -> torch.Tensor:
        """``plain``: the layer adds no shortcut, so its private BN (``2``, when there is one) normalises."""
        conv, bn = self[0], self[2 if plain and len(self) > 2 else 1]
        cin = x.shape[1]
        big = conv.kernel_size[0]
        k = big if kernel is None else kernel
        a = (big - k) // 2  # the centre of the stored kernel
        if self.depthwise:
            w, groups = conv.weight[:cin, :, a:a + k, a:a + k], cin
        else:
            w, groups = conv.weight[:out_channels, :cin, a:a + k, a:a + k], 1
        x = F.conv2d(x, w, None, stride, (k - 1) // 2, 1, groups)
        c = w.shape[0]
        # Slices of the running buffers are views: training updates the stored statistics in place.
        return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                            self.training, bn.momentum if bn.momentum is not None else 0.0, bn.eps)


class DynamicSE(nn.Module):
    """Squeeze-and-excitation at any first-channel width and squeeze width (names as nas.blocks.SqueezeExcite)."""

    def __init__(self, max_channels: int, max_squeeze: int, activation: str):
        super().__init__()
        self.fc1 = nn.Conv2d(max_channels, max_squeeze, 1)
        self.act = make_activation(activation)
        self.fc2 = nn.Conv2d(max_squeeze, max_channels, 1)

    def forward(self, x: torch.Tensor, squeeze: int) -> torch.Tensor:
        c = x.shape[1]
        s = x.mean((2, 3), keepdim=True)
        s = self.act(F.conv2d(s, self.fc1.weight[:squeeze, :c], self.fc1.bias[:squeeze]))
        s = F.conv2d(s, self.fc2.weight[:c, :squeeze], self.fc2.bias[:c])
        return x * torch.sigmoid(s)


class _Branch(nn.Module):
    """Holds one op's modules under the names nas.blocks gives them (expand, depthwise, conv, se, project)."""


@dataclass(frozen=True)
class _Limits:
    """The largest values one layer position must hold."""

    max_in: int
    max_out: int
    max_expand: float
    max_kernel: int
    max_se: float
    shortcut: bool  # a stage's first layer: the pooling skip may need a projection


class SuperLayer(nn.Module):
    """One layer position of a stage: an MBConv, a depthwise-separable and a regular-conv branch."""

    def __init__(self, lim: _Limits, activation: str, se_activation: str, bn_eps: float, bn_momentum: float,
                 plain_bn: bool = False):
        super().__init__()
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        last = dict(bn, plain_bn=plain_bn)  # each branch's last BN: private to plain use when asked
        k = lim.max_kernel
        sq = se_channels(lim.max_in, lim.max_se)
        mid = expanded_channels(lim.max_in, lim.max_expand)
        self.act = make_activation(activation)
        mb = _Branch()  # expand -> depthwise -> SE -> project
        mb.expand = DynamicConvBN(lim.max_in, mid, 1, **bn)
        mb.depthwise = DynamicConvBN(mid, mid, k, depthwise=True, **bn)
        mb.se = DynamicSE(mid, sq, se_activation)
        mb.project = DynamicConvBN(mid, lim.max_out, 1, **last)
        dw = _Branch()  # depthwise on the input -> SE -> project
        dw.depthwise = DynamicConvBN(lim.max_in, lim.max_in, k, depthwise=True, **bn)
        dw.se = DynamicSE(lim.max_in, sq, se_activation)
        dw.project = DynamicConvBN(lim.max_in, lim.max_out, 1, **last)
        cv = _Branch()  # a full kxk conv -> SE (on its output, squeezed by the input width)
        cv.conv = DynamicConvBN(lim.max_in, lim.max_out, k, **last)
        cv.se = DynamicSE(lim.max_out, sq, se_activation)
        self.ops = nn.ModuleDict({"mbconv": mb, "dwconv": dw, "conv": cv})
        if lim.shortcut:
            self.shortcut = _Branch()
            self.shortcut.proj = DynamicConvBN(lim.max_in, lim.max_out, 1, **bn)

    def forward(self, x: torch.Tensor, p: LayerPlan) -> torch.Tensor:
        s, cin, cout = p.stage, p.in_channels, p.stage.out_channels
        branch = self.ops[s.op]
        plain = not adds_shortcut(p)
        if s.op == "conv":
            h = self.act(branch.conv(x, cout, s.kernel, p.stride, plain=plain))
            if s.se_ratio > 0:
                h = branch.se(h, se_channels(cin, s.se_ratio))
        else:
            mid = expanded_channels(cin, s.expand_ratio)
            h = self.act(branch.expand(x, mid)) if mid != cin else x
            h = self.act(branch.depthwise(h, mid, s.kernel, p.stride))
            if s.se_ratio > 0:
                h = branch.se(h, se_channels(cin, s.se_ratio))
            h = branch.project(h, cout, plain=plain)
        # the shortcut rules of nas.blocks._Layer, decided per member (adds_shortcut)
        if plain:
            return h
        if s.skip == "pool":
            sc = x
            if p.stride > 1:
                sc = F.avg_pool2d(sc, p.stride, p.stride, ceil_mode=True, count_include_pad=False)
            if cin != cout:
                sc = self.shortcut.proj(sc, cout)
            return h + sc
        return h + x  # an identity skip that keeps the shape


def adds_shortcut(p: LayerPlan) -> bool:
    """Whether the layer adds a shortcut to its branch (nas.blocks._Layer's rules)."""
    return p.stage.skip == "pool" or (p.stage.skip == "identity" and p.stride == 1
                                      and p.in_channels == p.stage.out_channels)


# ---------------------------------------------------------------- members


@dataclass(frozen=True)
class Member:
    """A spec of the space, resolved for the supernet: its layer plan, classes set to the supernet's."""

    spec: Spec
    plans: tuple[LayerPlan, ...]
    choices: dict

    def fingerprint(self) -> str:
        return self.spec.fingerprint()


def _op_kinds(space: MnasNetSpace) -> dict[str, tuple[str, float]]:
    """op choice -> (spec op, expand ratio), read off the space's own decoder."""
    out = {}
    for op in CHOICES["op"]:
        c = {n: CHOICES[n.split("_", 1)[1]][0] for n in space.param_names}
        c.update({n: op for n in space.param_names if n.endswith("_op")})
        st = space.decode(c).stages[0]
        out[op] = (st.op, st.expand_ratio)
    return out


def _extreme(space: MnasNetSpace, largest: bool, op: str | None = None) -> dict:
    """The choice dict of the largest (or smallest) member: per choice the value that costs most (least).

    ``op`` (a spec op: ``mbconv``, ``dwconv`` or ``conv``) keeps the member on that op
    branch: the smallest MBConv is expand 3, the same weights as the largest's first half.
    """
    kinds = _op_kinds(space)
    pick = max if largest else min
    # MBConv 6 is the widest shared path (the teacher of the sandwich rule), depthwise-separable the
    # narrowest; the regular conv keeps weights of its own and is trained through the random members.
    shared = [o for o in CHOICES["op"] if kinds[o][0] != "conv"] if op is None else \
        [o for o in CHOICES["op"] if kinds[o][0] == op]
    if not shared:
        raise SupernetError(f"no op choice {op!r} in space {space.name}")
    op = pick(shared, key=lambda o: kinds[o][1])
    per_stage = {"op": op, "kernel": pick(CHOICES["kernel"]), "se": pick(CHOICES["se"]),
                 "skip": "pool" if largest else "none", "filters": pick(CHOICES["filters"]),
                 "layers": pick(CHOICES["layers"])}
    return {n: per_stage[n.split("_", 1)[1]] for n in space.param_names}


# ---------------------------------------------------------------- the supernet


class Supernet(nn.Module):
    """All members of ``space`` in one network; ``forward(x, member)`` runs one of them."""

    def __init__(self, space: MnasNetSpace, num_classes: int | None = None, *, plain_bn: bool = False):
        """``plain_bn``: each branch's last BN has a private twin for layers that add no shortcut.

        A branch trained as a residual learns a small correction to its input; the same weights
        used without the shortcut must stand for the whole signal.  The twin (like slimmable
        networks' private BN per width) lets the two uses keep their own scale and shift.
        """
        super().__init__()
        self.plain_bn = plain_bn
        base = space.base
        self.space = space
        self.num_classes = int(num_classes or base.num_classes)
        kinds = _op_kinds(space)
        big = space.decode(_extreme(space, largest=True))
        max_expand = max(e for _, e in kinds.values())
        max_kernel, max_se = max(CHOICES["kernel"]), max(CHOICES["se"])
        bn = dict(bn_eps=base.bn.eps, bn_momentum=base.bn.momentum)
        self.stem = DynamicConvBN(base.in_channels, base.stem.out_channels, base.stem.kernel, **bn)
        self.act = make_activation(base.activation)
        stages = []
        cin = base.stem.out_channels
        for st, bs in zip(big.stages, base.stages):
            layers = []
            for j in range(st.repeats):
                lim = _Limits(cin if j == 0 else st.out_channels, st.out_channels, max_expand, max_kernel, max_se,
                              shortcut=j == 0)
                layers.append(SuperLayer(lim, bs.activation, bs.se_activation, **bn, plain_bn=plain_bn))
            stages.append(nn.ModuleList(layers))
            cin = st.out_channels
        self.stages = nn.ModuleList(stages)
        self.head = DynamicConvBN(cin, base.head.out_channels, 1, **bn)
        self.classifier = nn.Linear(base.head.out_channels, self.num_classes)
        self._init_weights()
        self.largest = self.member(big)
        self.smallest = self.member(space.decode(_extreme(space, largest=False)))
        # the smallest member of each op branch (the sandwich's narrow end when it rotates over branches)
        self.smallest_of = {op: self.member(space.decode(_extreme(space, largest=False, op=op)))
                            for op in dict.fromkeys(k for k, _ in kinds.values())}

    def zero_init_residual(self) -> None:
        """Zero the last BN's scale of every layer that can add an identity (BigNAS).

        Layers after a stage's first keep their shape, so with an identity or pooling skip
        they start as the identity: a deep member starts as its shallow self.  A stage's
        first layer is left alone (it reshapes; with skip ``none`` zeroing would cut the path).
        """
        with torch.no_grad():
            for layers in self.stages:
                for layer in list(layers)[1:]:
                    for name, branch in layer.ops.items():
                        last = branch.conv if name == "conv" else branch.project
                        last[1].weight.zero_()

    def _init_weights(self) -> None:
        init_reference_weights(self.modules())  # nas.build's, at the largest shapes

    # ------------------------------------------------------------ members

    def member(self, spec: Spec) -> Member:
        """Resolve ``spec`` as a member; :class:`SupernetError` (one line) if it is not one.

        A spec counts as a member whatever its resolution and whether its classifier
        has the skeleton's classes or the supernet's (search results keep the
        skeleton's 1000; ``nas-train`` outputs have the data's).
        """
        base = self.space.base
        if not isinstance(spec, Spec):
            raise TypeError(f"expected a Spec, got {type(spec).__name__}")
        if spec.in_channels != base.in_channels:
            raise SupernetError(f"in_channels: the supernet takes {base.in_channels}, the spec has {spec.in_channels}")
        if spec.num_classes not in (base.num_classes, self.num_classes):
            raise SupernetError(f"num_classes: the supernet has {self.num_classes} classes "
                                f"(skeleton {base.num_classes}), the spec {spec.num_classes}")
        try:
            choices = self.space.encode(spec.replace(num_classes=base.num_classes, resolution=base.resolution))
        except ChoiceError as e:
            raise SupernetError(f"not a member of supernet space {self.space.name}: {e}") from None
        resolved = spec.replace(num_classes=self.num_classes)
        return Member(resolved, tuple(iter_layers(resolved)), choices)

    def sample(self, rng) -> Member:
        """A uniformly random member (``rng`` a ``random.Random``)."""
        return self.member(self.space.decode(self.space.sample(rng)))

    # ------------------------------------------------------------ running a member

    def forward(self, x: torch.Tensor, member: Member, dropout: float = 0.0,  # type: ignore[override]
                features: list | None = None, stem: list | None = None) -> torch.Tensor:
        """The member's logits; ``features``, when a list, receives each stage's output (for distillation),
        ``stem`` the stem's."""
        spec = member.spec
        x = self.act(self.stem(x, spec.stem.out_channels, stride=spec.stem.stride))
        if stem is not None:
            stem.append(x)
        last = len(member.plans) - 1
        for k, p in enumerate(member.plans):
            x = self.stages[p.stage_index][p.layer_index](x, p)
            if features is not None and (k == last or member.plans[k + 1].stage_index != p.stage_index):
                features.append(x)
        x = self.act(self.head(x, spec.head.out_channels))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        if dropout > 0:
            x = F.dropout(x, dropout, self.training)
        return self.classifier(x)

    def forward_blockwise(self, member: Member, stem: torch.Tensor, teacher: list) -> tuple[list, torch.Tensor]:
        """Each of the member's stages run on the teacher's input to that stage (DNA, Li et al. 2020).

        ``stem`` is the stem's output and ``teacher`` the teacher's stage outputs (both detached);
        stage ``i`` reads ``teacher[i - 1]``'s first channels (the member's own input width).
        Returns the member's stage outputs and its logits from the teacher's last stage output
        cut to the member's width, so that every stage and the head learn to work on the
        teacher's features whatever produced them.
        """
        spec = member.spec
        outs = []
        x, stage = None, -1
        for p in member.plans:
            if p.stage_index != stage:
                if x is not None:
                    outs.append(x)
                stage = p.stage_index
                source = stem if stage == 0 else teacher[stage - 1]
                x = source[:, :p.in_channels]
            x = self.stages[p.stage_index][p.layer_index](x, p)
        outs.append(x)
        h = teacher[-1][:, :spec.stages[-1].out_channels]
        h = self.act(self.head(h, spec.head.out_channels))
        return outs, self.classifier(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))

    # ------------------------------------------------------------ extraction

    def extract(self, spec: Spec | Member) -> dict[str, torch.Tensor]:
        """A plain state dict for ``nas.build_model(member.spec)`` (loads with ``strict=True``).

        Copies, not views: the result never aliases the supernet's storage.
        """
        member = spec if isinstance(spec, Member) else self.member(spec)
        with torch.device("meta"):  # shapes only: nothing is allocated or initialised
            target = build_model(member.spec).state_dict()
        source = self.state_dict()
        plain = {(p.stage_index, p.layer_index) for p in member.plans if not adds_shortcut(p)} if self.plain_bn \
            else set()
        out = {}
        for key, ref in target.items():
            src = source[self._source_key(key, member.spec, plain)]
            out[key] = fit_tensor(src, tuple(ref.shape), key).detach().clone()
        return out

    @staticmethod
    def _source_key(key: str, spec: Spec, plain: set = frozenset()) -> str:
        parts = key.split(".")
        if parts[0] == "stages" and parts[3] == "body":
            i, j = int(parts[1]), int(parts[2])
            op = spec.stages[i].op
            rest = parts[4:]
            # the branch's last BN (project.1, or conv.1 of a regular conv) comes from its plain twin
            if (i, j) in plain and rest[:2] in (["project", "1"], ["conv", "1"]):
                rest = [rest[0], "2", *rest[2:]]
            return ".".join(parts[:3] + ["ops", op] + rest)
        return key


def fit_tensor(t: torch.Tensor, shape: tuple[int, ...], key: str = "") -> torch.Tensor:
    """The part of ``t`` a smaller tensor of ``shape`` takes: first entries, centre on kernel axes (2, 3)."""
    if t.ndim != len(shape):
        raise SupernetError(f"{key}: stored tensor has {t.ndim} dims, the member needs {len(shape)}")
    index = []
    for d, (have, want) in enumerate(zip(t.shape, shape)):
        if want > have:
            raise SupernetError(f"{key}: axis {d} needs {want}, the supernet stores {have}")
        a = (have - want) // 2 if d >= 2 else 0
        index.append(slice(a, a + want))
    return t[tuple(index)]
