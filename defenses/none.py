"""No defense: the baseline every defense is measured against."""

from __future__ import annotations

from torch import nn

from defenses.base import Defense, OperatorKit
from targets.access.shield import Shield


class NoDefense(Defense):
    kind = "none"

    def deploy(self, judge: nn.Module, operator: OperatorKit) -> Shield:
        return Shield(judge)
