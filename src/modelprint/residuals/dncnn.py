"""modelprint's learned residual: the noise a small DnCNN predicts in an image.

Architecture (DnCNN-style residual learning, Zhang et al. 2017, narrowed for CPU throughput)::

    x ∈ [0, 1]  →  h = (x − 0.5) · 4
    conv3×3(3→w) + ReLU
    [conv3×3(w→w, no bias) + BatchNorm + ReLU] × (depth − 2)
    conv3×3(w→3, no bias)
    → predicted noise · (1/255)          (the network works on the 0–255 noise scale)

All convolutions use zero ``same`` padding, so the output has the input's size. The residual of an image is the
predicted noise itself (``image − denoised``), in [0, 1] units.

Inference: BatchNorm is folded into the preceding convolutions (eval-mode statistics), the model runs in
``channels_last`` under :func:`torch.inference_mode`, and same-size images are batched.

Tiling: an image larger than ``tile`` pixels on a side is processed as the fewest equal windows of at most
``tile`` pixels a side that overlap by at least ``2·overlap`` pixels; of each window only the part at least
``overlap`` pixels from an inner window edge is kept (borders that are image borders are kept). The network's receptive radius is ``depth`` pixels (one per 3×3
layer), so whenever ``overlap >= depth`` every kept pixel sees exactly the same input as in whole-image inference
and tiling changes the result only by float rounding (≈1e-7 of the residual's scale). Windows all have the same
size, so the windows of one image (and of same-size images) are batched, at most ``batch_pixels`` pixels at a time,
which bounds memory to roughly ``batch_pixels · width · 4 B · 3`` (≈100 MB by default) whatever the image size.

Weights: the default is modelprint's own ``weights/dncnn_s1.safetensors`` (trained from scratch on the real-image
pool at σ = 1/255, see ``weights/DNCNN_MODEL_CARD.md``), verified against the sha256 in its JSON sidecar
(:mod:`modelprint.artefacts`). A user file may be ``.safetensors`` (with an optional sidecar ``<name>.json``, or a
``config`` metadata entry) or a PyTorch ``.pt``/``.pth`` state dict (loaded with ``weights_only=True``); depth and
width are otherwise inferred from the tensor shapes. Any problem raises :class:`~modelprint.errors.CheckpointError`
naming the file and the cause.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelprint.artefacts import one_line, open_artefact, read_tensors, shipped_path
from modelprint.errors import CheckpointError
from modelprint.residuals.base import RESIDUALS, Residual, as_image

FORMAT = "modelprint-dncnn"
IN_OFFSET = 0.5
IN_SCALE = 4.0
OUT_SCALE = 1.0 / 255.0
DEFAULT_WEIGHTS_NAME = "dncnn_s1.safetensors"
DEFAULT_DEPTH = 10
DEFAULT_WIDTH = 32


def default_weights_path() -> Path:
    """The shipped DnCNN weights."""
    return shipped_path(DEFAULT_WEIGHTS_NAME)


def default_config(depth: int = DEFAULT_DEPTH, width: int = DEFAULT_WIDTH, sigma: float = 1.0) -> dict[str, Any]:
    return {
        "arch": "dncnn",
        "depth": int(depth),
        "width": int(width),
        "in_channels": 3,
        "sigma": float(sigma),
        "in_offset": IN_OFFSET,
        "in_scale": IN_SCALE,
        "out_scale": OUT_SCALE,
    }


# --------------------------------------------------------------------------------------------- torch modules
_CLASSES: dict[str, type] = {}


def dncnn_class() -> type:
    """The ``torch.nn.Module`` class of the training-time DnCNN (defined lazily so torch loads lazily)."""
    if "DnCNN" not in _CLASSES:
        from torch import nn

        class DnCNN(nn.Module):
            """DnCNN predicting the noise of an image in [0, 1] (output in [0, 1] units)."""

            def __init__(self, depth: int = DEFAULT_DEPTH, width: int = DEFAULT_WIDTH, channels: int = 3,
                         in_offset: float = IN_OFFSET, in_scale: float = IN_SCALE,
                         out_scale: float = OUT_SCALE) -> None:
                super().__init__()
                if depth < 2:
                    raise ValueError(f"DnCNN depth must be >= 2, got {depth}")
                self.depth, self.width = depth, width
                self.in_offset, self.in_scale, self.out_scale = in_offset, in_scale, out_scale
                layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
                for _ in range(depth - 2):
                    layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                               nn.ReLU(inplace=True)]
                layers.append(nn.Conv2d(width, channels, 3, padding=1, bias=False))
                self.body = nn.Sequential(*layers)

            def forward(self, x):  # noqa: ANN001
                return self.body((x - self.in_offset) * self.in_scale) * self.out_scale

        _CLASSES["DnCNN"] = DnCNN
    return _CLASSES["DnCNN"]


def build_dncnn(config: dict[str, Any]):  # noqa: ANN201
    """A (randomly initialised) training-time DnCNN for ``config``."""
    return dncnn_class()(
        depth=int(config["depth"]),
        width=int(config["width"]),
        channels=int(config.get("in_channels", 3)),
        in_offset=float(config.get("in_offset", IN_OFFSET)),
        in_scale=float(config.get("in_scale", IN_SCALE)),
        out_scale=float(config.get("out_scale", OUT_SCALE)),
    )


def saved_state_dict(model) -> dict:  # noqa: ANN001
    """The tensors that define a DnCNN (BatchNorm's step counter dropped), contiguous float32 on CPU."""
    return {
        k: v.detach().cpu().float().contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }


def expected_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes a checkpoint for ``config`` must contain."""
    import torch

    with torch.device("meta"):
        model = build_dncnn(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def fold_batchnorm(model):  # noqa: ANN001, ANN201
    """An inference-only ``nn.Sequential`` equal to ``model.eval()`` with BatchNorm folded into the convolutions.

    The input scale is folded into the first convolution and the output scale into the last one, so the folded
    network expects ``x − in_offset`` (zero padding then means ``x = in_offset``, exactly as in training).
    """
    import torch
    from torch import nn

    mods = list(model.body)
    out: list[nn.Module] = []
    i = 0
    with torch.no_grad():
        while i < len(mods):
            conv = mods[i]
            assert isinstance(conv, nn.Conv2d)
            w = conv.weight.detach().clone()
            b = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(w.shape[0])
            i += 1
            if i < len(mods) and isinstance(mods[i], nn.BatchNorm2d):
                bn = mods[i]
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                w = w * scale[:, None, None, None]
                b = (b - bn.running_mean) * scale + bn.bias
                i += 1
            if not out:  # first conv: fold the input scale
                w = w * model.in_scale
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=True)
            fused.weight.copy_(w)
            fused.bias.copy_(b)
            out.append(fused)
            if i < len(mods) and isinstance(mods[i], nn.ReLU):
                out.append(nn.ReLU(inplace=True))
                i += 1
        last = out[-1]
        last.weight.mul_(model.out_scale)
        last.bias.mul_(model.out_scale)
    return nn.Sequential(*out).eval()


# --------------------------------------------------------------------------------------------- checkpoints
def checkpoint_metadata(config: dict[str, Any]) -> dict[str, str]:
    """The safetensors header metadata: ONE key, because safetensors writes the metadata map in hash order, so
    with several keys the same tensors could give files with different bytes (and sha256) from run to run."""
    return {"modelprint": json.dumps({"format": FORMAT, "config": config}, sort_keys=True)}


def _infer_config(tensors: dict, path: Path, sigma: float | None = None) -> dict[str, Any]:
    convs = sorted(
        ((int(k.split(".")[1]), v) for k, v in tensors.items()
         if k.startswith("body.") and k.endswith(".weight") and len(v.shape) == 4 and k.split(".")[1].isdigit()),
        key=lambda kv: kv[0],
    )
    if not convs:
        some = ", ".join(sorted(tensors)[:4]) or "no tensors"
        raise CheckpointError(f"{path}: not a modelprint DnCNN checkpoint (no 'body.N.weight' conv tensors; has {some})")
    first = convs[0][1]
    return default_config(depth=len(convs), width=int(first.shape[0]), sigma=1.0 if sigma is None else sigma)


def _check_shapes(tensors: dict, config: dict[str, Any], path: Path) -> None:
    try:
        want = expected_shapes(config)
    except Exception as exc:  # a sidecar/metadata config that does not describe a buildable DnCNN
        raise CheckpointError(f"{path}: invalid DnCNN config {config!r} ({one_line(exc)})") from None
    have = {k: tuple(v.shape) for k, v in tensors.items() if not k.endswith("num_batches_tracked")}
    problems: list[str] = []
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    if missing:
        problems.append(f"missing {len(missing)} tensor(s) ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if extra:
        problems.append(f"unexpected {len(extra)} tensor(s) ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})")
    bad = [k for k in want if k in have and have[k] != want[k]]
    if bad:
        k = bad[0]
        problems.append(
            f"{len(bad)} shape mismatch(es), e.g. {k} is {list(have[k])}, expected {list(want[k])}"
        )
    if problems:
        raise CheckpointError(
            f"{path}: checkpoint does not match a DnCNN with depth={config['depth']}, width={config['width']}: "
            + "; ".join(problems)
        )


def load_checkpoint(weights: str | Path | None = None) -> tuple[dict, dict[str, Any], str, Path]:
    """Read and verify a DnCNN checkpoint; returns ``(tensors, config, sha256, path)``.

    ``None`` means the shipped default, whose sidecar is mandatory. Raises :class:`CheckpointError` naming the
    file for a missing file, an unreadable file or sidecar, a sha256 that differs from the sidecar's, or tensors
    that do not match the configured architecture.
    """
    import torch

    shipped = weights is None
    hint = " (the shipped weights are missing: reinstall modelprint or train them, see DNCNN_MODEL_CARD.md)"
    art = open_artefact(default_weights_path() if shipped else weights, "weights file", shipped=shipped,
                        hint=hint if shipped else "")
    path = art.path
    tensors, header = read_tensors(path)
    try:
        if header.get("modelprint"):
            file_config = json.loads(header["modelprint"]).get("config")
        else:
            file_config = json.loads(header["config"]) if header.get("config") else None
    except (ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: unreadable config in the safetensors header ({one_line(exc)})") from None
    if isinstance(art.sidecar.get("config"), dict):
        config = {**default_config(), **art.sidecar["config"]}
    elif isinstance(file_config, dict):
        config = {**default_config(), **file_config}
    else:
        config = _infer_config(tensors, path)
    _check_shapes(tensors, config, path)
    tensors = {k: v.float() for k, v in tensors.items() if not k.endswith("num_batches_tracked")}
    bad = [k for k, v in tensors.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path}: non-finite values (NaN/inf) in {', '.join(bad[:3])}")
    return tensors, config, art.sha256, path


def load_dncnn(weights: str | Path | None = None):  # noqa: ANN201
    """The training-time DnCNN (eval mode) with verified weights; returns ``(model, config, sha256, path)``."""
    tensors, config, sha, path = load_checkpoint(weights)
    model = build_dncnn(config)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:  # _check_shapes makes this unreachable; keep the guarantee explicit
        raise CheckpointError(f"{path}: checkpoint does not fit the model (missing {missing}, unexpected {unexpected})")
    return model.eval(), config, sha, path


# --------------------------------------------------------------------------------------------- tiling
def tile_windows(n: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """Windows along one axis of ``n`` pixels: ``(size, starts)`` with ``size <= tile``.

    The fewest windows that fit, all of one size (so they batch), evenly spaced from ``0`` to ``n − size``, each
    consecutive pair overlapping by at least ``2·overlap`` pixels (so the kept parts, see :func:`_keep`, cover the
    axis). E.g. 1024 px with ``tile=512, overlap=16`` gives three windows of 363 px, not 512-px windows that would
    mostly overlap.
    """
    if n <= tile:
        return n, [0]
    if tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must be larger than 2 x overlap ({overlap})")
    count = 1 + math.ceil((n - tile) / (tile - 2 * overlap))
    size = min(tile, math.ceil((n + 2 * overlap * (count - 1)) / count))
    while True:
        starts = [round(i * (n - size) / (count - 1)) for i in range(count)]
        if all(size - (b - a) >= 2 * overlap for a, b in zip(starts, starts[1:])) or size >= tile:
            return size, starts
        size += 1


def _keep(start: int, size: int, n: int, overlap: int) -> tuple[int, int]:
    """The part ``[a, b)`` of a window (in window coordinates) whose output is kept."""
    a = 0 if start == 0 else overlap
    b = size if start + size >= n else size - overlap
    return a, b


@RESIDUALS.register("dncnn")
class DnCNNResidual(Residual):
    """The noise modelprint's DnCNN predicts in an image (see the module docstring).

    Parameters
    ----------
    weights:
        ``None`` for the shipped ``dncnn_s1.safetensors``, or a path to ``.safetensors`` / ``.pt`` / ``.pth``.
    tile:
        Window side for tiled inference; images up to ``tile`` on both sides run whole.
    overlap:
        Margin discarded at inner window edges; tiling is exact (to float rounding) when ``overlap >= depth``.
    batch_pixels:
        At most this many input pixels are run through the network at once (bounds memory).
    """

    def __init__(self, weights: str | Path | None = None, tile: int = 512, overlap: int = 16,
                 batch_pixels: int = 512 * 512) -> None:
        if overlap < 0 or tile <= 2 * overlap:
            raise ValueError(f"need tile > 2*overlap >= 0, got tile={tile}, overlap={overlap}")
        self.weights = None if weights is None else str(weights)
        self.tile = int(tile)
        self.overlap = int(overlap)
        self.batch_pixels = int(batch_pixels)
        model, self.config, self.sha256, self.path = load_dncnn(weights)
        from modelprint.seeding import configure_torch_threads

        configure_torch_threads()
        import torch

        self._net = fold_batchnorm(model).to(memory_format=torch.channels_last)
        self._offset = float(self.config.get("in_offset", IN_OFFSET))

    @property
    def version(self) -> str:
        """Architecture and weights; also the tiling when it is not exact (``overlap < depth``)."""
        inexact = f"-tile{self.tile}o{self.overlap}" if self.overlap < self.depth else ""
        return f"v1-d{self.config['depth']}w{self.config['width']}-{self.sha256[:12]}{inexact}"

    @property
    def depth(self) -> int:
        return int(self.config["depth"])

    def _run(self, tiles: np.ndarray) -> np.ndarray:
        """(n, h, w, 3) float32 → (n, h, w, 3) float32 predicted noise (whole windows, no tiling)."""
        import torch

        x = torch.from_numpy(tiles).permute(0, 3, 1, 2)  # an NHWC buffer viewed as NCHW is channels_last
        with torch.inference_mode():
            x = x - self._offset
            y = self._net(x.contiguous(memory_format=torch.channels_last))
            return y.permute(0, 2, 3, 1).contiguous().numpy()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.batch([image])[0]

    def residual_torch(self, x):  # noqa: ANN001, ANN201
        """The residuals of a torch batch ``(n, 3, H, W)`` in [0, 1], differentiable with respect to ``x``.

        Tiled with the windows of :meth:`batch` (each pixel taken from the last window that keeps it, as there),
        so it equals :meth:`batch` to float rounding. When ``x`` needs gradients, each window's activations are
        recomputed in the backward pass instead of kept (gradient checkpointing), so memory holds one window's
        activations, not the whole image's.
        """
        import torch
        from torch.utils.checkpoint import checkpoint

        def run(window):  # noqa: ANN001, ANN202
            return self._net((window - self._offset).contiguous(memory_format=torch.channels_last))

        h, w = x.shape[-2:]
        th, ys = tile_windows(h, self.tile, self.overlap)
        tw, xs = tile_windows(w, self.tile, self.overlap)
        if len(ys) == 1 and len(xs) == 1:
            return run(x)
        rows, y_done = [], 0
        for y in ys:
            y0, y1 = _keep(y, th, h, self.overlap)
            cols, x_done = [], 0
            for x_ in xs:
                x0, x1 = _keep(x_, tw, w, self.overlap)
                window = x[..., y : y + th, x_ : x_ + tw]
                out = checkpoint(run, window, use_reentrant=False) if x.requires_grad else run(window)
                cols.append(out[..., max(y0, y_done - y) : y1, max(x0, x_done - x_) : x1])
                x_done = x_ + x1
            rows.append(torch.cat(cols, dim=-1))
            y_done = y + y1
        return torch.cat(rows, dim=-2)

    def batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        arrays = [as_image(im) for im in images]
        out: list[np.ndarray | None] = [None] * len(arrays)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, a in enumerate(arrays):
            groups.setdefault(a.shape[:2], []).append(i)
        for (h, w), idxs in groups.items():
            th, ys = tile_windows(h, self.tile, self.overlap)
            tw, xs = tile_windows(w, self.tile, self.overlap)
            jobs = [(i, y, x) for i in idxs for y in ys for x in xs]
            per = max(1, self.batch_pixels // (th * tw))
            results = {i: np.empty((h, w, 3), dtype=np.float32) for i in idxs}
            for c in range(0, len(jobs), per):
                chunk = jobs[c : c + per]
                if len(chunk) == 1 and th == h and tw == w:
                    stack = arrays[chunk[0][0]][None]
                else:
                    stack = np.stack([arrays[i][y : y + th, x : x + tw] for i, y, x in chunk])
                pred = self._run(stack)
                for (i, y, x), p in zip(chunk, pred, strict=True):
                    y0, y1 = _keep(y, th, h, self.overlap)
                    x0, x1 = _keep(x, tw, w, self.overlap)
                    results[i][y + y0 : y + y1, x + x0 : x + x1] = p[y0:y1, x0:x1]
            for i in idxs:
                out[i] = results[i]
        return out  # type: ignore[return-value]
