"""A contributor cap (a DAO's rule): no contributor's examples make up more than `cap` of the pool; a contributor over
it keeps a random `cap` share of the pool's size, the rest removed."""

from __future__ import annotations

import numpy as np

from gavel.defenses.sanitise.base import Cleaned, SanitiseContext, Sanitiser
from gavel.targets.params import Probability


class ContributorCap(Sanitiser):
    needs_contributors = True

    def __init__(self, *, cap: Probability = 0.2) -> None:
        self.cap = float(cap)

    def clean(self, context: SanitiseContext) -> Cleaned:
        kept = np.ones(len(context.pool), dtype=bool)
        most = int(np.floor(self.cap * len(context.pool)))
        rng = np.random.default_rng(context.seed)
        for party in range(context.parties):
            rows = np.flatnonzero(context.contributors == party)
            if len(rows) > most:
                kept[rng.choice(rows, len(rows) - most, replace=False)] = False
        return Cleaned(kept=kept)
