"""The zoo's recipes, in two tiers.

- ``tiny``: one small model of every family plus both lineage children, trained for a few dozen steps, and a DDPM
  trained many epochs on 32 member crops (``tiny-ddpm-members``). It builds in well under the 10-minute budget and
  is what the tests use: the samples are real outputs of trained networks, just poor ones.
- ``standard``: the benchmark zoo at 32², with the variety the zero-shot and white-box benchmarks need: GANs that
  differ only in upsampling or loss, a vanilla and a β-VAE, a Glow flow, pixel DDPMs that differ in seed, width,
  training data and training length, two latent diffusion models sharing one autoencoder, and two lineage children
  of a DDPM (fine-tuned on other photos, and a LoRA adapter).

Member-split recipes (``holdout`` set: ``tiny-ddpm-members``, ``ddpm-members``, ``ddpm-faces``) train on a known
member set and name images of the same distribution they never see; the manifest records both splits (data spec,
count, sha256) for membership and provenance tests.

Recipe names are stable identifiers: manifests, benchmarks and galleries refer to them.
"""

from __future__ import annotations

from modelprint.errors import ModelprintError
from modelprint.zoo.base import DataSpec, Recipe

TIERS = ("tiny", "standard")
_SAMPLES = {"tiny": 16, "standard": 160}

_T = DataSpec(subset="photos", n=256, size=32, seed=0)
_TINY_DDPM = {"widths": [8, 16], "layers_per_block": 1, "attention": False, "schedule": "linear", "sample_steps": 10}
_TINY: tuple[Recipe, ...] = (
    Recipe("tiny-gan", "gan", {"upsample": "transposed", "loss": "ns", "z_dim": 16, "width": 8, "d_width": 8},
           _T, seed=0, steps=60, batch_size=32),
    Recipe("tiny-vae", "vae", {"beta": 1.0, "latent": 16, "width": 8}, _T, seed=0, steps=60, batch_size=32, lr=1e-3),
    Recipe("tiny-flow", "flow", {"levels": 2, "depth": 1, "hidden": 16, "temperature": 0.7}, _T, seed=0, steps=40,
           batch_size=32, lr=1e-3),
    Recipe("tiny-ddpm", "ddpm", _TINY_DDPM, _T, seed=0, steps=60, batch_size=16, lr=1e-3),
    Recipe("tiny-autoencoder", "autoencoder", {"widths": [8, 16], "latent_channels": 4, "kl_weight": 1e-6}, _T,
           seed=0, steps=60, batch_size=16, lr=1e-3),
    Recipe("tiny-ldm", "ldm", _TINY_DDPM, _T, seed=0, steps=60, batch_size=16, lr=1e-3, parent="tiny-autoencoder"),
    Recipe("tiny-ddpm-finetune", "ddpm-finetune", {}, DataSpec("photos-b", 256, 32, 1), seed=1, steps=30,
           batch_size=16, lr=1e-3, parent="tiny-ddpm"),
    Recipe("tiny-ddpm-lora", "ddpm-lora", {"rank": 4}, DataSpec("photos-b", 256, 32, 1), seed=2, steps=30,
           batch_size=16, lr=1e-3, parent="tiny-ddpm"),
    Recipe("tiny-ddpm-members", "ddpm", _TINY_DDPM, DataSpec("photos-a", 32, 32, 0), seed=0, steps=300,
           batch_size=16, lr=3e-3, holdout=DataSpec("photos-b", 32, 32, 0),
           note="150 epochs over 32 member crops: members and held-out crops differ in loss"),
)

_P = DataSpec(subset="photos", n=8192, size=32, seed=0)
_DDPM = {"widths": [32, 64, 64], "layers_per_block": 1, "attention": True, "schedule": "linear", "sample_steps": 50}
_LDM = {"widths": [32, 64, 64], "layers_per_block": 1, "attention": False, "schedule": "linear", "sample_steps": 50}
_STANDARD: tuple[Recipe, ...] = (
    Recipe("gan-transposed-ns", "gan", {"upsample": "transposed", "loss": "ns"}, _P, seed=0, steps=1500, batch_size=64),
    Recipe("gan-nearest-ns", "gan", {"upsample": "nearest", "loss": "ns"}, _P, seed=0, steps=1500, batch_size=64),
    Recipe("gan-bilinear-ns", "gan", {"upsample": "bilinear", "loss": "ns"}, _P, seed=0, steps=1500, batch_size=64),
    Recipe("gan-transposed-hinge", "gan", {"upsample": "transposed", "loss": "hinge"}, _P, seed=0, steps=1500,
           batch_size=64),
    Recipe("vae", "vae", {"beta": 1.0}, _P, seed=0, steps=2000, batch_size=64, lr=1e-3),
    Recipe("beta-vae", "vae", {"beta": 4.0}, _P, seed=0, steps=2000, batch_size=64, lr=1e-3),
    Recipe("glow", "flow", {"levels": 2, "depth": 4, "hidden": 64, "temperature": 0.7}, _P, seed=0, steps=1500,
           batch_size=32, lr=1e-3),
    Recipe("ddpm", "ddpm", _DDPM, _P, seed=0, steps=1500, batch_size=16, lr=1e-3),
    Recipe("ddpm-seed1", "ddpm", _DDPM, _P, seed=1, steps=1500, batch_size=16, lr=1e-3,
           note="same as ddpm but the seed"),
    Recipe("ddpm-short", "ddpm", _DDPM, _P, seed=2, steps=500, batch_size=16, lr=1e-3, note="a third of the training"),
    Recipe("ddpm-narrow", "ddpm", {**_DDPM, "widths": [16, 32, 32]}, _P, seed=0, steps=1500, batch_size=16, lr=1e-3,
           note="half the width"),
    Recipe("ddpm-faces", "ddpm", _DDPM, DataSpec("faces", 100, 32, 0), seed=0, steps=1000, batch_size=16, lr=1e-3,
           holdout=DataSpec("faces-holdout", 100, 32, 0),
           note="trained on the 100 LFW member faces (membership tests use the 100 held-out faces)"),
    Recipe("ddpm-members", "ddpm", _DDPM, DataSpec("photos-a", 256, 32, 0), seed=5, steps=6000, batch_size=16,
           lr=1e-3, holdout=DataSpec("photos-b", 256, 32, 0),
           note="375 epochs over 256 member crops of one half of the photos; the other half is held out"),
    Recipe("ddpm-members-long", "ddpm-finetune", {}, DataSpec("photos-a", 256, 32, 0), seed=6, steps=10000,
           batch_size=16, lr=1e-3, parent="ddpm-members", holdout=DataSpec("photos-b", 512, 32, 0),
           note="ddpm-members trained 625 epochs further on its own 256 members (1000 in all); 512 held-out crops"),
    Recipe("autoencoder", "autoencoder", {"widths": [32, 64], "latent_channels": 4, "kl_weight": 1e-6}, _P, seed=0,
           steps=1000, batch_size=16, lr=1e-3, note="shared by the latent diffusion models; not a generator"),
    Recipe("ldm", "ldm", _LDM, _P, seed=0, steps=2000, batch_size=32, lr=1e-3, parent="autoencoder"),
    Recipe("ldm-cosine", "ldm", {**_LDM, "schedule": "squaredcos_cap_v2"}, _P, seed=1, steps=2000, batch_size=32,
           lr=1e-3, parent="autoencoder", note="same autoencoder, other schedule and seed"),
    Recipe("ddpm-finetune", "ddpm-finetune", {}, DataSpec("photos-b", 8192, 32, 1), seed=3, steps=600,
           batch_size=16, lr=2e-4, parent="ddpm", note="child of ddpm, trained further on other photos"),
    Recipe("ddpm-lora", "ddpm-lora", {"rank": 4}, DataSpec("photos-b", 8192, 32, 1), seed=4, steps=600,
           batch_size=16, lr=1e-3, parent="ddpm", note="LoRA adapter on ddpm, trained on other photos"),
)

def tier_recipes(tier: str) -> list[Recipe]:
    """The recipes of ``tier`` (parents before children)."""
    if tier not in TIERS:
        raise ModelprintError(f"unknown zoo tier {tier!r}; known: {', '.join(TIERS)}")
    return list(_TINY if tier == "tiny" else _STANDARD)


def tier_samples(tier: str) -> int:
    """Samples saved per model in ``tier``."""
    tier_recipes(tier)
    return _SAMPLES[tier]
