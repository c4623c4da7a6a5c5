"""What the output-hiding defenses share: deployment as a filter in the Oracle, the check of their
hyperparameters, and the adapter that makes an ART postprocessor an `OutputFilter`."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np
from art.defences.postprocessor.postprocessor import Postprocessor
from torch import nn

from gavel.defenses.base import Defense, OperatorKit
from gavel.targets.access import Output
from gavel.targets.access.shield import OutputFilter, Shield

PROBABILITIES_ONLY = (Output.PROBABILITIES,)
"""What a filter that keeps the verdict applies to: it reads probabilities, so `access.output=logits` is refused,
and it changes nothing an `access.output=label` API returns, so that is refused too."""


class OutputDefense(Defense):
    """A defense that leaves the judge alone and changes what the API answers."""

    kind: ClassVar[str] = "output"

    def __init__(self) -> None:
        self.check_hyperparameters()

    @abstractmethod
    def output_filter(self, operator: OperatorKit) -> OutputFilter:
        """The filter one deployment applies to every answer (a fresh one per deployment)."""

    def deploy(self, judge: nn.Module, operator: OperatorKit) -> Shield:
        return Shield(judge, output_filter=self.output_filter(operator))


class ArtFilter(OutputFilter):
    """An ART postprocessor as the Oracle's filter: float64 into ART (its clipping at 1 - 1e-9 rounds to 1 in
    float32), float32 out."""

    def __init__(self, postprocessor: Postprocessor) -> None:
        self.postprocessor = postprocessor

    def __call__(self, probabilities: np.ndarray) -> np.ndarray:
        return self.postprocessor(probabilities.astype(np.float64)).astype(np.float32)
