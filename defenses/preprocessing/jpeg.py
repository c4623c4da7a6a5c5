"""JPEG compression (Das et al., 2017; Guo et al., 2018): every input encoded as a JPEG at `quality` and decoded
before the judge sees it, through Pillow as ART's `JpegCompression` does (tested to agree). Not differentiable at
all: a white-box attacker needs BPDA."""

from __future__ import annotations

import io
from typing import Annotated

import numpy as np
import torch
from PIL import Image

from gavel.defenses.preprocessing.base import PreprocessingDefense, Transform
from gavel.targets.params import Range


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """One image (C, H, W) in [0, 1], float32, through a JPEG file at `quality`: the same shape, in [0, 1]."""
    pixels = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    mode = "L" if pixels.shape[0] == 1 else "RGB"
    picture = Image.fromarray(pixels[0] if mode == "L" else pixels.transpose(1, 2, 0), mode=mode)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255
    return decoded[None] if mode == "L" else decoded.transpose(2, 0, 1)


class Jpeg(Transform):
    def __init__(self, quality: int) -> None:
        super().__init__()
        self.quality = quality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"defense=jpeg: images of {x.shape[1]} channels; allowed: 1 (greyscale) or 3 (RGB)")
        images = x.detach().cpu().numpy()
        out = np.stack([jpeg_round_trip(image, self.quality) for image in images])
        decoded = torch.from_numpy(out).to(device=x.device, dtype=x.dtype)
        return decoded + 0.0 * x  # a gradient of zero, as a white box that differentiates through it reads


class JpegCompression(PreprocessingDefense):
    def __init__(self, *, quality: Annotated[int, Range(minimum=1, maximum=95)] = 50) -> None:
        self.quality = quality
        self.check_hyperparameters()

    def transform(self) -> Transform:
        return Jpeg(self.quality)
