"""SimBA (Guo et al., 2019) in the pixel basis, L-inf, score-based: gavel's batched implementation (the default)
or ART's (`attack.backend=art`).

gavel's SimBA walks each example's pixels in its own random order; at each step every example in play tries
+eps on its next pixel (one call for all of them), and those whose true-class probability (for a targeted
attack: the target's, upwards) did not improve try -eps (a second call); improvements are kept. One pass
moves each pixel at most once, so every query lies within eps of the original. When a pass ends before the
budget, a fresh pass starts from the original in a new random order, so that the budget is spent; the input
with the lowest true-class probability seen over all passes is submitted if the judge was never fooled.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from art.attacks.evasion import SimBA as ArtSimBA
from art.estimators.classification import BlackBoxClassifierNeuralNetwork
from art.utils import to_categorical

from gavel.attacks.base import AttackerKit, AttackResult
from gavel.attacks.query.base import QueryAttack
from gavel.targets.access import SCORE_BASED
from gavel.targets.params import PositiveInt


class SimBA(QueryAttack):
    threat_model = SCORE_BASED
    supports_targeted = True
    start = "centre"
    backends = ("gavel", "art")

    def __init__(
        self, *, eps: float, max_iter: PositiveInt = 10000, order: Literal["random", "diag"] = "random", **common
    ) -> None:
        super().__init__(eps=eps, **common)
        self.max_iter = max_iter
        self.order = order

    def library_attack(self, estimator, budget):
        # Each iteration moves one pixel by +-eps, in an order drawn without repetition over the pixels; past
        # the pixel count ART starts a second pass, which could move a pixel to 2 eps: stop before it.
        n_pixels = int(np.prod(estimator.input_shape))
        return ArtSimBA(
            _probabilities(estimator),
            attack="px",
            max_iter=min(self.max_iter, n_pixels),
            order=self.order,
            epsilon=self.eps,
            targeted=self.targeted,
            verbose=False,
        )

    def run_batched(self, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> AttackResult:
        if self.eps <= 0:
            raise ValueError("SimBA needs attack.eps > 0: a step of 0 asks nothing new")
        engine = self.engine("simba", x, y, kit)
        x0 = engine.x.flatten(1)
        n, n_dims = x0.shape
        device = x0.device
        low, high = (x0 - self.eps).clamp_min(0.0), (x0 + self.eps).clamp_max(1.0)
        centre = x0.clone()  # where each pass starts: the original, or a hybrid attacker's start in the ball
        for i in range(n):
            start = kit.start(i)
            if start is not None:
                centre[i] = torch.from_numpy(np.asarray(start, dtype=np.float32)).to(device).flatten()
        centre = torch.minimum(torch.maximum(centre, low), high)
        labels = engine.y if self.target_class is None else torch.full_like(engine.y, self.target_class)
        softmax = engine.client.policy.output == "logits"  # the attacker turns logits into probabilities

        def loss(reply, rows) -> torch.Tensor:
            """Lower is better: the true class's probability, or minus the target's; inf where unanswered."""
            scores = reply.scores.softmax(dim=1) if softmax else reply.scores
            picked = scores.gather(1, labels[torch.from_numpy(rows).to(device)][:, None]).squeeze(1)
            picked = picked if self.target_class is None else -picked
            return torch.where(reply.answered, picked, torch.inf)

        current, current_loss = centre.clone(), torch.full((n,), torch.inf, device=device)
        centre_loss = torch.full((n,), torch.inf, device=device)
        best, best_loss = centre.clone(), torch.full((n,), torch.inf, device=device)
        pass_length = min(self.max_iter, n_dims)
        orders = np.zeros((n, n_dims), dtype=np.int64)
        passes = np.zeros(n, dtype=np.int64)
        position = np.full(n, pass_length, dtype=np.int64)  # past the end: a pass starts at the first step
        known = np.zeros(n, dtype=bool)  # whether the start's answer has been bought

        def keep_best(rows: np.ndarray) -> None:
            index = torch.from_numpy(rows).to(device)
            better = current_loss[index] < best_loss[index]
            best[index[better]] = current[index[better]]
            best_loss[index[better]] = current_loss[index[better]]

        while len(active := engine.active):
            asking = active[~known[active]]
            if len(asking):
                index = torch.from_numpy(asking).to(device)
                centre_loss[index] = loss(engine.ask(asking, centre[index].view(-1, *x.shape[1:])), asking)
                known[asking] = True
                continue
            for i in active[position[active] >= pass_length]:  # a fresh pass from the start, in a new order
                orders[i] = self._order(x.shape[1:], int(i), int(passes[i]))
                passes[i] += 1
                position[i] = 0
                current[i] = centre[i]
                current_loss[i] = centre_loss[i]
            pixel = torch.from_numpy(orders[active, position[active]]).to(device)
            index = torch.from_numpy(active).to(device)
            improved = torch.zeros(len(active), dtype=torch.bool, device=device)
            for sign in (1.0, -1.0):
                trying = ~improved
                value = current[index, pixel] + sign * self.eps
                value = torch.minimum(torch.maximum(value, low[index, pixel]), high[index, pixel])
                trying &= value != current[index, pixel]  # a step the box clips away asks nothing
                if not trying.any():
                    continue
                k = torch.nonzero(trying).squeeze(1)
                rows = active[k.cpu().numpy()]
                candidate = current[index[k]].clone()
                candidate[torch.arange(len(k), device=device), pixel[k]] = value[k]
                got = loss(engine.ask(rows, candidate.view(-1, *x.shape[1:])), rows)
                better = got < current_loss[index[k]]
                current[index[k[better]]] = candidate[better]
                current_loss[index[k[better]]] = got[better]
                improved[k[better]] = True
            position[active] += 1
            keep_best(active)
        engine.keep(np.arange(n), best.view(-1, *x.shape[1:]))
        return engine.result()

    def _order(self, shape: tuple[int, ...], row: int, pass_number: int) -> np.ndarray:
        """The pixels of one pass, in an order drawn from the seed, the example's row and the pass: random, or
        by anti-diagonals of the image (top-left first), randomised within each."""
        rng = np.random.default_rng([self.seed, row, pass_number])
        n_dims = int(np.prod(shape))
        if self.order == "random":
            return rng.permutation(n_dims)
        channels, height, width = shape
        diagonal = (np.arange(height)[:, None] + np.arange(width)[None, :])[None].repeat(channels, axis=0).ravel()
        return np.lexsort((rng.random(n_dims), diagonal))

    def generate(self, attack, x, y, adversarial, kit):
        # ART's SimBA reads `y` as one-hot rows (the target's, when targeted).
        return attack.generate(x, y=to_categorical(y, attack.estimator.nb_classes))


def _probabilities(estimator) -> BlackBoxClassifierNeuralNetwork:
    """ART's SimBA refuses scores that are not probabilities; an attacker handed logits applies the softmax
    itself, on its side of the API."""
    if estimator.client.policy.output != "logits":
        return estimator

    def predict(x: np.ndarray) -> np.ndarray:
        logits = estimator.predict(x).astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    return BlackBoxClassifierNeuralNetwork(
        predict, estimator.input_shape, estimator.nb_classes, clip_values=estimator.clip_values
    )
