"""Fine-tuning (Liu et al., 2018; BackdoorBench's strongest simple removal): the judge trained on the contributed pool,
trained further for `epochs` on the operator's own clean held-out data. Removes nothing from the pool."""

from __future__ import annotations

from gavel.defenses.sanitise.base import Cleaned, SanitiseContext, Sanitiser
from gavel.targets.datasets import Pool
from gavel.targets.errors import SourceError
from gavel.targets.params import PositiveFloat, PositiveInt


class FineTune(Sanitiser):
    def __init__(self, *, epochs: PositiveInt = 10, lr: PositiveFloat = 0.001, batch_size: PositiveInt = 32) -> None:
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.batch_size = int(batch_size)

    def shortfall(self, held_out: Pool | None) -> str | None:
        if held_out is None or len(held_out) == 0:
            return (
                "fine-tunes on the operator's clean held-out data, and there is none; allowed: fewer n_examples than "
                "the evaluation pool holds, or data.operator=PATH"
            )
        return None

    def clean(self, context: SanitiseContext) -> Cleaned:
        why = self.shortfall(context.held_out)
        if why is not None:
            raise SourceError(f"sanitise=fine_tune: {why}")
        return Cleaned(fine_tune_on=context.held_out)
