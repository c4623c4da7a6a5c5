"""The user's own data as a test writes it: images as PNG files in torchvision's ImageFolder layout, and the same
images as an .npz file of arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def as_bytes(x: np.ndarray) -> np.ndarray:
    """Images in [0, 1] as the 8-bit values a PNG file holds."""
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def write_image_folder(folder: Path, x: np.ndarray, y: np.ndarray, class_names: list[str]) -> Path:
    """One PNG per image (8-bit greyscale or RGB), in a folder per class, named by its index so that the folder
    lists them in the order given within each class."""
    for i, (image, label) in enumerate(zip(as_bytes(x), y)):
        target = folder / class_names[int(label)]
        target.mkdir(parents=True, exist_ok=True)
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        Image.fromarray(pixels).save(target / f"{i:05d}.png")
    return folder


def in_folder_order(x: np.ndarray, y: np.ndarray, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The images in the order an image folder lists them: by class name, then by index."""
    order = sorted(range(len(y)), key=lambda i: (class_names[int(y[i])], i))
    return x[order], y[order]


def write_npz(path: Path, x: np.ndarray, y: np.ndarray, **extra) -> Path:
    np.savez(path, x=x, y=y, **extra)
    return path
