"""Training-free accuracy proxies ("zero-cost" estimates), and the params/FLOPs baselines.

Each proxy scores an *untrained* network on one real minibatch; higher means
"predicted more accurate".  They cost one or two forward/backward passes instead
of a training run, and :mod:`scripts.proxy_study` measures how well they rank
architectures against short training (``results/evaluation/``).

Registry :data:`PROXIES`: name -> ``fn(model, x, y) -> float``.

``synflow``
    Tanaka et al., "Pruning neural networks without any data by iteratively
    conserving synaptic flow", NeurIPS 2020; used as a NAS proxy by Abdelfattah
    et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021.  With every
    parameter replaced by its absolute value and an all-ones input, R = sum of
    the outputs; the score is sum over conv/linear weights of theta * dR/dtheta.
    Computed in float64 with BN in eval mode (fresh running statistics make BN
    the identity, as in the reference code that builds nets without BN).  The
    score grows like a product over layers, so we return its natural **log**.
    If float64 still overflows (far beyond EfficientNet-B7: its log-score is
    ~130, the float64 limit ~709), the weights of each layer are scaled down by
    a power of two and the log of the product of the scales is added back.
    That is exact for a plain chain of piecewise-linear layers and an
    approximation otherwise (residual paths of different depth, SE gates), so
    scores past the overflow point rank only roughly.
``naswot``
    Mellor et al., "Neural Architecture Search without Training", ICML 2021.
    Every activation unit (ReLU / ReLU6 / SiLU modules, found by forward hooks)
    gives each input a binary code (pre-activation > 0; the sign survives the
    activation, so in-place modules are fine).  K[i, j] = number of units where
    inputs i and j agree; the score is log|det K|.  BN uses batch statistics;
    stochastic depth and dropout are off.
``grad_norm``
    Abdelfattah et al. 2021: sum over conv/linear weights of the L2 norm of the
    cross-entropy gradient on the minibatch.
``snip``
    Lee et al., "SNIP: Single-shot Network Pruning based on Connection
    Sensitivity", ICLR 2019; as a NAS proxy in Abdelfattah et al. 2021: sum over
    conv/linear weights of |theta * dL/dtheta|.
``params``, ``flops``
    Baselines from the analytic cost model :func:`nas.cost.cost` (no model is
    built by :func:`score_proxy`); fvcore's convention for FLOPs.  On
    NAS-Bench-style spaces plain size is a strong ranker, close to the best proxies
    (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021).

:func:`score_proxy` builds ``spec.replace(num_classes=dataset.num_classes,
resolution=resolution)`` with a seeded initialisation and scores it on a seeded,
stratified minibatch of the train split; :func:`score_proxies` does several
proxies on one batch and times each (:class:`ProxyResult`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .spec import Spec

__all__ = ["PROXIES", "ANALYTIC", "ProxyResult", "score_proxy", "score_proxies", "synflow", "naswot",
           "grad_norm", "snip"]

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU)


def _weights(model: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _bn_train_only(model: nn.Module) -> None:
    """Batch statistics in BN, but no stochastic depth or dropout (deterministic scores)."""
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()


# ---------------------------------------------------------------- proxies


def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model = model.double()
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    ones = torch.ones((1,) + tuple(x.shape[1:]), dtype=torch.float64)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    log_scale = 0.0
    for attempt in range(8):
        model.zero_grad(set_to_none=True)
        out = model(ones)
        total = out.sum()
        if bool(torch.isfinite(total.detach())) and float(total.detach()) > 0:
            total.backward()
            with torch.no_grad():
                score = sum(float((m.weight * m.weight.grad).sum()) for m in layers if m.weight.grad is not None)
            if math.isfinite(score) and score > 0:
                return math.log(score) + log_scale
        # Overflow: shrink every layer by 2**-k.  For the (piecewise-)linear parts the
        # score scales by the product of the layer scales, which is added back in log.
        k = 8 << attempt  # 2**-8, 2**-16, ... per layer: large overflows resolve in a few tries
        with torch.no_grad():
            for m in layers:
                m.weight.mul_(2.0 ** -k)
        log_scale += len(layers) * k * math.log(2.0)
    raise FloatingPointError("synflow overflowed float64 even after rescaling")


def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    n = x.shape[0]
    k = torch.zeros((n, n), dtype=torch.float64)

    def hook(module, inputs, output):
        c = (output.detach() > 0).reshape(n, -1).double()
        k.add_(c @ c.t()).add_((1.0 - c) @ (1.0 - c).t())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _ACTIVATIONS)]
    try:
        _bn_train_only(model)
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(k)
    value = float(logdet)
    if not math.isfinite(value):  # identical codes for two inputs: singular kernel
        return -1e30
    return value


def _loss_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[nn.Parameter]:
    _bn_train_only(model)
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    return [w for w in _weights(model) if w.grad is not None]


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    weights = _loss_grads(model, x, y)
    with torch.no_grad():
        return float(sum(float(w.grad.norm()) for w in weights))


def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    weights = _loss_grads(model, x, y)
    with torch.no_grad():
        return float(sum(float((w * w.grad).abs().sum()) for w in weights))


def _model_params(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(sum(p.numel() for p in model.parameters()))


def _model_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    from .cost import fvcore_flops
    return float(fvcore_flops(model, int(x.shape[-1]), int(x.shape[1])))


PROXIES: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], float]] = {
    "synflow": synflow,
    "naswot": naswot,
    "grad_norm": grad_norm,
    "snip": snip,
    # Baselines.  On a model they count directly (fvcore for FLOPs);
    # score_proxy takes them from the analytic cost model instead (no model built).
    "params": _model_params,
    "flops": _model_flops,
}


def _analytic_params(spec: Spec, resolution: int) -> float:
    from .cost import cost
    return float(cost(spec, resolution).params)


def _analytic_flops(spec: Spec, resolution: int) -> float:
    from .cost import cost
    return float(cost(spec, resolution).flops)


ANALYTIC: dict[str, Callable[[Spec, int], float]] = {"params": _analytic_params, "flops": _analytic_flops}
"""Estimators computed from the spec alone: name -> fn(spec, resolution)."""


@dataclass(frozen=True)
class ProxyResult:
    name: str
    value: float
    seconds: float

    def to_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "seconds": self.seconds}


def _check(names) -> None:
    for name in names:
        if name not in PROXIES:
            raise ValueError(f"unknown proxy {name!r}; proxies: {', '.join(PROXIES)}")


def score_proxies(names, spec: Spec, dataset, *, resolution: int = 32, batch_size: int = 64,
                  seed: int = 0) -> dict[str, ProxyResult]:
    """Score ``spec`` with every proxy in ``names`` on one seeded minibatch; each result is timed.

    Each model-based proxy gets a freshly built, identically seeded model (synflow
    mutates its parameters).  ``seconds`` counts building the model and scoring,
    not loading the batch (shared).
    """
    names = list(names)
    _check(names)
    spec = spec.replace(num_classes=dataset.num_classes, resolution=resolution)
    out: dict[str, ProxyResult] = {}
    batch = None
    for name in names:
        t0 = time.perf_counter()
        if name in ANALYTIC:
            value = ANALYTIC[name](spec, resolution)
        else:
            if batch is None:
                t_b = time.perf_counter()
                batch = dataset.batch("train", batch_size=batch_size, resolution=resolution,
                                      channels=spec.in_channels, seed=seed)
                t0 += time.perf_counter() - t_b
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                from .build import build_model
                model = build_model(spec)
                value = float(PROXIES[name](model, *batch))
        out[name] = ProxyResult(name, value, time.perf_counter() - t0)
    return out


def score_proxy(name: str, spec: Spec, dataset, *, resolution: int = 32, batch_size: int = 64, seed: int = 0) -> float:
    """One proxy's score for ``spec`` (higher = predicted better)."""
    return score_proxies([name], spec, dataset, resolution=resolution, batch_size=batch_size, seed=seed)[name].value
