"""Square attack (Andriushchenko et al., 2020), score-based: random square-shaped updates at the corners of the
eps-ball, kept when they lower the margin of the true verdict. gavel's batched implementation (the default)
or ART's (`attack.backend=art`). `Square` is the L-inf attack, `SquareL2` the paper's L2 one.

gavel's Square spends each example's budget: its schedule of square sizes is planned for the queries the
example may ask, and when `max_iter` is shorter than that it restarts from a fresh random start.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
import torch
from art.attacks.evasion import SquareAttack
from art.estimators.classification import BlackBoxClassifierNeuralNetwork

from gavel.attacks.base import AttackerKit, AttackResult
from gavel.attacks.query.base import QueryAttack
from gavel.targets.access import SCORE_BASED
from gavel.targets.params import PositiveInt, Range

# (iteration on a 10,000-iteration schedule, divisor of p_init from then on): the paper's schedule
P_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


ADAPT_GROWTH = 2.0
"""An adaptive attacker's widening per rejected query (OARS's adaptive exploration, in Square's terms)."""


def square_fraction(p_init: float, iteration: np.ndarray, n_iterations: np.ndarray) -> np.ndarray:
    """The share of the image each example's next square covers: p_init halved along the schedule."""
    scaled = (iteration / np.maximum(n_iterations, 1) * 10_000).astype(np.int64)
    divisor = np.full(len(scaled), 512.0)
    for bound, div in reversed(P_SCHEDULE):
        divisor = np.where(scaled <= bound, float(div), divisor)
    return p_init / divisor


def margin(scores: torch.Tensor, labels: torch.Tensor, target: int | None) -> torch.Tensor:
    """How far each answer is from fooling the judge (below zero: fooled): the true (or target) score over the
    best other one."""
    picked = scores.gather(1, labels[:, None]).squeeze(1)
    others = scores.scatter(1, labels[:, None], -math.inf).amax(dim=1)
    return others - picked if target is not None else picked - others


class Square(QueryAttack):
    threat_model = SCORE_BASED
    start = "centre"
    backends = ("gavel", "art")
    engine_name = "square"

    def __init__(
        self,
        *,
        eps: float,
        max_iter: PositiveInt = 1000,
        p_init: Annotated[float, Range(above=0, maximum=1)] = 0.8,
        **common,
    ) -> None:
        super().__init__(eps=eps, **common)
        self.max_iter = max_iter
        self.p_init = p_init

    def library_attack(self, estimator, budget):
        # Square's square-size schedule is a fraction of max_iter: an attacker who knows its budget
        # plans for it (about one query per iteration once repeated inputs are not bought twice).
        max_iter = self.max_iter if budget is None else min(self.max_iter, budget)
        return SquareAttack(
            estimator,
            norm=np.inf if self.norm == "inf" else 2,
            eps=self.eps,
            max_iter=max_iter,
            p_init=self.p_init,
            nb_restarts=1,
            verbose=False,
        )

    def run_batched(self, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> AttackResult:
        engine = self.engine(self.engine_name, x, y, kit)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        x0 = engine.x
        n = len(x0)
        labels = engine.y if self.target_class is None else torch.full_like(engine.y, self.target_class)
        delta = torch.zeros_like(x0)
        best = torch.full((n,), math.inf, device=x0.device)
        iteration = np.zeros(n, dtype=np.int64)
        schedule = np.zeros(n, dtype=np.int64)
        fresh = np.ones(n, dtype=bool)  # needs a (re)start: a first candidate and its answer
        while len(active := engine.active):
            starting = active[fresh[active]]
            if len(starting):
                delta[starting] = self._start(kit, x0, starting, generator)
                candidate = (x0[starting] + delta[starting]).clamp(0.0, 1.0)
                reply = engine.ask(starting, candidate)
                best[starting] = torch.where(
                    reply.answered, margin(reply.scores, labels[starting], self.target_class), math.inf
                )
                schedule[starting] = np.minimum(self.max_iter, np.maximum(engine.left[starting], 1))
                iteration[starting] = 0
                fresh[starting] = False
                continue
            p = square_fraction(self.p_init, iteration[active], schedule[active])
            if self.adaptive:  # each rejection doubles the square's share: the next queries differ more
                p = np.minimum(p * ADAPT_GROWTH ** np.minimum(engine.rejections[active], 64), 1.0)
            proposal = self._propose(x0[active], delta[active], p, generator)
            candidate = (x0[active] + proposal).clamp(0.0, 1.0)
            reply = engine.ask(active, candidate)
            loss = torch.where(reply.answered, margin(reply.scores, labels[active], self.target_class), math.inf)
            better = loss < best[active]
            index = torch.from_numpy(active).to(x0.device)
            delta[index[better]] = proposal[better]
            best[index[better]] = loss[better]
            iteration[active] += 1
            fresh[active] = iteration[active] >= schedule[active]  # the schedule ran out: a fresh random start
        engine.keep(np.arange(n), (x0 + delta).clamp(0.0, 1.0))
        return engine.result()

    def _propose(self, x0: torch.Tensor, delta: torch.Tensor, p: np.ndarray, generator) -> torch.Tensor:
        """The next perturbation to try for each example (`x0` its original, `delta` its best perturbation so
        far, `p` the share of the image its square covers)."""
        height, width = x0.shape[2:]
        proposal = delta.clone()
        sides = np.clip(np.round(np.sqrt(p * height * width)).astype(np.int64), 1, max(height - 1, 1))
        for side in np.unique(sides):
            group = np.flatnonzero(sides == side)
            proposal[group] = self._new_square(proposal[group], int(side), height, width, generator)
        return proposal

    def _start(self, kit, x0, rows, generator) -> torch.Tensor:
        """A hybrid attacker's transfer example, or the paper's vertical stripes of +-eps."""
        channels, width = x0.shape[1], x0.shape[3]
        starts = [kit.start(int(i)) for i in rows]
        stripes = torch.randint(0, 2, (len(rows), channels, 1, width), generator=generator).float() * 2 - 1
        delta = (self.eps * stripes).to(x0.device).expand(-1, -1, x0.shape[2], -1).clone()
        for k, start in enumerate(starts):
            if start is not None:
                delta[k] = (torch.from_numpy(start).to(x0.device) - x0[rows[k]]).clamp(-self.eps, self.eps)
        return delta

    def _new_square(self, delta: torch.Tensor, side: int, height: int, width: int, generator) -> torch.Tensor:
        """Each example's perturbation with one side x side window set to +-eps per channel (a window equal to
        what is there already is flipped, so that every query asks something new)."""
        k, channels = delta.shape[:2]
        top = torch.randint(0, height - side + 1, (k,), generator=generator)
        left = torch.randint(0, width - side + 1, (k,), generator=generator)
        signs = (torch.randint(0, 2, (k, channels), generator=generator).float() * 2 - 1).to(delta.device)
        rows = torch.arange(height)[None, :]
        cols = torch.arange(width)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
        window = (in_rows[:, :, None] & in_cols[:, None, :]).to(delta.device)[:, None]  # [k, 1, H, W]
        values = (self.eps * signs)[:, :, None, None].expand_as(delta)
        unchanged = ((delta - values).abs() < 1e-7) | ~window
        same = unchanged.flatten(1).all(dim=1)
        values = torch.where(same[:, None, None, None], -values, values)
        return torch.where(window, values, delta)


def pseudo_gaussian(rows: int, cols: int) -> torch.Tensor:
    """The paper's centred pyramid: nested rectangles around the centre, the k-th weighted 1 / (k + 1)^2,
    of unit L2 norm."""
    delta = torch.zeros(rows, cols, dtype=torch.float64)
    top, left = rows // 2, cols // 2
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        weight = 1.0 / (k + 1) ** 2
        delta[max(top, 0) : min(top + 2 * k + 1, rows), max(left, 0) : min(left + 2 * k + 1, cols)] += weight
        top, left = top - 1, left - 1
    return delta / delta.norm().clamp_min(1e-12)


def meta_pseudo_gaussian(side: int) -> torch.Tensor:
    """[2, side, side]: the paper's L2 update, a pyramid over its upper half and its negative over the lower
    half, of unit L2 norm; [1] is its transpose."""
    delta = torch.zeros(side, side, dtype=torch.float64)
    if side // 2:
        delta[: side // 2] = pseudo_gaussian(side // 2, side)
    delta[side // 2 :] = -pseudo_gaussian(side - side // 2, side)
    delta = delta / delta.norm().clamp_min(1e-12)
    return torch.stack([delta, delta.T]).float()


class SquareL2(Square):
    """The L2 Square attack: the perturbation always has L2 norm eps (before clipping to [0, 1]). It starts
    from the paper's grid of pseudo-Gaussian bumps with random signs; each step gives one window a fresh
    pseudo-Gaussian bump (plus what it held) and empties a second window, moving the second window's mass
    (and whatever clipping lost) into the first, so that the norm stays eps."""

    norm = "2"
    engine_name = "square_l2"

    def library_attack(self, estimator, budget):
        return super().library_attack(_original_for_nan(estimator), budget)

    def _start(self, kit, x0, rows, generator) -> torch.Tensor:
        """A hybrid attacker's transfer example (projected into the ball), or the paper's tiles of
        pseudo-Gaussian bumps with random signs per example and channel, scaled to eps."""
        k = len(rows)
        channels, height, width = x0.shape[1:]
        side = max(height // 5, 1)
        offset = (height - side * 5) // 2 if height >= 5 else 0
        bump = meta_pseudo_gaussian(side)
        delta = torch.zeros(k, channels, height, width)
        for row in range(offset, height, side):
            for col in range(offset, width, side):
                signs = torch.randint(0, 2, (k, channels), generator=generator).float() * 2 - 1
                turn = torch.randint(0, 2, (k,), generator=generator)
                patch = bump[turn][:, None] * signs[:, :, None, None]
                rows_in, cols_in = min(side, height - row), min(side, width - col)
                delta[:, :, row : row + rows_in, col : col + cols_in] += patch[:, :, :rows_in, :cols_in]
        delta = delta.to(x0.device)
        given = torch.zeros(k, dtype=torch.bool, device=x0.device)
        for j, start in enumerate(kit.start(int(i)) for i in rows):
            if start is not None:
                delta[j] = torch.from_numpy(start).to(x0.device) - x0[rows[j]]
                given[j] = True
        return self._scaled(x0[torch.from_numpy(np.asarray(rows)).to(x0.device)], delta, shrink_only=given)

    def _scaled(self, x0: torch.Tensor, delta: torch.Tensor, shrink_only: torch.Tensor | None = None) -> torch.Tensor:
        """`delta` rescaled to L2 norm eps (where `shrink_only`, a hybrid's start: only shrunk into the ball),
        then clipped so that x0 + delta lies in [0, 1]."""
        scale = self.eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        if shrink_only is not None:
            scale = torch.where(shrink_only, scale.clamp_max(1.0), scale)
        return (x0 + delta * scale[:, None, None, None]).clamp(0.0, 1.0) - x0

    def _propose(self, x0: torch.Tensor, delta: torch.Tensor, p: np.ndarray, generator) -> torch.Tensor:
        k, channels, height, width = x0.shape
        sides = np.maximum(np.round(np.sqrt(p * height * width)).astype(np.int64), 3)
        sides += 1 - sides % 2  # odd, as in the paper
        largest = height if height % 2 else height - 1
        sides = np.minimum(sides, max(min(largest, width), 1))
        proposal = delta.clone()
        for side in np.unique(sides):
            group = np.flatnonzero(sides == side)
            proposal[group] = self._move_mass(x0[group], delta[group], int(side), generator)
        return proposal

    def _move_mass(self, x0: torch.Tensor, delta: torch.Tensor, side: int, generator) -> torch.Tensor:
        """One step of the paper's L2 update for examples that share the window side."""
        k, channels, height, width = delta.shape
        device = delta.device
        top1 = torch.randint(0, height - side + 1, (k,), generator=generator)
        left1 = torch.randint(0, width - side + 1, (k,), generator=generator)
        top2 = torch.randint(0, height - side + 1, (k,), generator=generator)
        left2 = torch.randint(0, width - side + 1, (k,), generator=generator)
        signs = (torch.randint(0, 2, (k, channels), generator=generator).float() * 2 - 1).to(device)
        turn = torch.randint(0, 2, (k,), generator=generator)
        bump = meta_pseudo_gaussian(side)[turn].to(device)  # [k, side, side]
        window1 = _window(top1, left1, side, height, width).to(device)  # [k, 1, H, W]
        window2 = _window(top2, left2, side, height, width).to(device)
        norm_image = delta.flatten(1).norm(dim=1)  # [k]
        norm_window1 = (delta * window1).flatten(2).norm(dim=2)  # [k, channels]
        norm_windows = (delta * (window1 | window2)).flatten(2).norm(dim=2)
        span = torch.arange(side)
        rows = (top1[:, None] + span).to(device)[:, None, :, None]
        cols = (left1[:, None] + span).to(device)[:, None, None, :]
        batch = torch.arange(k, device=device)[:, None, None, None]
        chans = torch.arange(channels, device=device)[None, :, None, None]
        old = delta[batch, chans, rows, cols]  # [k, channels, side, side]
        new = bump[:, None] * signs[:, :, None, None] + old / (1e-10 + norm_window1[:, :, None, None])
        slack = (self.eps**2 - norm_image**2).clamp_min(0.0)[:, None] / channels
        mass = (slack + norm_windows**2).sqrt()  # [k, channels]
        new = new / new.flatten(2).norm(dim=2).clamp_min(1e-12)[:, :, None, None] * mass[:, :, None, None]
        moved = torch.where(window2, torch.zeros_like(delta), delta)
        moved[batch, chans, rows, cols] = new
        return self._scaled(x0, moved)


def _window(top: torch.Tensor, left: torch.Tensor, side: int, height: int, width: int) -> torch.Tensor:
    """[k, 1, height, width] bool: each example's side x side window at (top, left)."""
    rows = torch.arange(height)[None, :]
    cols = torch.arange(width)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _original_for_nan(estimator: BlackBoxClassifierNeuralNetwork) -> BlackBoxClassifierNeuralNetwork:
    """ART's L2 Square starts from tiles of side height // 5, each normalised by its own norm: on images under
    10 pixels high the tiles are empty and its whole first candidate is NaN, which the API refuses. The
    attacker sends the original instead (the first input ART asks about, answered from its own record), so
    that ART's start is simply no perturbation."""
    first: list[np.ndarray] = []

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=np.float32, copy=True)
        if not first:
            first.append(x[0].copy())
        broken = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        x[broken] = first[0]
        return estimator.predict(x)

    return BlackBoxClassifierNeuralNetwork(
        predict, estimator.input_shape, estimator.nb_classes, clip_values=estimator.clip_values
    )
