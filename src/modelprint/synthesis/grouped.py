"""G models of one architecture as one grouped network: packing, unpacking and deterministic initialisation.

Every parameter and buffer of a :class:`~modelprint.synthesis.model.SyntheticGenerator` built with ``groups=G`` is
the concatenation along dim 0 of the G single models' tensors (conv weights ``(G·Cout, Cin, k, k)``, transposed
conv weights ``(G·Cin, Cout, k, k)``, biases, norm affine parameters and BatchNorm running statistics ``(G·C,)``);
only BatchNorm's scalar ``num_batches_tracked`` is shared. So packing is ``torch.cat`` and unpacking is ``chunk``,
and a grouped forward/backward is G independent forward/backwards: grouping is a pure speed-up
(``tests/test_synthesis.py`` checks a grouped model's slice against the same model trained alone).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from modelprint.synthesis.model import SyntheticGenerator
from modelprint.synthesis.space import Architecture, model_seed

State = dict[str, torch.Tensor]


def pack_states(states: Sequence[State]) -> State:
    """Concatenate the state dicts of G single models into the state dict of one ``groups=G`` model."""
    out: State = {}
    for key, first in states[0].items():
        out[key] = first.clone() if first.ndim == 0 else torch.cat([s[key] for s in states], dim=0)
    return out


def unpack_state(state: State, groups: int) -> list[State]:
    """Split the state dict of a ``groups=G`` model into G single-model state dicts (contiguous copies)."""
    out: list[State] = [{} for _ in range(groups)]
    for key, value in state.items():
        parts = [value] * groups if value.ndim == 0 else value.chunk(groups, dim=0)
        for g in range(groups):
            out[g][key] = parts[g].detach().clone().contiguous()
    return out


def select_groups(tensor: torch.Tensor, keep: Sequence[int], groups: int) -> torch.Tensor:
    """The dim-0 blocks ``keep`` of a tensor packed from ``groups`` models (scalars are returned as they are)."""
    if tensor.ndim == 0:
        return tensor.clone()
    blocks = tensor.reshape(groups, tensor.shape[0] // groups, *tensor.shape[1:])
    return blocks[list(keep)].reshape(len(keep) * (tensor.shape[0] // groups), *tensor.shape[1:]).contiguous()


def init_state(arch: Architecture, seed: int) -> State:
    """The initial weights of model ``(arch, seed)``: PyTorch's default init under :func:`model_seed`.

    Does not disturb the global torch RNG.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_seed(arch, seed))
        model = SyntheticGenerator(arch)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def build_grouped(arch: Architecture, states: Sequence[State], dtype: torch.dtype = torch.float32,
                  channels_last: bool = True) -> SyntheticGenerator:
    """A ``groups=len(states)`` network holding the given single-model states."""
    model = SyntheticGenerator(arch, groups=len(states)).to(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.load_state_dict(pack_states(states))
    return model


def load_single(arch: Architecture, state: State) -> SyntheticGenerator:
    """A single model (``groups=1``) holding ``state``, in eval mode."""
    model = SyntheticGenerator(arch)
    model.load_state_dict(state)
    return model.eval()
