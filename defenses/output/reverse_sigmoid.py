"""Reverse sigmoid (Lee et al., 2019, "Defending against NN model stealing attacks using deceptive
perturbations"), through ART's `ReverseSigmoid`: each score p becomes p - beta * (sigmoid(gamma * logit(p)) - 1/2),
clipped to [0, 1] and renormalised, so scores mislead a model-stealing or score-based attacker.

It is designed to keep the verdict, but keeps it on every row only where the perturbed score is increasing in p:
gamma >= 1 with beta * gamma < 1. With gamma < 1 (ART's defaults among them) it decreases near 0 and 1, so a row
whose top score is low while another class's is tiny can change its verdict. Measured on 10-class softmax rows
of N(0, s^2) logits: at the defaults no flip in 1e5 rows at s = 1, 3 in 1000 at s = 10; at beta = 1, gamma = 0.5
half the rows flip at s = 1. `flip_rate` measures what a setting costs honest users.
"""

from __future__ import annotations

from art.defences.postprocessor import ReverseSigmoid as ArtReverseSigmoid

from gavel.defenses.base import OperatorKit
from gavel.defenses.output.base import PROBABILITIES_ONLY, ArtFilter, OutputDefense
from gavel.targets.access.shield import OutputFilter
from gavel.targets.params import PositiveFloat


class ReverseSigmoid(OutputDefense):
    outputs = PROBABILITIES_ONLY

    def __init__(self, *, beta: PositiveFloat = 1.0, gamma: PositiveFloat = 0.1) -> None:
        self.beta = beta
        self.gamma = gamma
        super().__init__()

    def output_filter(self, operator: OperatorKit) -> OutputFilter:
        return ArtFilter(ArtReverseSigmoid(beta=self.beta, gamma=self.gamma))
