"""HopSkipJump (Chen, Jordan and Wainwright, 2020), decision-based: labels suffice. L-inf (`HopSkipJump`) or L2
(`HopSkipJumpL2`), from gavel's batched implementation (the default), ART or foolbox (`attack.backend`).

gavel's HopSkipJump follows the paper and the authors' code (as ART does): a start that fools the judge
(the hybrid attacker's transfer example, the attacker's own image of the target class, or uniform noise),
a binary search towards the original; then per iteration t a binary search to the boundary, a gradient-
direction estimate there from min(max_eval, init_eval * sqrt(t + 1)) random probes (the sign of each answer,
baseline-subtracted), and a geometric step-size search (halved until the step still fools the judge). Every
example in play advances in the same step: each call holds the rows of every example, whatever phase it is
in. HopSkipJump minimises the perturbation and succeeds once an input it asks fools the judge within eps; it
spends each budget in full: no start found after `init_size` tries, it keeps drawing fresh ones, and after
`max_iter` iterations it restarts from fresh noise (keeping the closest adversarial input it has seen).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
from art.attacks.evasion import HopSkipJump as ArtHopSkipJump
from foolbox.attacks import HopSkipJumpAttack, LinearSearchBlendedUniformNoiseAttack

from gavel.attacks.adapters import foolbox as foolbox_adapter
from gavel.attacks.adapters.art import SeededInitialSample
from gavel.attacks.base import AttackerKit, AttackResult
from gavel.attacks.query.base import QueryAttack
from gavel.attacks.query.engine import QueryEngine
from gavel.targets.access import DECISION_BASED
from gavel.targets.params import PositiveInt

FOOLBOX_BLEND_STEPS = 50
"""foolbox's own HopSkipJump start: the first of this many blends towards random noise that fools the judge."""

# The phase each example is in (gavel's backend).
INIT, BLEND, SEARCH, GRADIENT, STEP = range(5)
"""INIT: asking a start; BLEND: binary search of a fresh start towards the original (on the blend, as the
authors do); SEARCH: an iteration's binary search to the boundary (on the attack's norm); GRADIENT: the probes;
STEP: the step-size search."""
START_THRESHOLD = 0.001
"""The blend binary search's precision for a fresh start (the authors' and ART's)."""
FIRST_DELTA = 0.1
"""The probes' radius at an iteration 0 (the authors' and ART's, for inputs in [0, 1])."""
ADAPT_GROWTH = 2.0
"""An adaptive attacker's widening of its probe radius per rejected query (OARS's adaptive exploration), up to
the diagonal of the input space (a probe farther away is clipped back into it anyway)."""
MAX_HALVINGS = 30
"""The step-size search gives up after this many halvings (the boundary point it steps from fools the judge)."""
MAX_PROBE_VALUES = 2**25
"""At most this many input values of gradient probes in one call (128 MiB of float32): the examples past it
wait for the next call."""


class HopSkipJump(QueryAttack):
    threat_model = DECISION_BASED
    supports_targeted = True
    start = "adversarial"
    backends = ("gavel", "art", "foolbox")

    def __init__(
        self,
        *,
        eps: float,
        max_iter: PositiveInt = 50,
        max_eval: PositiveInt = 1000,
        init_eval: PositiveInt = 100,
        init_size: PositiveInt = 100,
        **common,
    ) -> None:
        super().__init__(eps=eps, **common)
        self.max_iter = max_iter
        self.max_eval = max_eval
        self.init_eval = init_eval
        self.init_size = init_size

    def library_attack(self, estimator, budget):
        # HopSkipJump minimises the perturbation with no eps of its own: it runs until max_iter or the
        # budget stops it, and succeeds once any input it queries lies within eps and fools the judge.
        if self.backend == "foolbox":
            return foolbox_adapter.FoolboxQueryAttack(
                foolbox_adapter.OracleModel(estimator.predict),
                HopSkipJumpAttack(
                    steps=self.max_iter,
                    initial_gradient_eval_steps=self.init_eval,
                    max_gradient_eval_steps=self.max_eval,
                    constraint="linf" if self.norm == "inf" else "l2",
                ),
                targeted=self.targeted,
                init_attack=LinearSearchBlendedUniformNoiseAttack(directions=self.init_size, steps=FOOLBOX_BLEND_STEPS),
            )
        return _SeededHopSkipJump(
            estimator,
            targeted=self.targeted,
            norm=np.inf if self.norm == "inf" else 2,
            max_iter=self.max_iter,
            max_eval=self.max_eval,
            init_eval=self.init_eval,
            init_size=self.init_size,
            verbose=False,
        )

    # gavel's backend -------------------------------------------------------------------------------------

    def run_batched(self, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> AttackResult:
        engine = self.engine("hopskipjump", x, y, kit)
        run = _BatchedRun(self, engine, kit)
        while len(active := engine.active):
            run.step(active)
        engine.keep(np.arange(len(x)), self._project(run.best, engine.x))
        return engine.result()

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = (a - b).flatten(1)
        return diff.abs().amax(dim=1) if self.norm == "inf" else diff.norm(dim=1)

    def _project(self, x_adv: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """`Attack.project` in torch: into the eps-ball around `x0` and into [0, 1]."""
        if self.norm == "inf":
            x_adv = torch.minimum(torch.maximum(x_adv, x0 - self.eps), x0 + self.eps)
        else:
            delta = (x_adv - x0).flatten(1)
            scale = (self.eps / delta.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
            x_adv = x0 + (delta * scale[:, None]).view_as(x0)
        return x_adv.clamp(0.0, 1.0)


class HopSkipJumpL2(HopSkipJump):
    norm = "2"

    def __init__(self, *, eps: float = 1.0, **rest) -> None:
        super().__init__(eps=eps, **rest)


class _BatchedRun:
    """Per-example state of gavel's HopSkipJump, in tensors; `step` asks one call for every example in play."""

    def __init__(self, attack: HopSkipJump, engine: QueryEngine, kit: AttackerKit) -> None:
        self.attack = attack
        self.engine = engine
        self.kit = kit
        self.dev = engine.device
        self.x0 = engine.x
        n = len(self.x0)
        self.dim = int(self.x0[0].numel())
        # the binary search's precision (the authors' theta)
        self.theta = 0.01 / self.dim if attack.norm == "inf" else 0.01 / math.sqrt(self.dim)
        # one random stream per example, seeded by its key: an example asks the same questions whatever the
        # others do (and whatever its budget)
        self.generators = [
            torch.Generator(device=self.dev).manual_seed(_stream_seed(attack.seed, key)) for key in engine.keys
        ]
        self.own = self._own_images(kit)
        self.phase = np.full(n, INIT)
        self.tries = np.zeros(n, dtype=np.int64)  # starts tried since the last restart
        self.start_used = np.zeros(n, dtype=bool)  # the hybrid attacker's start was asked
        self.t = np.zeros(n, dtype=np.int64)  # iteration since the last restart
        self.halvings = np.zeros(n, dtype=np.int64)
        zeros = torch.zeros(n, device=self.dev)
        self.cur = self.x0.clone()  # the current adversarial point
        self.low, self.high, self.threshold, self.alpha = zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone()
        self.delta = zeros.clone()  # the probes' radius
        self.step_size = zeros.clone()
        self.update = torch.zeros_like(self.x0)
        self.best = self.x0.clone()  # the closest adversarial input seen (the original until one is)
        self.best_distance = torch.full((n,), math.inf, device=self.dev)
        if attack.targeted:
            self.wanted = torch.full((n,), attack.target_class, dtype=torch.int64, device=self.dev)
        else:
            self.wanted = engine.y

    def _own_images(self, kit: AttackerKit) -> torch.Tensor | None:
        """A targeted attacker's own images of the target class (its starts), if it holds any."""
        data = kit.attacker_data
        if not self.attack.targeted or data is None:
            return None
        own = data.x[data.y == self.attack.target_class]
        return torch.from_numpy(np.ascontiguousarray(own, dtype=np.float32)).to(self.dev) if len(own) else None

    def _adversarial(self, labels: torch.Tensor, answered: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        hit = labels == self.wanted[rows] if self.attack.targeted else labels != self.wanted[rows]
        return hit & answered

    # one call ---------------------------------------------------------------------------------------------

    def step(self, active: np.ndarray) -> None:
        parts: list[tuple[int, np.ndarray, np.ndarray, torch.Tensor, object]] = []
        for phase, build in (
            (INIT, self._ask_start),
            (BLEND, self._ask_search),
            (SEARCH, self._ask_search),
            (GRADIENT, self._ask_gradient),
            (STEP, self._ask_step),
        ):
            rows = active[self.phase[active] == phase]
            if phase == GRADIENT and len(rows):  # large estimates: the examples past the cap wait a call
                fits = np.cumsum(self._probe_counts(rows)) * self.dim <= MAX_PROBE_VALUES
                rows = rows[: max(1, int(fits.sum()))]
            if len(rows):
                row_of_each, candidates, extra = build(rows, phase)
                parts.append((phase, rows, row_of_each, candidates, extra))
        all_rows = np.concatenate([p[2] for p in parts])
        candidates = torch.cat([p[3] for p in parts]).clamp(0.0, 1.0)
        reply = self.engine.ask(all_rows, candidates)
        self._answered = reply.answered
        index = torch.from_numpy(all_rows).to(self.dev)
        adversarial = self._adversarial(reply.labels, reply.answered, index)
        self._keep_closest(index, candidates, adversarial)
        read = {
            INIT: self._read_start,
            BLEND: self._read_search,
            SEARCH: self._read_search,
            GRADIENT: self._read_gradient,
            STEP: self._read_step,
        }
        offset = 0
        for phase, rows, row_of_each, _, extra in parts:
            piece = slice(offset, offset + len(row_of_each))
            offset += len(row_of_each)
            self._piece = piece
            read[phase](rows, candidates[piece], adversarial[piece], extra)

    def _keep_closest(self, index: torch.Tensor, candidates: torch.Tensor, adversarial: torch.Tensor) -> None:
        distance = torch.where(adversarial, self.attack._distance(candidates, self.x0[index]), math.inf)
        closest = torch.full_like(self.best_distance, math.inf).scatter_reduce(0, index, distance, "amin")
        better = adversarial & (distance <= closest[index]) & (distance < self.best_distance[index])
        self.best[index[better]] = candidates[better]
        self.best_distance = torch.minimum(self.best_distance, closest)

    # starts -----------------------------------------------------------------------------------------------

    def _ask_start(self, rows: np.ndarray, phase: int):
        """The hybrid attacker's start (asked once); else, targeted, every other try one of the attacker's own
        images of the target class; else uniform noise."""
        shape = self.x0.shape[1:]
        candidates = torch.empty((len(rows), *shape), device=self.dev)
        from_start = np.zeros(len(rows), dtype=bool)
        for j, i in enumerate(rows):
            start = self.kit.start(int(i))
            if start is not None and not self.start_used[i]:
                candidates[j] = torch.from_numpy(np.asarray(start, dtype=np.float32)).to(self.dev)
                from_start[j] = True
                self.start_used[i] = True
            elif self.own is not None and self.tries[i] % 2 == 0:
                pick = torch.randint(len(self.own), (1,), generator=self.generators[i], device=self.dev)
                candidates[j] = self.own[pick[0]]
            else:
                candidates[j] = torch.rand(shape, generator=self.generators[i], device=self.dev)
        return rows, candidates, from_start

    def _read_start(self, rows, candidates, adversarial, from_start) -> None:
        found = adversarial.cpu().numpy()
        self.tries[rows[~found]] += 1
        self.tries[rows[self.tries[rows] >= self.attack.init_size]] = 0  # no start yet: fresh tries go on
        if not found.any():
            return
        index = torch.from_numpy(rows[found]).to(self.dev)
        self.cur[index] = candidates[adversarial]
        self.t[rows[found]] = 0
        given = rows[found & from_start]  # a given start walks straight to the boundary (as ART's does)
        self._begin_iteration(given, first=True)
        fresh = rows[found & ~from_start]
        self.phase[fresh] = BLEND
        index = torch.from_numpy(fresh).to(self.dev)
        self.low[index], self.high[index], self.threshold[index] = 0.0, 1.0, START_THRESHOLD

    # binary searches ----------------------------------------------------------------------------------------

    def _interpolate(self, rows: torch.Tensor, alpha: torch.Tensor, blend: bool) -> torch.Tensor:
        shape = (-1,) + (1,) * (self.x0.dim() - 1)
        x0, cur = self.x0[rows], self.cur[rows]
        if blend:
            a = alpha.view(shape)
            return (1 - a) * x0 + a * cur
        a = alpha.view(shape)
        return torch.minimum(torch.maximum(cur, x0 - a), x0 + a)

    def _blend(self, phase: int) -> bool:
        return phase == BLEND or self.attack.norm != "inf"

    def _ask_search(self, rows: np.ndarray, phase: int):
        index = torch.from_numpy(rows).to(self.dev)
        self.alpha[index] = (self.low[index] + self.high[index]) / 2
        return rows, self._interpolate(index, self.alpha[index], self._blend(phase)), phase

    def _read_search(self, rows, candidates, adversarial, phase) -> None:
        index = torch.from_numpy(rows).to(self.dev)
        alpha = self.alpha[index]
        self.high[index] = torch.where(adversarial, alpha, self.high[index])
        self.low[index] = torch.where(adversarial, self.low[index], alpha)
        done = ((self.high[index] - self.low[index]) <= self.threshold[index]).cpu().numpy()
        if not done.any():
            return
        finished = index[torch.from_numpy(done).to(self.dev)]
        self.cur[finished] = self._interpolate(finished, self.high[finished], self._blend(phase))
        if phase == BLEND:
            self._begin_iteration(rows[done], first=True)
        else:
            self.phase[rows[done]] = GRADIENT

    def _begin_iteration(self, rows: np.ndarray, first: bool) -> None:
        """Iteration t's probe radius, from the distance before its binary search (as the authors' code), and
        that search's bounds."""
        if not len(rows):
            return
        index = torch.from_numpy(rows).to(self.dev)
        distance = self.attack._distance(self.cur[index], self.x0[index])
        # the authors' delta: sqrt(d) * theta * dist (L2), d * theta * dist (L-inf): 0.01 * dist either way
        theta_scale = self.dim if self.attack.norm == "inf" else math.sqrt(self.dim)
        self.delta[index] = FIRST_DELTA if first else theta_scale * self.theta * distance
        self.low[index] = 0.0
        if self.attack.norm == "inf":
            self.high[index] = distance
            self.threshold[index] = torch.clamp(distance * self.theta, max=self.theta)
        else:
            self.high[index] = 1.0
            self.threshold[index] = self.theta
        self.phase[rows] = SEARCH

    # gradient estimate ---------------------------------------------------------------------------------------

    def _probe_counts(self, rows: np.ndarray) -> np.ndarray:
        """min(max_eval, init_eval * sqrt(t + 1)) probes for each example's iteration t."""
        counts = (self.attack.init_eval * np.sqrt(self.t[rows] + 1)).astype(np.int64)
        return np.minimum(self.attack.max_eval, counts).clip(min=1)

    def _ask_gradient(self, rows: np.ndarray, phase: int):
        counts = self._probe_counts(rows)
        each = np.repeat(rows, counts)
        local = torch.from_numpy(np.repeat(np.arange(len(rows)), counts)).to(self.dev)
        index = torch.from_numpy(each).to(self.dev)
        draw = torch.rand if self.attack.norm == "inf" else torch.randn
        noise = torch.cat(
            [
                draw((int(c), *self.x0.shape[1:]), generator=self.generators[i], device=self.dev)
                for i, c in zip(rows, counts)
            ]
        )
        if self.attack.norm == "inf":
            noise = noise * 2 - 1  # uniform on [-1, 1] (the authors' L-inf probes); Gaussian for L2
        view = (-1,) + (1,) * (self.x0.dim() - 1)
        noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
        delta = self.delta[index].view(view)
        if self.attack.adaptive:  # each rejection doubles the probe radius: probes farther apart, less alike
            rejections = np.minimum(self.engine.rejections[each], 64).astype(np.float32)  # 2**64: past any diagonal
            widen = torch.from_numpy(ADAPT_GROWTH**rejections).to(self.dev)
            diagonal = float(np.sqrt(np.prod(self.x0.shape[1:])))
            delta = (delta * widen.view(view)).clamp(max=diagonal)
        probes = (self.cur[index] + delta * noise).clamp(0.0, 1.0)
        return each, probes, (local, torch.from_numpy(counts).to(self.dev))

    def _read_gradient(self, rows, probes, adversarial, extra) -> None:
        local, counts = extra
        index = torch.from_numpy(rows).to(self.dev)
        view = (-1,) + (1,) * (self.x0.dim() - 1)
        directions = (probes - self.cur[index][local]) / self.delta[index][local].view(view)
        # A probe the operator's detector rejected says nothing: it carries no weight in the estimate.
        heard = self._answered[self._piece].float()
        sign = (adversarial.float() * 2 - 1) * heard
        counts = torch.zeros(len(rows), device=self.dev).index_add(0, local, heard).clamp_min(1.0)
        mean = torch.zeros(len(rows), device=self.dev).index_add(0, local, sign) / counts
        # baseline-subtracted; when every probe agrees, the mean direction (the authors' code)
        unanimous = (mean.abs() == 1.0)[local]
        weight = torch.where(unanimous, sign, sign - mean[local])
        grad = (
            torch.zeros((len(rows), self.dim), device=self.dev).index_add(
                0, local, weight[:, None] * directions.flatten(1)
            )
            / counts[:, None]
        )
        if self.attack.norm == "inf":
            update = grad.sign()
        else:
            update = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.update[index] = update.view_as(self.cur[index])
        distance = self.attack._distance(self.cur[index], self.x0[index])
        t = torch.from_numpy(self.t[rows]).to(self.dev, torch.float32)
        self.step_size[index] = 2.0 * distance / torch.sqrt(t + 1)
        self.halvings[rows] = 0
        self.phase[rows] = STEP

    # step size -------------------------------------------------------------------------------------------

    def _ask_step(self, rows: np.ndarray, phase: int):
        index = torch.from_numpy(rows).to(self.dev)
        self.step_size[index] = self.step_size[index] / 2
        view = (-1,) + (1,) * (self.x0.dim() - 1)
        candidates = (self.cur[index] + self.step_size[index].view(view) * self.update[index]).clamp(0.0, 1.0)
        return rows, candidates, None

    def _read_step(self, rows, candidates, adversarial, extra) -> None:
        taken = adversarial.cpu().numpy()
        index = torch.from_numpy(rows[taken]).to(self.dev)
        self.cur[index] = candidates[adversarial]
        self.halvings[rows[~taken]] += 1
        ended = taken | (self.halvings[rows] >= MAX_HALVINGS)
        finished = rows[ended]
        if not len(finished):
            return
        self.t[finished] += 1
        restart = finished[self.t[finished] >= self.attack.max_iter]
        self.phase[restart] = INIT  # max_iter reached: a fresh start, the closest input seen is kept
        self.tries[restart] = 0
        self._begin_iteration(finished[self.t[finished] < self.attack.max_iter], first=False)


def _stream_seed(seed: int, key) -> int:
    """Each example's stream, from the attack's seed and the example's key."""
    key = key if isinstance(key, (int, np.integer)) else zlib.crc32(repr(key).encode())
    return int(np.random.SeedSequence([seed, int(key)]).generate_state(1)[0])


class _SeededHopSkipJump(SeededInitialSample, ArtHopSkipJump):
    pass
