"""The user's own images in torchvision's `ImageFolder` layout (`data=image_folder`): one folder per pool, in it one
folder per class holding that class's images (PNG, JPEG, ...), any size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gavel.targets.data.user_data import Examples, UserData
from gavel.targets.errors import SourceError


class ImageFolder(UserData):
    option = "image_folder"
    what = "a folder of class folders"

    def read(self, key: str, path: Path) -> tuple[Examples, tuple[str, ...]]:
        from PIL import Image, UnidentifiedImageError
        from torchvision.datasets.folder import IMG_EXTENSIONS

        where = f"data.{key}={self.paths[key]}"
        if not path.is_dir():
            raise SourceError(f"{where}: not a folder; allowed: {self.what}")
        classes = sorted(entry.name for entry in path.iterdir() if entry.is_dir() and not entry.name.startswith("."))
        if not classes:
            raise SourceError(
                f"{where}: holds no class folders; allowed: {self.what} (torchvision's ImageFolder layout)"
            )
        images, labels, origins = [], [], []
        for label, name in enumerate(classes):
            files = sorted(
                file for file in (path / name).rglob("*") if file.is_file() and file.suffix.lower() in IMG_EXTENSIONS
            )
            if not files:
                raise SourceError(
                    f"{where}: the class folder {name!r} holds no image; allowed: one or more images "
                    f"({', '.join(IMG_EXTENSIONS)}) in each class folder"
                )
            for file in files:
                try:
                    with Image.open(file) as opened:
                        image = _pixels(opened, self.channels)
                except (UnidentifiedImageError, OSError) as error:
                    raise SourceError(f"{where}: {file} cannot be read as an image ({error})") from None
                images.append(image)
                labels.append(label)
                origins.append(str(file))
        return Examples(images, np.array(labels, dtype=np.int64), origins), tuple(classes)


def _pixels(image, channels: int | None) -> np.ndarray:
    """An image as float32 [C, H, W] in [0, 1]: greyscale stays one channel and colour three (unless `channels`
    says which), 8 bits a channel (16-bit greyscale scaled from 0..65535)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(image, dtype=np.float64) / 65535.0
        array = np.clip(grey, 0, 1)[None]
        if channels == 3:
            array = np.repeat(array, 3, axis=0)
        return array.astype(np.float32)
    grey = image.mode in ("1", "L", "LA") if channels is None else channels == 1
    converted = image.convert("L" if grey else "RGB")
    array = np.asarray(converted, dtype=np.float32) / 255.0
    return array[None] if grey else np.ascontiguousarray(array.transpose(2, 0, 1))
