"""No defense: the baseline every defense is measured against."""

from __future__ import annotations

from torch import nn

from defenses.base import Defense


class NoDefense(Defense):
    kind = "none"

    def apply(self, judge: nn.Module) -> nn.Module:
        return judge
