"""Rounded scores (Tramer et al., 2016): every probability rounded to `decimals` places, through ART's `Rounded`.

Rows are not renormalised (they need not sum to 1 afterwards), as in ART. Two classes that round to the same
score tie, and the arg-max then takes the lower class index: a verdict can change, which `flip_rate` measures.
"""

from __future__ import annotations

from art.defences.postprocessor import Rounded as ArtRounded

from gavel.defenses.base import OperatorKit
from gavel.defenses.output.base import PROBABILITIES_ONLY, ArtFilter, OutputDefense
from gavel.targets.access.shield import OutputFilter
from gavel.targets.params import PositiveInt


class Rounded(OutputDefense):
    outputs = PROBABILITIES_ONLY

    def __init__(self, *, decimals: PositiveInt = 2) -> None:
        self.decimals = decimals
        super().__init__()

    def output_filter(self, operator: OperatorKit) -> OutputFilter:
        return ArtFilter(ArtRounded(decimals=self.decimals))
