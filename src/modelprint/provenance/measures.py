"""Per-image measurements of one denoiser along the diffusion trajectory: the raw material of trajectory features
and of the membership baselines.

Everything works on model-space images ``z0`` ``(n, C, h, w)`` (``DiffusionCandidate.to_model_space``), in chunks of
``batch_size`` forward images, counted by a :class:`~modelprint.provenance.base.CallMeter`; every noise is a
fixed input (common random numbers), so the same inputs give the same numbers. With ``ᾱ`` the denoiser's
``alphas_cumprod`` and ``ε̂`` its noise prediction:

- :func:`proximal_errors` (PIA / PIAN): ``ε₀ = ε̂(x₀, 0)`` (PIAN: standardised per image to Gaussian scale),
  ``x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε₀``, error ``mean (ε̂(x_t, t) − ε₀)⁴``. ``1 + T`` calls.
- :func:`clean_norms` (SimA): ``mean ε̂(x₀, t)⁴`` on the clean image. ``T`` calls.
- :func:`t_errors` (SecMI): a deterministic DDIM inversion of ``x₀`` along ``chain``; at each of ``points`` one
  DDIM step up by ``k`` and one back, error ``mean (x_s − x̂_s)²``. ``len(chain) + 2·len(points)`` calls.
- :func:`gradient_norms` (gradient features, GSA): the L2 norm of the gradient of the denoising loss
  ``mean (ε̂(x_t, t) − ε)²`` with respect to the network input ``x_t`` and, per parameter group, with respect to
  the network's parameters. One forward and one backward image per image and timestep (``per_timestep``), or one
  backward of the loss averaged over all timesteps (GSA1).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from typing import Literal

import torch

from modelprint.errors import ProbeError
from modelprint.probes.candidates import DiffusionCandidate
from modelprint.provenance.base import CallMeter

__all__ = ["GROUPINGS", "clean_norms", "ddim_move", "gradient_norms", "parameter_groups", "proximal_errors",
           "t_errors"]

#: How parameter gradients are pooled: one norm per parameter tensor (GSA), or per top-level block of the network.
GROUPINGS = ("tensor", "block")


def _chunks(n: int, size: int) -> Iterator[slice]:
    if int(size) < 1:
        raise ProbeError(f"batch_size must be >= 1, got {size}")
    for start in range(0, n, int(size)):
        yield slice(start, min(start + int(size), n))


def _alpha(denoiser: DiffusionCandidate, t: int) -> float:
    return float(denoiser.alphas_cumprod[int(t)])


def _mean_power(x: torch.Tensor, p: int) -> torch.Tensor:
    return x.double().pow(p).flatten(1).mean(1)


def proximal_errors(denoiser: DiffusionCandidate, z0: torch.Tensor, timesteps: Sequence[int], meter: CallMeter,
                    normalise: bool = False, batch_size: int = 64) -> torch.Tensor:
    """PIA (``normalise``: PIAN) proximal-initialisation errors, float64 ``(n, T)``."""
    out = torch.zeros(len(z0), len(timesteps), dtype=torch.float64)
    for rows in _chunks(len(z0), batch_size):
        x0 = z0[rows]
        eps0 = meter.eps(denoiser, x0, 0)
        if normalise:
            flat = eps0.flatten(1)
            eps0 = ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-12)).view_as(eps0)
        for j, t in enumerate(timesteps):
            a = _alpha(denoiser, t)
            x_t = math.sqrt(a) * x0 + math.sqrt(1.0 - a) * eps0
            out[rows, j] = _mean_power(meter.eps(denoiser, x_t, t) - eps0, 4)
    return out


def clean_norms(denoiser: DiffusionCandidate, z0: torch.Tensor, timesteps: Sequence[int], meter: CallMeter,
                batch_size: int = 64) -> torch.Tensor:
    """SimA: ``mean ε̂(x₀, t)⁴`` of the clean image at each timestep, float64 ``(n, T)``."""
    out = torch.zeros(len(z0), len(timesteps), dtype=torch.float64)
    for rows in _chunks(len(z0), batch_size):
        for j, t in enumerate(timesteps):
            out[rows, j] = _mean_power(meter.eps(denoiser, z0[rows], t), 4)
    return out


def ddim_move(denoiser: DiffusionCandidate, x: torch.Tensor, s: int, s_next: int, meter: CallMeter) -> torch.Tensor:
    """One deterministic DDIM step from timestep ``s`` to ``s_next`` (up: inversion; down: denoising)."""
    eps = meter.eps(denoiser, x, s)
    a, a_next = _alpha(denoiser, s), _alpha(denoiser, s_next)
    x0 = (x - math.sqrt(1.0 - a) * eps) / math.sqrt(a)
    return math.sqrt(a_next) * x0 + math.sqrt(1.0 - a_next) * eps


def t_errors(denoiser: DiffusionCandidate, z0: torch.Tensor, chain: Sequence[int], points: Sequence[int], k: int,
             meter: CallMeter, batch_size: int = 64) -> torch.Tensor:
    """SecMI t-errors ``(n, len(points))``: ``x₀`` (taken as ``x`` at timestep 0) is inverted by deterministic DDIM
    through the increasing timesteps ``chain``; at each point ``s`` (0 or a chain timestep) ``x_s`` goes one step up
    to ``s + k`` and back, and the error is ``mean (x_s − x̂_s)²``."""
    steps = sorted({int(c) for c in chain} - {0})
    visits = [0, *steps]
    if int(k) < 1 or any(int(p) not in visits or int(p) + int(k) >= denoiser.num_timesteps for p in points):
        raise ProbeError(f"candidate {denoiser.name!r}: t-error points {list(points)} must lie on the inversion "
                         f"chain and below {denoiser.num_timesteps - int(k)} (k = {k})")
    col = {int(p): j for j, p in enumerate(points)}
    out = torch.zeros(len(z0), len(points), dtype=torch.float64)
    for rows in _chunks(len(z0), batch_size):
        x = z0[rows]
        for i, s in enumerate(visits):
            if i:
                x = ddim_move(denoiser, x, visits[i - 1], s, meter)
            if s in col:
                back = ddim_move(denoiser, ddim_move(denoiser, x, s, s + int(k), meter), s + int(k), s, meter)
                out[rows, col[s]] = _mean_power(x - back, 2)
    return out


def parameter_groups(names: Sequence[str], grouping: Literal["tensor", "block"]) -> list[str]:
    """The group of each parameter: itself (``tensor``) or its top-level block (``block``: the name up to its first
    index, e.g. ``down_blocks.0``, or its first component, e.g. ``conv_in``)."""
    if grouping not in GROUPINGS:
        raise ProbeError(f"unknown parameter grouping {grouping!r}; known: {', '.join(GROUPINGS)}")
    if grouping == "tensor":
        return list(names)
    out = []
    for name in names:
        match = re.match(r"^(.*?\.\d+)(\.|$)", name)
        out.append(match.group(1) if match else name.split(".")[0])
    return out


@contextlib.contextmanager
def _trainable(params: Sequence[torch.nn.Parameter]) -> Iterator[None]:
    """Every parameter requires grad inside the block (frozen ones too), and is restored afterwards."""
    before = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


def gradient_norms(denoiser: DiffusionCandidate, z0: torch.Tensor, timesteps: Sequence[int], noise: torch.Tensor,
                   meter: CallMeter, grouping: Literal["tensor", "block"] | None = "block",
                   mode: Literal["per_timestep", "mean_loss"] = "per_timestep", batch_size: int = 64
                   ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Gradient norms of the denoising loss with noise ``noise`` ``(C, h, w)``.

    Returns ``(input_norms (n, T), param_norms (n, T', G), group_names)``: ``‖∂L/∂x_t‖`` per timestep and the L2
    norm of ``∂L/∂θ`` over each parameter group. ``mode="per_timestep"``: one backward per image and timestep
    (``T' = T``); ``"mean_loss"`` (GSA1): one backward per image of the loss averaged over the timesteps
    (``T' = 1``, no input norms: an empty ``(n, 0)``). Without ``grouping`` only input norms are computed, batched.
    """
    if mode == "mean_loss" and grouping is None:
        raise ProbeError("gradient norms: mode 'mean_loss' needs a parameter grouping")
    n, steps = len(z0), [int(t) for t in timesteps]
    a = torch.tensor([_alpha(denoiser, t) for t in steps], dtype=torch.float32).view(-1, 1, 1, 1)
    named = denoiser.named_parameters() if grouping is not None else []
    if grouping is not None and not named:
        raise ProbeError(f"candidate {denoiser.name!r}: has no parameters to take gradients of (its eps_fn is "
                         "not a torch Module); leave out parameter-gradient features")
    groups = parameter_groups([name for name, _ in named], grouping) if named else []
    group_names = list(dict.fromkeys(groups))
    index = torch.tensor([group_names.index(g) for g in groups], dtype=torch.long)
    params = [p for _, p in named]
    inputs = torch.zeros(n, len(steps) if mode == "per_timestep" else 0, dtype=torch.float64)
    per_t = len(steps) if mode == "per_timestep" else 1
    norms = torch.zeros(n, per_t, len(group_names), dtype=torch.float64)

    def loss_of(x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        return (meter.eps(denoiser, x_t, t, grad=True) - noise).square().flatten(1).mean(1)

    if not params:  # input gradients only: batched, samples are independent in eval mode
        for rows in _chunks(n, batch_size):
            for j, t in enumerate(steps):
                x_t = (a[j].sqrt() * z0[rows] + (1 - a[j]).sqrt() * noise).requires_grad_(True)
                (grad,) = torch.autograd.grad(loss_of(x_t, t).sum(), x_t)
                inputs[rows, j] = grad.double().flatten(1).norm(dim=1)
                meter.backward += len(x_t)
        return inputs, norms, group_names
    with _trainable(params):
        for i in range(n):
            if mode == "mean_loss":
                x_t = a.sqrt() * z0[i : i + 1] + (1 - a).sqrt() * noise
                grads = torch.autograd.grad(loss_of(x_t, torch.tensor(steps)).mean(), params, allow_unused=True)
                norms[i, 0] = _grouped(grads, index, len(group_names))
                meter.backward += 1
                continue
            for j, t in enumerate(steps):
                x_t = (a[j].sqrt() * z0[i : i + 1] + (1 - a[j]).sqrt() * noise).requires_grad_(True)
                grad_x, *grads = torch.autograd.grad(loss_of(x_t, t).sum(), [x_t, *params], allow_unused=True)
                inputs[i, j] = grad_x.double().norm()
                norms[i, j] = _grouped(grads, index, len(group_names))
                meter.backward += 1
    return inputs, norms, group_names


def _grouped(grads: Sequence[torch.Tensor | None], index: torch.Tensor, n_groups: int) -> torch.Tensor:
    sq = torch.stack([g.double().square().sum() if g is not None else torch.zeros((), dtype=torch.float64)
                      for g in grads])
    return torch.zeros(n_groups, dtype=torch.float64).index_add_(0, index, sq).sqrt()
