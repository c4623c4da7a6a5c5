"""No defense: the baseline every defense is measured against."""

from __future__ import annotations

from torch import nn

from gavel.defenses.base import Defense, OperatorKit
from gavel.targets.access.shield import Shield


class NoDefense(Defense):
    kind = "none"

    def deploy(self, judge: nn.Module, operator: OperatorKit) -> Shield:
        return Shield(judge)
