"""RayS (Chen & Gu, KDD 2020), decision-based, L-inf: a search over ray directions that needs only verdicts.

Each example keeps a sign vector d (one +-1 per input dimension, all +1 at first) and the smallest radius r at
which x + r d (clipped to [0, 1]) fools the judge. Blocks of d are flipped in a hierarchy (the whole input,
then its halves, quarters, ... down to single dimensions): one query at the current best radius tells whether
the flipped direction fools the judge there; only if it does, a binary search finds its own radius, which
becomes the best when smaller. The example is fooled when r <= eps (the engine sees it from the answered
input). At first r is unknown: a flip is then checked at r = 1, where every pixel is saturated.

gavel's batched implementation (the only one; no library has RayS): every example in play asks its next
question in the same call. When the finest level of the hierarchy is done the hierarchy restarts from the
whole input, from the best direction so far, so that the budget is spent.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
import torch

from gavel.attacks.base import AttackerKit, AttackResult
from gavel.attacks.query.base import QueryAttack
from gavel.targets.access import DECISION_BASED
from gavel.targets.params import Range


class RayS(QueryAttack):
    threat_model = DECISION_BASED
    norm = "inf"
    supports_targeted = False
    backends = ("gavel",)

    def __init__(self, *, eps: float, tolerance: Annotated[float, Range(above=0)] = 1e-3, **common) -> None:
        super().__init__(eps=eps, **common)
        self.tolerance = tolerance
        """The binary search stops when its interval is this short, in L2 length along the ray (the paper's)."""

    def library_attack(self, estimator, budget):
        raise TypeError("RayS has no library backend: attack.backend=gavel")

    def run_batched(self, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> AttackResult:
        engine = self.engine("rays", x, y, kit)
        x0 = engine.x.flatten(1)
        n, dims = x0.shape
        device = x0.device
        shape = (-1, *x.shape[1:])
        # The binary search's stop, as a radius: the paper measures the interval along the unit ray.
        tolerance = self.tolerance / math.sqrt(dims)
        sign = torch.ones_like(x0)
        attempt = sign.clone()  # the direction being tried: at first d itself, then d with one block flipped
        radius = torch.full((n,), math.inf, device=device)  # the best direction's radius
        searching = torch.zeros(n, dtype=torch.bool, device=device)
        low = torch.zeros(n, device=device)
        high = torch.zeros(n, device=device)
        level = np.zeros(n, dtype=np.int64)
        block = np.full(n, -1, dtype=np.int64)  # -1: d itself, before any flip
        positions = torch.arange(dims, device=device)[None, :]

        def next_attempt(rows: np.ndarray) -> None:
            """Move each row to its next block (the next level after the last block of one; the whole input
            again after the finest) and flip that block of its best direction."""
            size = -(-dims // 2 ** level[rows])
            tried = block[rows] >= 0
            block[rows] += 1
            end = np.minimum(dims, block[rows] * size)  # the tried block's end
            finished = tried & ((block[rows] == 2 ** level[rows]) | (end >= dims))
            level[rows] = np.where(finished, np.where(size == 1, 0, level[rows] + 1), level[rows])
            block[rows] = np.where(finished, 0, block[rows])
            size = -(-dims // 2 ** level[rows])
            start = torch.from_numpy(block[rows] * size).to(device)[:, None]
            stop = torch.from_numpy(np.minimum(dims, (block[rows] + 1) * size)).to(device)[:, None]
            flip = (positions >= start) & (positions < stop)
            index = torch.from_numpy(rows).to(device)
            attempt[index] = torch.where(flip, -sign[index], sign[index])

        while len(active := engine.active):
            index = torch.from_numpy(active).to(device)
            search = searching[index]
            at = torch.where(search, (low[index] + high[index]) / 2, radius[index].clamp_max(1.0))
            candidate = (x0[index] + at[:, None] * attempt[index]).clamp(0.0, 1.0)
            reply = engine.ask(active, candidate.view(shape))
            fooled = reply.answered & (reply.labels != engine.y[index])
            # A check that fools the judge at the best radius: search below it.
            found = ~search & fooled
            low[index[found]] = 0.0
            high[index[found]] = at[found]
            searching[index[found]] = True
            # A binary-search step.
            high[index[search & fooled]] = at[search & fooled]
            low[index[search & ~fooled]] = at[search & ~fooled]
            closed = search & (high[index] - low[index] <= tolerance)
            better = closed & (high[index] < radius[index])
            radius[index[better]] = high[index[better]]
            sign[index[better]] = attempt[index[better]]
            searching[index[closed]] = False
            moving = (closed | (~search & ~fooled)).cpu().numpy()
            if moving.any():
                next_attempt(active[moving])
        reached = torch.isfinite(radius)
        kept = (x0 + radius.clamp_max(self.eps)[:, None] * sign).clamp(0.0, 1.0)
        engine.keep(np.arange(n), torch.where(reached[:, None], kept, x0).view(shape))
        return engine.result()
