"""Lineage children of a trained diffusion model: full fine-tuning (``ddpm-finetune``) and LoRA (``ddpm-lora``).

Both start from a copy of the parent's UNet and train on the child recipe's data (usually a subset the parent never
saw), keeping the parent's noise schedule. Both save a complete diffusers folder, so a child loads and samples like
any other diffusion model; the LoRA child also saves its adapter alone in ``lora/``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelprint.artefacts import one_line, read_tensors, write_tensors
from modelprint.atomic import write_text
from modelprint.errors import CheckpointError
from modelprint.zoo.base import FAMILIES, Recipe, TrainProgress, ZooModel
from modelprint.zoo.diffusion_model import DiffusionModel
from modelprint.zoo.families.diffusion import DiffusionFamily, check_same_model, merged_params

#: Modules of a ``UNet2DModel`` a LoRA adapts by default (those present): resnet convolutions, attention projections.
LORA_TARGETS = ("conv1", "conv2", "to_q", "to_k", "to_v", "to_out.0")


def _child_of(recipe: Recipe, parent: ZooModel | None) -> DiffusionFamily:
    if not isinstance(parent, DiffusionFamily):
        got = type(parent).__name__
        raise ValueError(f"{recipe.name}: a {recipe.family} needs a trained diffusion parent, got {got}")
    return parent


def _matches(name: str, target: str) -> bool:
    """peft's rule for a string in ``target_modules``: the module name equals it or ends with ``.target``."""
    return name == target or name.endswith("." + target)


@FAMILIES.register("ddpm-finetune")
class FineTuned(DiffusionFamily):
    """All UNet weights of the parent, trained further on the recipe's data; param ``sample_steps`` (parent's)."""

    def __init__(self, recipe: Recipe, parent: ZooModel | None = None) -> None:
        source = _child_of(recipe, parent)
        super().__init__(recipe, parent)
        self.sample_steps = int(merged_params(recipe, {"sample_steps": source.sample_steps})["sample_steps"])
        self.diffusion = copy.deepcopy(source.diffusion)

    def fit(self, images: np.ndarray, progress: TrainProgress | None = None) -> FineTuned:
        model = self.diffusion
        self._train_unet(model, model.to_model_space(images), list(model.unet.parameters()), progress)
        return self


@FAMILIES.register("ddpm-lora")
class LoRA(DiffusionFamily):
    """A LoRA adapter on a copy of the parent's UNet; only the adapter trains.

    ``UNet2DModel`` lacks diffusers' ``add_adapter`` (it is not a ``PeftAdapterMixin``), so the adapter is injected
    with ``peft.inject_adapter_in_model``, which is what ``add_adapter`` calls, and fused with peft's ``merge``.

    Params: ``rank`` (4), ``alpha`` (``lora_alpha``, default = rank, i.e. scale 1), ``targets`` (module names, default
    the :data:`LORA_TARGETS` present in the parent), ``sample_steps`` (parent's). ``lora_unet`` is the parent's UNet
    with the adapter injected (base weights frozen and equal to the parent's); ``diffusion.unet`` is the fused UNet
    that samples. On a widths [32, 64, 64] parent, rank 4 trains 59 k of 1.05 M parameters (conv1/conv2; 67 k of
    1.11 M with attention projections), see :meth:`num_adapter_parameters`.
    """

    def __init__(self, recipe: Recipe, parent: ZooModel | None = None) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        source = _child_of(recipe, parent)
        super().__init__(recipe, parent)
        defaults = {"rank": 4, "alpha": None, "targets": None, "sample_steps": source.sample_steps}
        params = merged_params(recipe, defaults)
        self.sample_steps = int(params["sample_steps"])
        names = [name for name, _ in source.diffusion.unet.named_modules()]
        if params["targets"] is None:
            targets = [t for t in LORA_TARGETS if any(_matches(n, t) for n in names)]
        else:
            targets = list(params["targets"])
            missing = [t for t in targets if not any(_matches(n, t) for n in names)]
            if missing:
                raise ValueError(f"{recipe.name}: LoRA targets {missing} match no module of the parent UNet")
        rank = int(params["rank"])
        self.lora_config = LoraConfig(r=rank, lora_alpha=params["alpha"] or rank, target_modules=targets)
        torch.manual_seed(recipe.seed)
        self.lora_unet = inject_adapter_in_model(self.lora_config, copy.deepcopy(source.diffusion.unet))
        self.diffusion = dataclasses.replace(source.diffusion, unet=self._fused())

    def num_adapter_parameters(self) -> int:
        """Number of trained (adapter) parameters."""
        return sum(p.numel() for p in self.lora_unet.parameters() if p.requires_grad)

    def _fused(self) -> Any:
        """A plain ``UNet2DModel`` with the adapter merged into the base weights."""
        from diffusers.utils import recurse_remove_peft_layers
        from peft.tuners.tuners_utils import BaseTunerLayer

        fused = copy.deepcopy(self.lora_unet)
        for module in fused.modules():
            if isinstance(module, BaseTunerLayer):
                module.merge()
        recurse_remove_peft_layers(fused)
        del fused.peft_config
        return fused.eval()

    def fit(self, images: np.ndarray, progress: TrainProgress | None = None) -> LoRA:
        training = dataclasses.replace(self.diffusion, unet=self.lora_unet)
        adapter = [p for p in self.lora_unet.parameters() if p.requires_grad]
        self._train_unet(training, training.to_model_space(images), adapter, progress)
        self.diffusion = dataclasses.replace(self.diffusion, unet=self._fused())
        return self

    def save(self, folder: Path) -> None:
        """The fused diffusers folder plus ``lora/adapter.safetensors`` and ``lora/adapter_config.json``."""
        from peft import get_peft_model_state_dict

        super().save(folder)
        lora = Path(folder) / "lora"
        self.lora_config.save_pretrained(lora)
        # peft keeps target_modules as a set, whose order varies between processes: rewritten sorted, so the file
        # (and its sha256) is the same wherever the model was trained
        config = json.loads((lora / "adapter_config.json").read_text(encoding="utf-8"))
        config["target_modules"] = sorted(config["target_modules"])
        write_text(lora / "adapter_config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        write_tensors(lora / "adapter.safetensors",
                      {k: v.contiguous() for k, v in get_peft_model_state_dict(self.lora_unet).items()})

    @classmethod
    def load(cls, folder: Path, recipe: Recipe, parent: ZooModel | None = None) -> LoRA:
        """Rebuild the adapter on the parent and check that, fused, it reproduces the saved UNet."""
        from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict

        folder = Path(folder)
        model = cls(recipe, parent)
        saved = DiffusionModel.from_folder(folder)
        check_same_model(folder, saved, model.diffusion)
        lora = folder / "lora"
        if not (lora / "adapter_config.json").is_file() or not (lora / "adapter.safetensors").is_file():
            raise CheckpointError(f"{folder}: lora/ lacks adapter_config.json or adapter.safetensors")
        try:
            config = LoraConfig.from_pretrained(lora)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{folder}: cannot read the LoRA adapter in lora/: {one_line(err)}") from None
        weights, _ = read_tensors(lora / "adapter.safetensors")
        for key in ("r", "lora_alpha", "target_modules"):
            got, want = getattr(config, key), getattr(model.lora_config, key)
            if got != want:
                raise CheckpointError(f"{folder}: saved LoRA has {key}={got!r} but the recipe gives {want!r}")
        if set(weights) != set(get_peft_model_state_dict(model.lora_unet)):
            raise CheckpointError(f"{folder}: lora/adapter.safetensors does not fit the parent's UNet")
        set_peft_model_state_dict(model.lora_unet, weights)
        fused = model._fused().state_dict()
        if any(not torch.allclose(v, fused[k], atol=1e-5, rtol=1e-4) for k, v in saved.unet.state_dict().items()):
            raise CheckpointError(f"{folder}: unet/ is not the parent's UNet with lora/ fused in (wrong parent?)")
        model.diffusion = saved
        return model
