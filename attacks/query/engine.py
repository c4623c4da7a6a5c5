"""gavel's batched query engine: every example still in play advances in the same step.

An attack proposes candidate rows for many examples at once (`ask`); the attacker's client sends them as one
call, each row charged to its own example, and the engine reads the answers the way the attacker would: it
sees when an answer shows the judge fooled within eps (that example leaves the batch, its input and the query
count at which it was fooled recorded), and when a row was refused (its budget, or every account, is spent:
the example leaves too). An example leaves only then, so an attack that keeps proposing spends each budget in
full; with an unlimited budget `max_queries` caps each example so that a run always ends.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from gavel.attacks.base import AttackerKit, AttackResult, Goal, as_scores

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 0.5
"""How often the progress line on a terminal is redrawn; elsewhere one line is logged when the attack ends."""


@dataclass(frozen=True)
class Reply:
    """The answers to one `ask`, row by row, as tensors on the attack's device."""

    scores: torch.Tensor
    """[rows, classes]: the API's scores, or one-hot rows for a labels-only API; zeros where not answered."""
    labels: torch.Tensor
    """[rows]: the verdict each answer shows (-1 where not answered)."""
    answered: torch.Tensor
    """[rows] bool."""
    rejected: torch.Tensor
    """[rows] bool: rows the operator's detector flagged (charged, unanswered; where a flag bans, the attacker's
    next account takes over)."""


class QueryEngine:
    def __init__(
        self,
        name: str,
        x: np.ndarray,
        y: np.ndarray,
        goal: Goal,
        kit: AttackerKit,
        *,
        max_queries: int,
        device: str = "cpu",
        eot_samples: int = 1,
        blinding: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.blinding = blinding
        """Query blinding: each row sent is moved by random noise of this size (L-inf: uniform per pixel; L2:
        a random direction of this norm), then put back in the threat model's ball, so that no two queries
        repeat and a similarity detector sees them farther apart. The row sent is the one that counts."""
        self._blinding_generator = torch.Generator(device="cpu").manual_seed(seed + 7919)
        self.eot_samples = eot_samples
        """Answers asked for each candidate and averaged (expectation over transformation, against a judge that
        answers at random); each is a charged query."""
        self.client = kit.client
        self.keys = kit.keys_for(len(x))
        self.goal = goal
        self.device = device
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
        self.n_classes = self.client.n_classes
        self.x_adv = np.array(x, dtype=np.float32, copy=True)
        self.queries_to_success = np.full(len(x), -1, dtype=np.int64)
        self.spent = np.array([self.client.queries(key) for key in self.keys], dtype=np.int64)
        self.rejections = np.zeros(len(x), dtype=np.int64)
        """Rows of each example the operator's detector rejected: what an adaptive attacker reads."""
        allowed = [self.client.budget_left(key) for key in self.keys]
        # What each example may still ask: its budget's remainder, or the attacker's own cap when unlimited.
        self.budgeted = np.array([a is not None for a in allowed])
        self.left = np.array([max_queries if a is None else a for a in allowed], dtype=np.int64)
        self.done = self.left < self.eot_samples  # cannot pay for one more point
        for i in np.flatnonzero(self.done & self.budgeted):
            self.client.stop(self.keys[i])
        self._last_report = time.monotonic()

    @property
    def active(self) -> np.ndarray:
        """Indices of the examples still in play: not fooled, not refused, with queries left."""
        return np.flatnonzero(~self.done)

    def ask(self, rows: np.ndarray, candidates: torch.Tensor) -> Reply:
        """One call for many examples: `candidates[k]` is charged to example `rows[k]`, `eot_samples` times
        (its answers averaged: scores, or the labels' vote shares). A candidate whose example cannot pay for all
        its repeats is not sent (the engine knows the operator's rule); it comes back unanswered, as a refused
        row would."""
        rows = np.asarray(rows, dtype=np.int64)
        repeats = self.eot_samples
        send = np.zeros(len(rows), dtype=bool)
        taken: dict[int, int] = {}
        for k, i in enumerate(rows):
            if not self.done[i] and taken.get(i, 0) + repeats <= self.left[i]:
                send[k] = True
                taken[i] = taken.get(i, 0) + repeats
        scores = torch.zeros(len(rows), self.n_classes, device=self.device)
        labels = torch.full((len(rows),), -1, dtype=torch.int64, device=self.device)
        answered = torch.zeros(len(rows), dtype=torch.bool, device=self.device)
        rejected = torch.zeros(len(rows), dtype=torch.bool, device=self.device)
        if send.any():
            batch = candidates[torch.from_numpy(send).to(candidates.device)].clamp(0.0, 1.0)
            sent_rows = rows[send]
            asked = batch.repeat_interleave(repeats, dim=0) if repeats > 1 else batch
            if self.blinding > 0:  # after repeating: no two rows sent are the same, EOT's repeats included
                asked = self._blind(asked, np.repeat(sent_rows, repeats))
                batch = asked[::repeats]  # the row that stands for each candidate: its first, as sent
            keys = [self.keys[i] for i in sent_rows for _ in range(repeats)]
            reply = self.client.query_rows(asked.detach().cpu().numpy(), keys)
            got = torch.from_numpy(as_scores(reply.values, self.n_classes)).to(self.device)
            heard = torch.from_numpy(reply.answered).to(self.device).view(-1, repeats)
            flagged = torch.from_numpy(reply.rejected).to(self.device).view(-1, repeats)
            summed = (got.view(-1, repeats, self.n_classes) * heard[..., None]).sum(dim=1)
            mean = summed / heard.sum(dim=1, keepdim=True).clamp_min(1)
            ok = heard.any(dim=1)
            where = torch.from_numpy(np.flatnonzero(send)).to(self.device)
            scores[where[ok]] = mean[ok]
            labels[where[ok]] = mean[ok].argmax(dim=1)
            answered[where] = ok
            rejected[where] = flagged.any(dim=1)
            charged = (heard | flagged).sum(dim=1).cpu().numpy()
            refused = (~heard & ~flagged).any(dim=1).cpu().numpy()
            np.add.at(self.rejections, sent_rows, flagged.sum(dim=1).cpu().numpy())
            self._read(sent_rows, batch, ok.cpu().numpy(), charged, refused, mean.argmax(dim=1).cpu().numpy())
        self._report()
        return Reply(scores, labels, answered, rejected)

    def _blind(self, batch: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """Each row moved at random by `blinding`, then projected back into the eps-ball around its original."""
        shape = batch.shape
        if self.goal.norm == "inf":
            noise = torch.rand(shape, generator=self._blinding_generator) * 2 - 1
            moved = batch + self.blinding * noise.to(batch.device)
            x0 = self.x[torch.from_numpy(rows).to(self.device)]
            moved = torch.minimum(torch.maximum(moved, x0 - self.goal.eps), x0 + self.goal.eps)
        else:
            noise = torch.randn(shape, generator=self._blinding_generator).to(batch.device)
            noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (batch.dim() - 1)))
            moved = batch + self.blinding * noise
            if self.goal.norm == "2":
                x0 = self.x[torch.from_numpy(rows).to(self.device)]
                step = (moved - x0).flatten(1)
                scale = (self.goal.eps / step.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
                moved = x0 + (step * scale[:, None]).view_as(moved)
        return moved.clamp(0.0, 1.0)

    def _read(
        self,
        rows: np.ndarray,
        batch: torch.Tensor,
        answered: np.ndarray,
        charged: np.ndarray,
        refused: np.ndarray,
        labels: np.ndarray,
    ) -> None:
        """What the attacker learns from a call: its spend (rows answered, and rows the detector rejected:
        charged, while the example stays in play on the attacker's next account), its successes, and which
        examples were refused (their budget, or every account, is spent)."""
        within = self.goal.within(batch.cpu().numpy(), self.x[torch.from_numpy(rows).to(self.device)].cpu().numpy())
        fooled = self.goal.fooled(labels, self.y.cpu().numpy()[rows]) & within & answered
        for k, i in enumerate(rows):
            self.spent[i] += charged[k]
            self.left[i] -= charged[k]
            if fooled[k] and self.queries_to_success[i] < 0:
                self.queries_to_success[i] = self.spent[i]
                self.x_adv[i] = batch[k].cpu().numpy()
                self.done[i] = True
            if refused[k]:
                self.done[i] = True
        spent = self.left < self.eot_samples
        self.done |= spent
        for i in np.flatnonzero(spent & self.budgeted):
            if self.queries_to_success[i] < 0:
                self.client.stop(self.keys[i])  # given up at its budget (not at the attacker's own cap)

    def keep(self, rows: np.ndarray, x_best: torch.Tensor) -> None:
        """The attack's best input so far for examples not (yet) seen fooled: what is submitted if the budget
        runs out (the evaluator re-checks it on the judge)."""
        for k, i in enumerate(np.asarray(rows)):
            if self.queries_to_success[i] < 0:
                self.x_adv[i] = x_best[k].detach().cpu().numpy()

    def result(self) -> AttackResult:
        self._report(final=True)
        return AttackResult.charged(self.client, self.keys, self.x_adv, self.queries_to_success)

    def _report(self, final: bool = False) -> None:
        """Examples fooled and queries spent: a line redrawn on a terminal, one logged line at the end."""
        now = time.monotonic()
        terminal = sys.stderr.isatty()
        if not final and not (terminal and now - self._last_report >= PROGRESS_SECONDS):
            return
        self._last_report = now
        fooled = int((self.queries_to_success > 0).sum())
        line = (
            f"{self.name}: {fooled} of {len(self.keys)} fooled, {int((~self.done).sum())} in play, "
            f"{int(self.spent.sum())} queries spent"
        )
        if terminal:  # redrawn in place; the final count replaces it as a logged line
            sys.stderr.write("\r\033[K" if final else f"\r{line}")
            sys.stderr.flush()
        if final:
            log.info(line)
