"""Universal adversarial patch (Brown et al., 2017), white-box, from ART.

The "sticker on the forehead": one patch, trained on the attacker's own images, pasted on every evaluation
example. It replaces the pixels under it outright, so it has no eps: only the verdict counts.
"""

from __future__ import annotations

from typing import Annotated, Literal, Sequence, get_args

import numpy as np
from art.attacks.evasion import AdversarialPatchPyTorch
from art.estimators.classification import PyTorchClassifier
from art.utils import to_categorical

from gavel.attacks.adapters.art import seed_global_rngs
from gavel.attacks.base import AttackerKit
from gavel.attacks.white_box.base import WhiteBoxAttack
from gavel.targets.datasets import Pool
from gavel.targets.params import NonNegativeInt, PositiveFloat, PositiveInt, Range

PatchType = Literal["square", "circle"]
PATCH_TYPES: tuple[str, ...] = get_args(PatchType)


class Patch(WhiteBoxAttack):
    norm = None
    supports_targeted = True
    needs_attacker_data = True

    def __init__(
        self,
        *,
        eps: float = 1.0,
        scale: Annotated[float, Range(above=0, maximum=1)] = 0.4,
        location: Sequence[NonNegativeInt] | None = None,
        max_iter: PositiveInt = 20,
        learning_rate: PositiveFloat = 0.1,
        batch_size: PositiveInt = 32,
        patch_type: PatchType = "square",
        rotation_max: Annotated[float, Range(minimum=0, maximum=180)] = 0.0,
        **common,
    ) -> None:
        super().__init__(eps=eps, **common)
        if not 0 < scale <= 1:
            raise ValueError(f"attack.scale={scale!r}: allowed: a number in (0, 1] (patch side / image side)")
        if location is not None and (len(location) != 2 or any(int(v) < 0 for v in location)):
            raise ValueError(f"attack.location={location!r}: allowed: null (random) or [x, y] (upper-left corner)")
        if patch_type not in PATCH_TYPES:
            raise ValueError(f"attack.patch_type={patch_type!r}: allowed: {', '.join(PATCH_TYPES)}")
        self.scale = float(scale)
        self.location = None if location is None else (int(location[0]), int(location[1]))
        self.max_iter = max_iter
        self.learning_rate = float(learning_rate)
        self.batch_size = batch_size
        self.patch_type = patch_type
        self.rotation_max = float(rotation_max)

    def craft(self, estimator: PyTorchClassifier, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> np.ndarray:
        """One patch trained on the attacker's own pool, stuck on every example."""
        pool = kit.require_attacker_data("a universal patch is trained on the attacker's own data")
        return self.stick(self.train(estimator, pool), x)

    def train(self, estimator: PyTorchClassifier, attacker_data: Pool) -> AdversarialPatchPyTorch:
        """One patch for every image, optimised on the attacker's own pool: never on the evaluation examples."""
        channels, height, width = estimator.input_shape
        side = max(1, round(self.scale * min(height, width)))
        if self.location is not None and (self.location[0] + side > width or self.location[1] + side > height):
            raise ValueError(
                f"attack.location={list(self.location)}: a {side}x{side} patch there leaves the "
                f"{height}x{width} image; allowed: x <= {width - side}, y <= {height - side}"
            )
        patch = AdversarialPatchPyTorch(
            estimator,
            rotation_max=self.rotation_max,
            scale_min=side / min(height, width),  # a random placement keeps the patch's size
            scale_max=side / min(height, width),
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            batch_size=self.batch_size,
            patch_shape=(channels, side, side),
            patch_location=self.location,
            patch_type=self.patch_type,
            optimizer="Adam",
            targeted=self.targeted,
            verbose=False,
        )
        if self.location is not None and self.rotation_max == 0:  # a rotated patch covers other pixels anyway
            _check_placement(patch, self.location, side, estimator.input_shape)
        seed_global_rngs(self.seed)
        labels = to_categorical(self.library_labels(attacker_data.y), estimator.nb_classes)
        patch.generate(attacker_data.x, y=labels)
        return patch

    def stick(self, patch: AdversarialPatchPyTorch, x: np.ndarray) -> np.ndarray:
        """The trained patch on every example: at `location`, or at a random place per example (seeded)."""
        seed_global_rngs(self.seed, 1)
        x_adv = patch.apply_patch(x, scale=patch.scale_max)
        return np.clip(x_adv, 0.0, 1.0).astype(np.float32)


def _check_placement(patch: AdversarialPatchPyTorch, location: tuple[int, int], side: int, shape) -> None:
    """ART centres the patch and then shifts it, rounding to whole pixels: where that lands half a pixel off
    (an odd side on an even image, at the border), the patch would cover other pixels than asked."""
    x, y = location
    wanted = np.zeros(shape[1:], dtype=bool)
    wanted[y : y + side, x : x + side] = True
    probe = patch.apply_patch(
        np.zeros((1, *shape), dtype=np.float32), scale=patch.scale_max, patch_external=np.ones(patch.patch_shape)
    )
    if not np.array_equal(probe[0].max(axis=0) > 0.5, wanted):
        raise ValueError(
            f"attack.location={[x, y]}: ART cannot place a {side}x{side} patch exactly there on a "
            f"{shape[1]}x{shape[2]} image; allowed: another location, or a scale giving a side of the image's parity"
        )
