"""What a detector costs honest users, counted on honest traffic.

Honest users re-submit: the same photo again after a timeout, the same one re-framed by a pixel or two, the same
one in other light. A stateful detector that flags queries resembling earlier ones flags these as well, and the
first flag bans the account. `benign_stream` builds such traffic from held-out examples in a configured mix, and
`false_positive_rates` runs a detector over it as the Oracle would and counts what it flagged and whom it banned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gavel.targets.access.shield import Detector

KINDS = ("fresh", "resubmit", "crop_shift", "brightness")
"""The kinds of honest query, in the order `BenignMix` lists their fractions."""


@dataclass(frozen=True)
class BenignMix:
    """The fractions of an honest stream of each kind of query, and how large the natural changes are.

    - `fresh`: a held-out example no one has sent before;
    - `resubmit`: the very same input an account sent earlier;
    - `crop_shift`: an earlier input shifted by up to `max_shift` pixels along each axis, never by none (cropped
      on one side, padded on the other with the edge pixels, the way a re-framed photo is);
    - `brightness`: an earlier input brighter or darker, `clip(gain * x + offset, 0, 1)` with `gain` within
      `max_gain` of 1 and `offset` within `max_offset` of 0, both moving the same way.
    """

    fresh: float = 0.85
    resubmit: float = 0.05
    crop_shift: float = 0.05
    brightness: float = 0.05
    max_shift: int = 2
    max_gain: float = 0.2
    max_offset: float = 0.1

    def __post_init__(self) -> None:
        for key in KINDS:
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"benign mix: {key}={value} must be a fraction >= 0")
        total = sum(self.fractions().values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"benign mix: {' + '.join(KINDS)} = {total:g}, must sum to 1")
        if isinstance(self.max_shift, bool) or not isinstance(self.max_shift, int) or self.max_shift < 1:
            raise ValueError(f"benign mix: max_shift={self.max_shift} must be a whole number of pixels >= 1")
        for key in ("max_gain", "max_offset"):
            value = getattr(self, key)
            if not (math.isfinite(value) and 0 <= value < 1):
                raise ValueError(f"benign mix: {key}={value} must be in [0, 1)")
        if self.brightness > 0 and self.max_gain == 0 and self.max_offset == 0:
            # such a "brightness change" would be a re-submission counted under the wrong kind
            raise ValueError("benign mix: brightness > 0 needs max_gain > 0 or max_offset > 0")

    def fractions(self) -> dict[str, float]:
        return {key: getattr(self, key) for key in KINDS}


@dataclass(frozen=True)
class BenignStreamSpec:
    accounts: int
    queries_per_account: int
    mix: BenignMix = BenignMix()
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("accounts", "queries_per_account"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"benign stream: {key}={value} must be a whole number >= 1")


def shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`image` [C, H, W] moved down by `dy` and right by `dx` pixels (negative: up, left); what moves in from
    the border repeats the edge pixels, so a re-framed photo has no black bars a detector could key on."""
    pad = max(abs(dy), abs(dx))
    height, width = image.shape[1:]
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    return padded[:, pad - dy : pad - dy + height, pad - dx : pad - dx + width]


def brighten(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return np.clip(gain * image + offset, 0.0, 1.0).astype(np.float32)


def _kind_counts(mix: BenignMix, total: int) -> dict[str, int]:
    """Queries of each kind in a stream of `total`: largest remainders, so each count is within 1 of its
    fraction of the stream and the counts add up to it."""
    exact = {key: fraction * total for key, fraction in mix.fractions().items()}
    counts = {key: math.floor(value) for key, value in exact.items()}
    by_remainder = sorted(KINDS, key=lambda key: counts[key] - exact[key])  # stable: ties go in KINDS order
    for key in by_remainder[: total - sum(counts.values())]:
        counts[key] += 1
    return counts


def _plan(spec: BenignStreamSpec, rng: np.random.Generator) -> list[list[str]]:
    """Each account's kinds of query, in order: its first is fresh (a re-submission needs an earlier input),
    the rest of the stream's kinds are spread over every account's later queries at random."""
    total = spec.accounts * spec.queries_per_account
    counts = _kind_counts(spec.mix, total)
    if counts["fresh"] < spec.accounts:
        raise ValueError(
            f"benign mix: fresh={spec.mix.fresh} gives {counts['fresh']} fresh queries in a stream of {total}, but "
            f"each of the {spec.accounts} accounts sends a fresh query first: fresh must be at least "
            f"{spec.accounts / total:.4g}"
        )
    later = ["fresh"] * (counts["fresh"] - spec.accounts)
    for key in KINDS[1:]:
        later += [key] * counts[key]
    later = [later[i] for i in rng.permutation(len(later))]
    per_account = spec.queries_per_account - 1
    return [["fresh"] + later[a * per_account : (a + 1) * per_account] for a in range(spec.accounts)]


def _resubmission(kind: str, source: np.ndarray, mix: BenignMix, rng: np.random.Generator) -> np.ndarray:
    if kind == "resubmit":
        return source.copy()
    if kind == "crop_shift":
        reach = range(-mix.max_shift, mix.max_shift + 1)
        offsets = [(dy, dx) for dy in reach for dx in reach]
        offsets.remove((0, 0))  # an unmoved copy is a re-submission, counted as such
        dy, dx = offsets[rng.integers(len(offsets))]
        return shift(source, dy, dx)
    # brighter or darker as a whole: a gain up with an offset down would leave pure black and white unchanged
    direction = rng.choice((-1.0, 1.0))
    gain = 1.0 + direction * rng.uniform(0, mix.max_gain)
    offset = direction * rng.uniform(0, mix.max_offset)
    return brighten(source, gain, offset)


def benign_stream(pool_x: np.ndarray, spec: BenignStreamSpec) -> list[tuple[int, np.ndarray]]:
    """Honest traffic: for each account 0 .. accounts - 1, `(account, its queries in order)` with the queries
    float32 [queries_per_account, C, H, W] in [0, 1].

    Fresh queries are distinct rows of `pool_x` (held-out examples, NCHW in [0, 1]) drawn without replacement
    across the whole stream. A pool too small for that is refused (ValueError naming how many are needed): cycling
    it would make "fresh" queries exact repeats of other accounts' ones, which a detector that watches every
    account rightly flags, and the false positives would be the stream's, not the detector's. Each
    re-submission is a change (of its kind) of an input, chosen at random, that the same account sent earlier.
    """
    pool = np.asarray(pool_x)
    if pool.ndim != 4:
        raise ValueError(f"benign stream: pool_x has shape {pool.shape}, must be NCHW")
    if pool.size and not (np.all(np.isfinite(pool)) and pool.min() >= 0 and pool.max() <= 1):
        raise ValueError("benign stream: pool_x must lie in [0, 1]")
    rng = np.random.default_rng(spec.seed)
    plan = _plan(spec, rng)
    needed = sum(kinds.count("fresh") for kinds in plan)
    if needed > len(pool):
        raise ValueError(
            f"benign stream: needs {needed} distinct held-out examples for its fresh queries, pool_x has {len(pool)}"
        )
    fresh_rows = iter(rng.permutation(len(pool))[:needed])
    stream = []
    for account, kinds in enumerate(plan):
        sent: list[np.ndarray] = []
        for kind in kinds:
            if kind == "fresh":
                sent.append(pool[next(fresh_rows)].astype(np.float32))
            else:
                sent.append(_resubmission(kind, sent[rng.integers(len(sent))], spec.mix, rng))
        stream.append((account, np.stack(sent)))
    return stream


@dataclass(frozen=True)
class BenignReport:
    """A detector's cost to honest users on one stream.

    `per_query` and `per_account` are counted with bans, as the Oracle applies them: a banned account's later
    queries are never sent, so they are neither flagged nor in the denominator of `per_query`. `scores` are for
    the ROC: every query of the stream (in stream order), each scored against its full history, with no bans; at
    the detector's threshold they give the fraction of queries flagged were no one ever banned.
    """

    accounts: int
    queries: int
    queries_sent: int
    queries_flagged: int
    accounts_banned: int
    per_query: float
    per_account: float
    threshold: float
    scores: np.ndarray


def false_positive_rates(detector: Detector, stream: Sequence[tuple[int, np.ndarray]]) -> BenignReport:
    """Run fresh copies of `detector` over `stream` (calls `(account, rows)`, heard one after another; an
    account may make several) and count what the honest accounts lose. `detector` itself is left untouched.

    Each call is screened whole: `Detector.scores` is causal within a call, so this flags and bans exactly as
    the rows sent one by one would. A detector that watches every account scores each account against all the
    earlier calls of the stream."""
    if not sum(len(rows) for _, rows in stream):
        # an account is banned only on a row it sent, so any row at all means one was sent: no rate lacks a denominator
        raise ValueError("false_positive_rates: the stream has no queries")
    screener, scorer = detector.fresh(), detector.fresh()
    banned: set[int] = set()
    sent = flagged = 0
    scores = []
    for account, rows in stream:
        call_scores = np.asarray(scorer.scores(rows, account), dtype=np.float64)
        if call_scores.shape != (len(rows),):
            raise ValueError(f"detector scored {len(rows)} rows with an array of shape {call_scores.shape}")
        scorer.remember(rows, account)
        scores.append(call_scores)
        if account in banned:
            continue
        first, screened = screener.screen(rows, account)
        sent += len(screened)
        if first is not None:
            flagged += 1
            banned.add(account)
    accounts = len({account for account, _ in stream})
    return BenignReport(
        accounts=accounts,
        queries=sum(len(rows) for _, rows in stream),
        queries_sent=sent,
        queries_flagged=flagged,
        accounts_banned=len(banned),
        per_query=flagged / sent,
        per_account=len(banned) / accounts,
        threshold=float(screener.threshold),
        scores=np.concatenate(scores),
    )
