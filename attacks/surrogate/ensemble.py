"""A surrogate ensemble (`surrogate=ensemble`): several architectures trained on the same data, their logits
averaged (Liu et al., 2017)."""

from __future__ import annotations

from typing import Mapping

from gavel.attacks.surrogate.base import Surrogate
from gavel.targets.params import BadValue
from gavel.targets.training import ModelConfig


class EnsembleSurrogate(Surrogate):
    def __init__(self, *, members: Mapping[str, ModelConfig], **knowledge) -> None:
        super().__init__(**knowledge)
        if not members:
            raise BadValue("members", {}, "one or more members, each with arch and train")
        if self.knowledge == "extracted":
            raise BadValue(
                "knowledge", "extracted", "leaked, same_distribution or proxy, or one extracted surrogate",
                why="each member of an ensemble would buy its own labels",
            )  # fmt: skip
        self.named_members = dict(members)

    @property
    def members(self) -> tuple[ModelConfig, ...]:
        return tuple(self.named_members.values())
