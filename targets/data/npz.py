"""The user's own arrays (`data=npz`): one `.npz` file per pool holding `x` (images: uint8 in 0..255, or floats in
[0, 1]; [N, C, H, W], [N, H, W, C] with `data.layout=NHWC`, or [N, H, W] for greyscale), `y` (integer labels) and,
optionally, `classes` (the class names, in label order)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from gavel.targets.data.user_data import Examples, UserData
from gavel.targets.errors import SourceError


class Npz(UserData):
    option = "npz"
    what = "an .npz file with arrays x and y"

    def __init__(self, *, layout: Literal["NCHW", "NHWC"] = "NCHW", **pools) -> None:
        super().__init__(**pools)
        self.layout = layout

    def read(self, key: str, path: Path) -> tuple[Examples, tuple[str, ...] | None]:
        where = f"data.{key}={self.paths[key]}"
        try:
            with np.load(path, allow_pickle=False) as arrays:
                missing = [name for name in ("x", "y") if name not in arrays.files]
                if missing:
                    raise SourceError(
                        f"{where}: holds no array {missing[0]!r} (it holds {', '.join(arrays.files) or 'none'}); "
                        f"allowed: {self.what}"
                    )
                x, y = arrays["x"], arrays["y"]
                names = arrays["classes"] if "classes" in arrays.files else None
        except SourceError:
            raise
        except (OSError, ValueError) as error:  # not a zip, or an object array (which would need unpickling)
            raise SourceError(f"{where}: not an .npz file of plain arrays ({error}); allowed: {self.what}") from None
        x = self._images(where, x)
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise SourceError(
                f"{where}: y is {y.dtype} {list(y.shape)} for {len(x)} images; allowed: one integer label per image"
            )
        origins = [f"{path}[{i}]" for i in range(len(x))]
        if names is None:
            return Examples(list(x), y.astype(np.int64), origins), None
        names = tuple(str(name) for name in np.asarray(names).tolist())
        bad = (y < 0) | (y >= len(names))
        if bad.any():
            raise SourceError(
                f"{where}: label {int(y[bad][0])} but {len(names)} class names; allowed: 0 to {len(names) - 1}"
            )
        return Examples(list(x), y.astype(np.int64), origins), names

    def _images(self, where: str, x: np.ndarray) -> np.ndarray:
        """`x` as float32 [N, C, H, W] in [0, 1]."""
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and self.layout == "NHWC":
            x = x.transpose(0, 3, 1, 2)
        if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
            raise SourceError(
                f"{where}: x is {list(x.shape)}; allowed: one or more images, [N, C, H, W] with 1 or 3 channels "
                "([N, H, W, C] with data.layout=NHWC, [N, H, W] for greyscale)"
            )
        if x.dtype == np.uint8:
            return np.ascontiguousarray(x, dtype=np.float32) / 255.0
        if not np.issubdtype(x.dtype, np.floating):
            raise SourceError(f"{where}: x is {x.dtype}; allowed: uint8 (0..255) or floats in [0, 1]")
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise SourceError(
                f"{where}: x holds values from {np.nanmin(x):g} to {np.nanmax(x):g} (or non-finite ones); "
                "allowed: floats in [0, 1], or uint8"
            )
        return np.ascontiguousarray(x, dtype=np.float32)
