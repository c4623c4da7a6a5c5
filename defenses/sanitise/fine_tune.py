"""Fine-tuning (Liu et al., 2018; BackdoorBench's strongest simple removal): the judge trained on the contributed pool,
trained further for `epochs` on the operator's own clean held-out data. Removes nothing from the pool."""

from __future__ import annotations

from gavel.defenses.sanitise.base import Cleaned, SanitiseContext, Sanitiser
from gavel.targets.errors import SourceError
from gavel.targets.params import PositiveFloat, PositiveInt


class FineTune(Sanitiser):
    def __init__(self, *, epochs: PositiveInt = 10, lr: PositiveFloat = 0.001, batch_size: PositiveInt = 32) -> None:
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.batch_size = int(batch_size)

    def clean(self, context: SanitiseContext) -> Cleaned:
        if context.held_out is None or len(context.held_out) == 0:
            raise SourceError(
                "sanitise=fine_tune: fine-tunes on the operator's clean held-out data, and there is none; allowed: "
                "fewer n_examples than the evaluation pool holds, or data.operator=PATH"
            )
        return Cleaned(fine_tune_on=context.held_out)
