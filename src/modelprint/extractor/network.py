"""The fingerprint extractor network: a narrow ResNet over residual log-spectra.

A spectrum is not translation invariant (a position *is* a frequency), so the head does not average-pool: the
last feature map is reduced to a few channels by a 1×1 convolution and flattened, keeping where in the spectrum
each feature fired. Width and depth are chosen for 2 CPU cores (see the model card for measured speeds).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class FingerprintNet(nn.Module):
    """Spectrum ``(N, 3, T, T)`` → embedding ``(N, embed_dim)``; ``logits`` adds a training-time classifier.

    The classifier is cosine (normalised weights and embeddings, times ``scale``) by default: it ranks classes by
    the same cosine similarity that identification uses, and with hundreds of classes of which only a few appear in
    a batch it learns far faster than a plain linear layer whose rarely updated biases and norms dominate.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        blocks_per_stage: int = 1,
        embed_dim: int = 256,
        head_channels: int = 32,
        tile: int = 64,
        n_classes: int = 0,
        stem_stride: int = 2,
        region: int = 128,
        cosine_classifier: bool = True,
        scale: float = 16.0,
    ) -> None:
        super().__init__()
        self.config = {"widths": list(widths), "blocks_per_stage": blocks_per_stage, "embed_dim": embed_dim,
                       "head_channels": head_channels, "tile": tile, "n_classes": n_classes, "stem_stride": stem_stride, "region": region}
        self.cosine_classifier, self.scale = cosine_classifier, scale
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stem_stride, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks_per_stage):
                stages.append(BasicBlock(cin, w, 2 if (b == 0 and i > 0) else 1))
                cin = w
        self.stages = nn.Sequential(*stages)
        side = tile // stem_stride // 2 ** (len(widths) - 1)
        self.reduce = nn.Sequential(nn.Conv2d(cin, head_channels, 1, bias=False), nn.BatchNorm2d(head_channels), nn.ReLU())
        self.embed = nn.Linear(head_channels * side * side, embed_dim)
        self.classifier = nn.Linear(embed_dim, n_classes, bias=not cosine_classifier) if n_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.reduce(self.stages(self.stem(x)))
        return self.embed(h.flatten(1))

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError("this network was built without a classifier (n_classes=0)")
        if self.cosine_classifier:
            return self.scale * F.linear(F.normalize(embedding, dim=1), F.normalize(self.classifier.weight, dim=1))
        return self.classifier(embedding)
