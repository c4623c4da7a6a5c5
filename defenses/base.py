"""The defense contract: a defense wraps the judge and keeps its interface (inputs in [0, 1], logits out)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import nn


class Defense(ABC):
    kind: ClassVar[str]  # none | access | preprocess | postprocess | training | ensemble

    @abstractmethod
    def apply(self, judge: nn.Module) -> nn.Module:
        """The defended judge: what the Oracle answers with and what success is re-checked on."""
