"""Preprocessing defenses: a transform applied to every input before the judge sees it (JPEG, bit-depth
squeezing, a median filter). Most are not differentiable, or have zero gradients almost everywhere, so a white-box
attacker that differentiates through them reads useless gradients and reports a flattering robustness: gradient
masking (Athalye et al., 2018). `attack.bpda=true` is the adaptive answer: the forward pass keeps the transform,
the backward pass replaces it with the identity (Backward Pass Differentiable Approximation, `straight_through`).

The transform runs on the operator's side for every verdict, the evaluator's and an honest user's included, so its
cost in clean accuracy is measured like every defense's.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from torch import nn

from gavel.defenses.base import Defense, OperatorKit
from gavel.targets.access.preprocessing import Preprocessed, Transform
from gavel.targets.access.shield import Shield

__all__ = ["PreprocessingDefense", "Preprocessed", "Transform"]


class PreprocessingDefense(Defense):
    kind: ClassVar[str] = "preprocessing"

    @abstractmethod
    def transform(self) -> Transform:
        """The transform the operator applies to every input."""

    def deploy(self, judge: nn.Module, operator: OperatorKit) -> Shield:
        return Shield(Preprocessed(judge, self.transform()))
