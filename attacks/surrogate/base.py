"""What every surrogate option shares: what the attacker knows of the judge's training data.

`knowledge`:
- `leaked`: the judge's own training pool (refused where the data does not include it: a foreign judge's training
  data is known only when the user names it, `data.judge_train`);
- `same_distribution`: the attacker's own pool, disjoint from the judge's;
- `proxy`: data from another distribution (`proxy`: `transformed`, the attacker's pool restyled, or another set
  with the same classes, which the data source names);
- `extracted`: the attacker's pool's inputs, labelled by querying the judge (model extraction; the labels count as
  queries).
`data_fraction` shrinks whichever pool it is; each member of an ensemble trains on it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Literal

from gavel.attacks.extraction.base import ExtractionSpec
from gavel.targets.params import Range
from gavel.targets.training import ModelConfig

Knowledge = Literal["leaked", "same_distribution", "proxy", "extracted"]
Fraction = Annotated[float, Range(above=0, maximum=1)]


class Surrogate(ABC):
    def __init__(
        self,
        *,
        knowledge: Knowledge = "same_distribution",
        data_fraction: Fraction = 1.0,
        proxy: str = "transformed",
        proxy_root: str | None = None,
        extraction: ExtractionSpec = ExtractionSpec(),
    ) -> None:
        self.knowledge = knowledge
        self.data_fraction = float(data_fraction)
        self.proxy = proxy
        self.proxy_root = proxy_root
        self.extraction = extraction

    @property
    @abstractmethod
    def members(self) -> tuple[ModelConfig, ...]:
        """The models the attacker trains (one, or an ensemble's, whose logits are averaged)."""
