"""Training synthetic generators to reconstruct real crops (many at once), and passing images through them.

**Residual and stopping criterion.** The paper trains each synthetic model down to a minimum reconstruction
residual η = 0.005. Here the *residual* of a model is its **mean squared reconstruction error with pixels in
[-1, 1]** (the models' input and output range), averaged over pixels and channels, measured in **eval mode**
(BatchNorm running statistics: how the model's images are made) on a fixed set of **held-out crops**
(``val_crops``: pool photos never used for training, at the training crop size). It is checked every
``check_every`` steps; a model whose residual is ≤ η stops there (``reached_criterion``), the others stop at
``max_steps``. Without ``val_crops`` the mean train-mode loss since the previous check is used instead.
The optimised loss is the same MSE on the training batches.

Why MSE on [-1, 1]: the reference down-block average-pools *before* its first convolution, so a model can at best
rebuild detail from a 2×-pooled image. On pool crops, bicubic upsampling of the 2×-pooled image has a mean
absolute error of 0.013 on the [0, 1] scale (0.022 for 4×), so reading η as a mean absolute error on [0, 1]
(1.3 grey levels) would make it unreachable by every architecture; as an MSE on [-1, 1] (RMSE ≈ 9 grey levels)
the 2×-pool floor is 0.003 and the 4× floor 0.007, so good 1-block models reach it and 2-block ones approach it.

**Speed.** Convolutions are local, so models train on small crops (32² by default). G seeds of one architecture
train as one grouped network (:mod:`modelprint.synthesis.grouped`), each drawing its own batches from its own
generator; a model that meets the criterion is taken out of the group (its weights and Adam state are sliced
away), so the others' updates are unchanged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from modelprint.synthesis.grouped import State, build_grouped, init_state, load_single, select_groups, unpack_state
from modelprint.synthesis.model import SyntheticGenerator
from modelprint.synthesis.space import Architecture, model_seed

from modelprint.synthesis.defaults import (  # noqa: F401  (re-exported)
    DEFAULT_BATCH,
    DEFAULT_CHECK_EVERY,
    DEFAULT_CROP,
    DEFAULT_LR,
    DEFAULT_STEPS,
    RESIDUAL_CRITERION,
)


@dataclass
class TrainStats:
    """What training one synthetic model did. Residuals are MSE on [-1, 1] (see the module docstring)."""

    arch: str
    seed: int
    steps: int
    final_loss: float  # residual at the stop: eval mode on val_crops (train-mode window mean without them)
    seconds: float  # wall time of its group, shared out in proportion to steps
    reached_criterion: bool
    train_loss: float = float("nan")  # mean train-mode loss over the last check window
    group_size: int = 1
    crop: int = 0


def to_tensor(crops: np.ndarray, dtype: torch.dtype = torch.float32, channels_last: bool = True) -> torch.Tensor:
    """uint8 (n, H, W, 3) → (n, 3, H, W) in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).to(dtype).div(127.5).sub(1.0)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def _gather(data: torch.Tensor, idx: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """data (N, 3, h, w), idx (G, B) → (B, 3G, h, w): model g's batch in channels 3g…3g+2."""
    g, b = idx.shape
    x = data[idx.reshape(-1)].reshape(g, b, *data.shape[1:]).transpose(0, 1)
    return _layout(x.reshape(b, g * data.shape[1], *data.shape[2:]), channels_last)


def per_model_residual(y: torch.Tensor, x: torch.Tensor, groups: int, metric: str = "mse") -> torch.Tensor:
    """(G,) per-model residual of a grouped output: ``mse`` on [-1, 1] or ``mae01`` (mean |y − x| on [0, 1])."""
    d = (y - x).reshape(x.shape[0], groups, -1)
    if metric == "mse":
        return d.pow(2).mean(dim=(0, 2))
    if metric == "mae01":
        return d.abs().mean(dim=(0, 2)) * 0.5
    raise ValueError(f"metric must be 'mse' or 'mae01', got {metric!r}")


@torch.no_grad()
def _eval_residual(model: SyntheticGenerator, val: torch.Tensor, channels_last: bool, metric: str = "mse",
                   batch_size: int = 64) -> list[float]:
    g = model.groups
    was_training = model.training
    model.eval()
    totals = torch.zeros(g, dtype=torch.float64)
    for i in range(0, len(val), batch_size):
        xg = _layout(val[i : i + batch_size].repeat(1, g, 1, 1), channels_last)
        totals += per_model_residual(model(xg), xg, g, metric).double() * len(xg)
    model.train(was_training)
    return (totals / len(val)).tolist()


def evaluate_states(arch: Architecture, states: Sequence[State], crops: np.ndarray, *, metric: str = "mse",
                    dtype: torch.dtype = torch.float32, channels_last: bool = True) -> list[float]:
    """Eval-mode residual of each model (``mse`` on [-1, 1] or ``mae01``) on uint8 ``crops``, all models grouped."""
    model = build_grouped(arch, states, dtype, channels_last)
    return _eval_residual(model, to_tensor(crops, dtype, channels_last=False), channels_last, metric)


def _lr_at(step: int, max_steps: int, lr: float, schedule: str) -> float:
    if schedule == "constant" or max_steps == 1:
        return lr
    return lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * (step - 1) / (max_steps - 1))))


def _make_optimizer(params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, foreach=True)


def _shrink(arch: Architecture, model: SyntheticGenerator, opt: torch.optim.Optimizer, keep: list[int], lr: float,
            dtype: torch.dtype, channels_last: bool) -> tuple[SyntheticGenerator, torch.optim.Optimizer]:
    """The group restricted to models ``keep``, with their Adam state carried over exactly."""
    groups = model.groups
    states = unpack_state(model.state_dict(), groups)
    new = build_grouped(arch, [states[i] for i in keep], dtype, channels_last).train()
    new_opt = _make_optimizer(new.parameters(), lr)
    for p_old, p_new in zip(model.parameters(), new.parameters(), strict=True):
        st = opt.state.get(p_old)
        if st:
            new_opt.state[p_new] = {k: v.clone() if k == "step" else select_groups(v, keep, groups) for k, v in st.items()}
    return new, new_opt


def train_group(
    arch: Architecture,
    seeds: Sequence[int],
    crops: np.ndarray | torch.Tensor,
    *,
    val_crops: np.ndarray | None = None,
    max_steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH,
    lr: float = DEFAULT_LR,
    criterion: float = RESIDUAL_CRITERION,
    check_every: int = DEFAULT_CHECK_EVERY,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = True,
    init_states: Sequence[State] | None = None,
    history: list[tuple[int, int, float]] | None = None,
    schedule: str = "cosine",
) -> tuple[list[State], list[TrainStats]]:
    """Train models ``(arch, s)`` for every ``s`` in ``seeds`` together as one grouped network.

    ``crops`` are uint8 ``(N, h, w, 3)`` training crops (or a float ``(N, 3, h, w)`` tensor in [-1, 1]); each model
    draws its own batches of ``batch_size`` from them with a generator seeded by :func:`model_seed`, and starts from
    :func:`~modelprint.synthesis.grouped.init_state` (or ``init_states``). ``val_crops`` (uint8, held out) define
    the residual checked against ``criterion`` every ``check_every`` steps. Returns each model's final
    single-model state dict and :class:`TrainStats`. ``schedule="cosine"`` decays the learning rate from ``lr`` to
    ``lr/10`` over ``max_steps`` (``"constant"`` keeps it). If ``history`` is a list, ``(step, model index, residual)``
    is appended at every check.
    """
    seeds = [int(s) for s in seeds]
    n = len(seeds)
    if n == 0:
        return [], []
    if max_steps < 1 or check_every < 1:
        raise ValueError("max_steps and check_every must be >= 1")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    data = crops if isinstance(crops, torch.Tensor) else to_tensor(crops, dtype, channels_last=False)
    data = data.to(dtype)
    val = None if val_crops is None else to_tensor(val_crops, dtype, channels_last=False)
    start = time.perf_counter()
    inits = list(init_states) if init_states is not None else [init_state(arch, s) for s in seeds]
    gens = [torch.Generator().manual_seed(model_seed(arch, s) + 1) for s in seeds]
    model = build_grouped(arch, inits, dtype, channels_last).train()
    opt = _make_optimizer(model.parameters(), lr)
    active = list(range(n))  # model indices still in the group, in group order
    final: dict[int, State] = {}
    steps, reached = [0] * n, [False] * n
    residual, train_loss = [float("nan")] * n, [float("nan")] * n
    window = torch.zeros(n, dtype=torch.float64)
    window_len = 0
    for step in range(1, max_steps + 1):
        idx = torch.stack([torch.randint(0, len(data), (batch_size,), generator=gens[i]) for i in active])
        x = _gather(data, idx, channels_last)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, max_steps, lr, schedule)
        loss = per_model_residual(model(x), x, len(active))
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # Σ_g loss_g: each model gets exactly its own gradient
        opt.step()
        window[: len(active)] += loss.detach().double()
        window_len += 1
        if step % check_every and step != max_steps:
            continue
        means = (window[: len(active)] / window_len).tolist()
        window.zero_()
        window_len = 0
        checks = _eval_residual(model, val, channels_last) if val is not None else means
        for j, i in enumerate(active):
            residual[i], train_loss[i] = checks[j], means[j]
            if history is not None:
                history.append((step, i, checks[j]))
        done = [j for j in range(len(active)) if checks[j] <= criterion or step == max_steps]
        if not done:
            continue
        states = unpack_state(model.state_dict(), len(active))
        for j in done:
            i = active[j]
            final[i], steps[i], reached[i] = states[j], step, checks[j] <= criterion
        keep = [j for j in range(len(active)) if j not in done]
        if not keep:
            break
        model, opt = _shrink(arch, model, opt, keep, lr, dtype, channels_last)
        active = [active[j] for j in keep]
    seconds = time.perf_counter() - start
    total_steps = sum(steps)
    crop = int(data.shape[-1])
    stats = [
        TrainStats(arch.id, seeds[i], steps[i], float(residual[i]), seconds * steps[i] / total_steps, reached[i],
                   float(train_loss[i]), n, crop)
        for i in range(n)
    ]
    return [final[i] for i in range(n)], stats


def train_generator(
    arch: Architecture,
    crops: np.ndarray,
    *,
    seed: int = 0,
    max_steps: int = 300,
    batch_size: int = DEFAULT_BATCH,
    lr: float = DEFAULT_LR,
    criterion: float = RESIDUAL_CRITERION,
    val_crops: np.ndarray | None = None,
) -> tuple[SyntheticGenerator, TrainStats]:
    """Train one model ``(arch, seed)`` on uint8 crops until the criterion or ``max_steps``; returns it in eval mode."""
    states, stats = train_group(arch, [seed], crops, val_crops=val_crops, max_steps=max_steps,
                                batch_size=batch_size, lr=lr, criterion=criterion)
    return load_single(arch, states[0]), stats[0]


@torch.inference_mode()
def apply_generator(model: SyntheticGenerator, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Pass uint8 images (n, H, W, 3) through ``model``; returns uint8 images (8-bit quantised, like a saved PNG).

    Sides must be multiples of ``2**blocks``.
    """
    model.eval()
    out = np.empty_like(images)
    for i in range(0, len(images), batch_size):
        y = model(to_tensor(images[i : i + batch_size]))
        y = y.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
        out[i : i + batch_size] = y.permute(0, 2, 3, 1).numpy()
    return out
