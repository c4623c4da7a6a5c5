"""PGD L2 (Madry et al., 2018) on the judge itself: white box, from ART or foolbox."""

from __future__ import annotations

from gavel.attacks.white_box.pgd import PGD
from gavel.targets.params import PositiveFloat


class PGDL2(PGD):
    norm = "2"

    def __init__(self, *, eps: float = 1.0, eps_step: PositiveFloat = 0.1, **rest) -> None:
        super().__init__(eps=eps, eps_step=eps_step, **rest)
