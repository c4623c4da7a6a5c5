"""A panel of judges voting, answering as one judge (`target=panel`): `target.members` seats, filled in turn by the
judges `target.judges` names (member i sits as the (i mod n)-th), and a vote (`target.vote`).

A judge gavel trains takes each of its seats with a seed of its own, derived from the run's (seat 0: the run's seed
itself, so a panel of one is the judge `target=cnn` trains, under the same cache key), trained and cached like any
judge; the training stage reaches every such seat (a poisoned pool trains them all; `train` recipes make robust
members). A judge of the user's own (`_target_: ...TorchScriptJudge`, ...) takes one seat: a second would be a copy of
its vote. Each is checked against the data as it would be alone, so a member with another class count is refused. A
sanitiser is refused (`JudgeSource.sanitisable`): it reads the one judge trained on the contributed pool.

- `mean_probabilities`: the panel returns the log of the members' mean probabilities (softmax of its output = their
  mean), differentiable: an open-weights attacker gets the panel's own gradients.
- `majority`: each member votes for its arg-max; the panel returns the log of each class's share of the votes (a
  class without a vote: `NO_VOTE_SHARE`), so an API serves vote shares as probabilities. A tie goes to the tied class
  of highest mean probability, which gets half a vote more. A count of votes has no useful gradient: the panel
  declares none (white-box attacks are refused; `mean_probabilities` is the vote they can attack).

Through the Oracle the panel is one judge: one query per row, whatever the number of members. What a query costs the
operator is measured, not assumed: `judge_forward_ms_per_row` (the panel) beside `judge_member_forward_ms_per_row`
(one member, the mean over its members), timed on the evaluation inputs when the panel is provided.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gavel.targets.datasets import Dataset, Pool
from gavel.targets.errors import SourceError
from gavel.targets.judges.base import Capabilities, JudgeSource, ProvidedJudge
from gavel.targets.params import SEED_MAX, BadValue, PositiveInt
from gavel.targets.training import predict_labels, spec_key

Vote = Literal["mean_probabilities", "majority"]

SEAT_SEED_STRIDE = 0x9E3779B1
"""Seat i trains with the run's seed + i x this (mod 2^32): odd, so the first 2^32 seats' seeds all differ."""
NO_VOTE_SHARE = 1e-6
"""The share a class without a vote is given under `majority` (its log stays finite)."""
TIE_BREAK = 0.5
"""The extra vote a tie's winner gets: less than one, so it never outweighs a real vote."""
NO_GRADIENTS = Capabilities(gradients=False, scores=True)
TIMED_ROWS = 256
"""Rows per timed forward pass (the Oracle's default batch)."""
TIMED_ROUNDS = 15
TIMING_BUDGET_S = 2.0
"""Timing stops after this many seconds (at least 3 rounds after a warm-up): a big judge costs no more to time."""


def seat_seed(seed: int, seat: int) -> int:
    """The seed member `seat` is trained with: the run's own for seat 0, a distinct one for every other."""
    return (int(seed) + seat * SEAT_SEED_STRIDE) % (SEED_MAX + 1)


class Panel(nn.Module):
    """Members voting as one judge: inputs in [0, 1] (NCHW), one score per class (see the module docstring)."""

    def __init__(self, members: list[nn.Module], vote: Vote) -> None:
        super().__init__()
        if not members:
            raise ValueError("a panel needs at least one member")
        self.members = nn.ModuleList(members)
        self.vote = vote

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.vote == "majority":
            with torch.no_grad():
                return self._majority(x)
        return self._mean_log_probabilities(self._scores(x))

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's scores: [members, rows, classes]."""
        return torch.stack([member(x).float() for member in self.members])

    def _mean_log_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(torch.log_softmax(scores, dim=-1), dim=0) - math.log(len(self.members))

    def _majority(self, x: torch.Tensor) -> torch.Tensor:
        scores = self._scores(x)
        n_classes = scores.shape[-1]
        votes = F.one_hot(scores.argmax(dim=-1), n_classes).sum(dim=0).float()
        tied = votes == votes.max(dim=1, keepdim=True).values
        winner = self._mean_log_probabilities(scores).masked_fill(~tied, -math.inf).argmax(dim=1)
        is_tie = (tied.sum(dim=1, keepdim=True) > 1).float()
        votes = votes + TIE_BREAK * is_tie * F.one_hot(winner, n_classes).float()
        return torch.log((votes / len(self.members)).clamp_min(NO_VOTE_SHARE))


class PanelJudge(JudgeSource):
    sanitisable = False

    def __init__(self, *, members: PositiveInt = 3, vote: Vote = "mean_probabilities",
                 judges: Mapping[str, JudgeSource]) -> None:  # fmt: skip
        if not judges:
            raise BadValue("judges", {}, "one judge or more, each NAME: {_target_: a judge source, ...}")
        self.members = int(members)
        self.vote = vote
        self.judges = dict(judges)
        names = list(self.judges)
        for position, name in enumerate(names):
            if not self.judges[name].trained_on_the_data and self.members > position + len(names):
                raise BadValue(
                    "members", self.members, f"at most {position + len(names)} with these judges",
                    f"judges.{name} was trained elsewhere: a second seat would be a copy of its vote",
                )  # fmt: skip
        shapes = {tuple(s.input_shape) for s in self.judges.values() if s.input_shape is not None}
        if len(shapes) > 1:
            raise BadValue(
                "judges", names, "judges that take one input shape", f"they declare {sorted(map(list, shapes))}"
            )
        self.trained_on_the_data = any(source.trained_on_the_data for source in self.judges.values())
        self._ready: dict[str, ProvidedJudge] = {}
        """The judges ready when prepared (the user's own), by name."""

    @property
    def seats(self) -> list[str]:
        """The judge that fills each seat, by name."""
        names = list(self.judges)
        return [names[seat % len(names)] for seat in range(self.members)]

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        declared = [source.input_shape for source in self.judges.values() if source.input_shape is not None]
        return declared[0] if declared else None

    @property
    def adversarial(self) -> str | None:
        """Its members' robust training, each kind once (`pgd`, `pgd+trades`); None where all train naturally."""
        kinds = dict.fromkeys(self.judges[name].adversarial for name in self.seats)
        return "+".join(kind for kind in kinds if kind) or None

    @property
    def capabilities(self) -> Capabilities:
        """A majority vote: no gradients; a mean of probabilities: what every member offers (a judge of the user's
        own as prepared; one gavel trains, as its source says)."""
        if self.vote == "majority":
            return NO_GRADIENTS
        offered = [
            self._ready[name].capabilities if name in self._ready else self.judges[name].capabilities
            for name in dict.fromkeys(self.seats)
        ]
        return Capabilities(gradients=all(c.gradients for c in offered), scores=all(c.scores for c in offered))

    def prepare(self, data: Dataset, device: str) -> ProvidedJudge | None:
        """Each judge prepared as it would be alone (errors name its key under `target.judges`); the panel itself
        where none is trained by gavel, else None (the run trains the others)."""
        self._ready = {}
        for name in dict.fromkeys(self.seats):
            try:
                ready = self.judges[name].prepare(data, device)
            except SourceError as error:
                raise SourceError(_under(f"target.judges.{name}", str(error))) from None
            if ready is not None:
                if self.vote == "mean_probabilities" and not ready.capabilities.scores:
                    raise SourceError(
                        f"target.vote=mean_probabilities: target.judges.{name} ({ready.description}) answers with a "
                        "label only; allowed: target.vote=majority"
                    )
                self._ready[name] = ready
        if len(self._ready) < len(set(self.seats)):
            return None
        return self._panel([self._ready[name] for name in self.seats], data, device)

    def provide(self, data: Dataset, seed: int, cache_dir: Path, device: str) -> ProvidedJudge:
        return self.train_on(data.judge, data, seed, cache_dir, device)

    def train_on(
        self, pool: Pool, data: Dataset, seed: int, cache_dir: Path, device: str, provenance: dict | None = None
    ) -> ProvidedJudge:
        """Every seat of a judge gavel trains trained (or loaded from the cache) on `pool` with its seat's seed; the
        others as prepared."""
        seated = [
            self._ready[name]
            if name in self._ready
            else self.judges[name].train_on(pool, data, seat_seed(seed, seat), cache_dir, device, provenance)
            for seat, name in enumerate(self.seats)
        ]
        return self._panel(seated, data, device, pool)

    def _panel(
        self, seated: list[ProvidedJudge], data: Dataset, device: str, pool: Pool | None = None
    ) -> ProvidedJudge:
        panel = Panel([judge.model for judge in seated], self.vote).to(device).eval()
        names = self.seats
        keys = [_key_of(judge, name) for judge, name in zip(seated, names)]
        trained = [judge for judge in seated if "judge_cache" in judge.tags]
        tags = {
            "judge_key": spec_key({"panel": keys, "vote": self.vote}),
            "judge.members": str(self.members),
            "judge.vote": self.vote,
            "judge.panel": ", ".join(names),
            "judge.member_keys": ", ".join(keys),
        }
        if trained:
            tags["judge_cache"] = "hit" if all(j.tags["judge_cache"] == "hit" for j in trained) else "miss"
        robust = dict.fromkeys(j.tags.get("judge.adversarial_training") for j in seated)
        if any(robust):
            tags["judge.adversarial_training"] = "; ".join(kind for kind in robust if kind)
        panel_ms, *members_ms = forward_ms_per_row([panel, *(judge.model for judge in seated)], data.eval.x, device)
        figures = {
            "judge_members": float(self.members),
            "judge_forward_ms_per_row": panel_ms,
            "judge_member_forward_ms_per_row": statistics.fmean(members_ms),
        }
        if pool is not None:
            figures["judge_train_accuracy"] = float((predict_labels(panel, pool.x, device=device) == pool.y).mean())
        seconds = [judge.figures.get("judge_train_seconds") for judge in trained]
        if trained and None not in seconds:
            figures["judge_train_seconds"] = float(sum(seconds))
        description = f"a panel of {self.members} ({', '.join(names)}) voting by {self.vote.replace('_', ' ')}"
        return ProvidedJudge(panel, capabilities=self.capabilities, tags=tags, figures=figures, description=description)


def _key_of(judge: ProvidedJudge, name: str) -> str:
    """What pins a member: its cache key (a judge gavel trains), its file's SHA-256 or its registry URI."""
    for tag in ("judge_key", "judge.sha256", "judge.uri"):
        if tag in judge.tags:
            return judge.tags[tag]
    return name


def _under(prefix: str, message: str) -> str:
    """A member's one-line error with its keys under the panel's: `target.path=...` -> `target.judges.X.path=...`."""
    if message.startswith("target."):
        return prefix + message.removeprefix("target")
    return f"{prefix}: {message}"


@torch.no_grad()
def forward_ms_per_row(models: list[nn.Module], x, device: str) -> list[float]:
    """Each model's wall-clock milliseconds per row of one forward pass over `TIMED_ROWS` rows of `x` (numpy): the
    median over rounds that time every model once in turn (so that a busy moment of the machine lands on all of them
    alike), after a warm-up round; up to `TIMED_ROUNDS` rounds, within `TIMING_BUDGET_S`."""
    inputs = torch.from_numpy(x[:TIMED_ROWS]).to(device)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    times: list[list[float]] = [[] for _ in models]
    started = time.perf_counter()
    for round_ in range(TIMED_ROUNDS + 1):
        if round_ > 3 and time.perf_counter() - started > TIMING_BUDGET_S:
            break
        for model, kept in zip(models, times):
            begin = time.perf_counter()
            model(inputs)
            sync()
            if round_:  # the first round warms up
                kept.append(time.perf_counter() - begin)
    return [1000.0 * statistics.median(kept) / max(len(inputs), 1) for kept in times]
