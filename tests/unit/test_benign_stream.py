"""Honest traffic is what its mix says, and a detector's cost to it is counted, never assumed."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from gavel.defenses.benign import (
    KINDS,
    BenignMix,
    BenignStreamSpec,
    benign_stream,
    false_positive_rates,
    shift,
)
from gavel.defenses.roc import auc, operating_point, roc_figure, roc_points
from gavel.targets.access.shield import Detector

MIXED = BenignMix(fresh=0.4, resubmit=0.2, crop_shift=0.2, brightness=0.2)


def pool(n: int, shape=(1, 8, 8), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def equal_rows(a: np.ndarray, rows: np.ndarray) -> bool:
    return bool(len(rows)) and bool(np.any(np.all(rows.reshape(len(rows), -1) == a.ravel(), axis=1)))


def is_shift_of(query: np.ndarray, earlier: np.ndarray, reach: int) -> bool:
    return any(
        np.array_equal(query, shift(e, dy, dx))
        for e in earlier
        for dy in range(-reach, reach + 1)
        for dx in range(-reach, reach + 1)
        if (dy, dx) != (0, 0)
    )


def is_brightness_of(query: np.ndarray, earlier: np.ndarray) -> bool:
    """Some earlier row e with query == clip(gain * e + offset, 0, 1), gain != 1 or offset != 0: the pixels the
    clip left alone determine (gain, offset) by least squares."""
    inside = (query > 0) & (query < 1)
    for e in earlier:
        design = np.stack([e[inside], np.ones(inside.sum())], axis=1)
        (gain, offset), *_ = np.linalg.lstsq(design, query[inside], rcond=None)
        changed = abs(gain - 1) > 1e-4 or abs(offset) > 1e-4
        if changed and np.allclose(np.clip(gain * e + offset, 0, 1), query, atol=1e-5):
            return True
    return False


def classify(stream, pool_x: np.ndarray, reach: int) -> list[list[str]]:
    """Each query's kind, read off the stream itself: an exact repeat of the account's own earlier input is a
    re-submission, a pool row otherwise is fresh, else it must be a shift or a brightness change of an earlier
    input of the same account."""
    kinds = []
    for _, queries in stream:
        account_kinds = []
        for j, query in enumerate(queries):
            earlier = queries[:j]
            if equal_rows(query, earlier):
                account_kinds.append("resubmit")
            elif equal_rows(query, pool_x):
                account_kinds.append("fresh")
            elif is_shift_of(query, earlier, reach):
                account_kinds.append("crop_shift")
            elif is_brightness_of(query, earlier):
                account_kinds.append("brightness")
            else:
                account_kinds.append("unexplained")
        kinds.append(account_kinds)
    return kinds


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_stream_shape_and_range(shape):
    spec = BenignStreamSpec(accounts=3, queries_per_account=5, mix=MIXED, seed=1)
    stream = benign_stream(pool(20, shape), spec)
    assert [account for account, _ in stream] == [0, 1, 2]
    for _, queries in stream:
        assert queries.shape == (5, *shape) and queries.dtype == np.float32
        assert queries.min() >= 0 and queries.max() <= 1


@pytest.mark.parametrize("mix", [MIXED, BenignMix(), BenignMix(fresh=0.5, crop_shift=0.5, resubmit=0, brightness=0)])
def test_mix_is_respected_and_resubmissions_come_from_the_same_account(mix):
    pool_x = pool(200, (1, 6, 6))
    spec = BenignStreamSpec(accounts=7, queries_per_account=9, mix=mix, seed=3)
    stream = benign_stream(pool_x, spec)
    kinds = classify(stream, pool_x, mix.max_shift)
    assert all(account_kinds[0] == "fresh" for account_kinds in kinds)
    flat = [kind for account_kinds in kinds for kind in account_kinds]
    assert "unexplained" not in flat
    total = spec.accounts * spec.queries_per_account
    for kind in KINDS:
        assert abs(flat.count(kind) - getattr(mix, kind) * total) < 1, kind


def test_fresh_inputs_are_distinct_across_the_stream():
    pool_x = pool(100)
    stream = benign_stream(pool_x, BenignStreamSpec(accounts=10, queries_per_account=8, mix=MIXED, seed=0))
    kinds = classify(stream, pool_x, MIXED.max_shift)
    fresh = [q.tobytes() for (_, queries), ks in zip(stream, kinds) for q, k in zip(queries, ks) if k == "fresh"]
    assert len(fresh) == round(0.4 * 80) and len(set(fresh)) == len(fresh)


def test_all_fresh_stream_uses_distinct_pool_rows():
    pool_x = pool(12)
    stream = benign_stream(pool_x, BenignStreamSpec(accounts=3, queries_per_account=4, mix=BenignMix(1, 0, 0, 0)))
    rows = np.concatenate([queries for _, queries in stream])
    assert len({row.tobytes() for row in rows}) == 12
    assert all(equal_rows(row, pool_x) for row in rows)


def test_reproducible_from_the_seed():
    pool_x = pool(60)
    spec = BenignStreamSpec(accounts=4, queries_per_account=6, mix=MIXED, seed=5)
    first, again = benign_stream(pool_x, spec), benign_stream(pool_x, spec)
    other = benign_stream(pool_x, BenignStreamSpec(accounts=4, queries_per_account=6, mix=MIXED, seed=6))
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, again))
    assert not all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, other))


def test_a_pool_too_small_is_refused_with_the_counts():
    spec = BenignStreamSpec(accounts=4, queries_per_account=5, mix=MIXED)  # 8 fresh queries
    with pytest.raises(ValueError, match="needs 8 distinct .* has 7"):
        benign_stream(pool(7), spec)


def test_mix_and_spec_are_checked():
    with pytest.raises(ValueError, match="resubmit=-0.1"):
        BenignMix(fresh=1.1, resubmit=-0.1, crop_shift=0, brightness=0)
    with pytest.raises(ValueError, match="must sum to 1"):
        BenignMix(fresh=0.9, resubmit=0.2, crop_shift=0, brightness=0)
    with pytest.raises(ValueError, match="queries_per_account"):
        BenignStreamSpec(accounts=2, queries_per_account=0)
    with pytest.raises(ValueError, match="fresh must be at least"):  # every account's first query is fresh
        benign_stream(pool(10), BenignStreamSpec(accounts=4, queries_per_account=2, mix=BenignMix(0.25, 0.75, 0, 0)))


class ExactRepeat(Detector):
    """Flags a row identical to one the same account sent before (earlier rows of the call included)."""

    def __init__(self, copies: list | None = None) -> None:
        self.threshold = 0.5
        self.history: dict[int, list[bytes]] = {}
        self.copies = [] if copies is None else copies  # every fresh() copy, so a test can read what each heard
        self.copies.append(self)

    def scores(self, x, account):
        seen = set(self.history.get(account, []))
        out = []
        for row in x:
            out.append(1.0 if row.tobytes() in seen else 0.0)
            seen.add(row.tobytes())
        return np.array(out)

    def remember(self, x, account):
        self.history.setdefault(account, []).extend(row.tobytes() for row in x)

    def fresh(self):
        return ExactRepeat(self.copies)


def first_repeat(queries: np.ndarray) -> int | None:
    for j in range(len(queries)):
        if equal_rows(queries[j], queries[:j]):
            return j
    return None


def test_false_positive_rates_match_a_count_by_hand():
    stream = benign_stream(pool(100), BenignStreamSpec(accounts=8, queries_per_account=6, mix=MIXED, seed=2))
    detector = ExactRepeat()
    report = false_positive_rates(detector, stream)

    bans = {account: first_repeat(queries) for account, queries in stream}
    banned = [account for account, j in bans.items() if j is not None]
    sent = sum(6 if j is None else j + 1 for j in bans.values())
    repeats = sum(equal_rows(q[j], q[:j]) for _, q in stream for j in range(len(q)))
    assert banned, "a mix with re-submissions should ban someone with this stream"
    assert (report.accounts, report.queries, report.queries_sent) == (8, 48, sent)
    assert report.queries_flagged == report.accounts_banned == len(banned)
    assert report.per_query == pytest.approx(len(banned) / sent) and report.per_query > 0
    assert report.per_account == pytest.approx(len(banned) / 8)
    # the ROC's scores: every query, against its account's full history, bans or not
    assert report.scores.shape == (48,) and report.scores.sum() == repeats >= len(banned)

    assert detector.history == {}  # the caller's detector is not the one that listened
    screener = next(c for c in detector.copies[1:] if sum(map(len, c.history.values())) == sent)
    for account, j in bans.items():
        assert len(screener.history[account]) == (6 if j is None else j + 1)  # nothing after the ban was sent


def test_an_all_fresh_stream_has_no_false_positives():
    stream = benign_stream(pool(40), BenignStreamSpec(accounts=5, queries_per_account=8, mix=BenignMix(1, 0, 0, 0)))
    report = false_positive_rates(ExactRepeat(), stream)
    assert (report.queries_sent, report.queries_flagged, report.per_query, report.per_account) == (40, 0, 0.0, 0.0)


def test_a_banned_account_sends_nothing_more():
    x = pool(3)
    calls = [(0, np.stack([x[0], x[0], x[1]])), (1, x[:2]), (0, x[1:2])]
    report = false_positive_rates(ExactRepeat(), calls)
    # account 0: two rows sent, the repeat flagged; its third row and later call never reach the detector
    assert (report.queries, report.queries_sent, report.queries_flagged) == (6, 4, 1)
    assert (report.accounts, report.accounts_banned, report.per_account) == (2, 1, 0.5)
    assert report.per_query == pytest.approx(1 / 4)
    # the ROC's copy heard everything, so account 0's last call repeats the row its ban kept from being sent
    np.testing.assert_array_equal(report.scores, [0, 1, 0, 0, 0, 1])


def test_roc_of_separable_and_identical_scores():
    fpr, tpr, thresholds = roc_points([0.1, 0.2, 0.3], [0.7, 0.8])
    assert auc(fpr, tpr) == pytest.approx(1.0)
    assert (fpr[0], tpr[0], thresholds[0]) == (0.0, 0.0, np.inf) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    same = np.random.default_rng(0).random(50)
    assert auc(*roc_points(same, same)[:2]) == pytest.approx(0.5)
    assert auc(*roc_points([0.7, 0.8], [0.1, 0.2])[:2]) == pytest.approx(0.0)


def test_roc_flags_at_score_at_least_threshold():
    fpr, tpr, thresholds = roc_points([0.1, 0.4], [0.35, 0.8])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.8, 0.4, 0.35, 0.1])
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 0.5, 1, 1])
    assert auc(fpr, tpr) == pytest.approx(0.75)
    assert operating_point([0.1, 0.4], [0.35, 0.8], 0.4) == (0.5, 0.5)
    # infinite scores are swept too: an exact repeat scored +inf, a first query -inf
    fpr, tpr, _ = roc_points([-np.inf, 0.0], [np.inf, 1.0])
    assert auc(fpr, tpr) == pytest.approx(1.0)


def test_roc_figure_renders_curves_and_operating_points():
    curves = {"exact": roc_points([0.0, 0.1, 0.5], [0.4, 0.9])[:2], "blind": roc_points([0.3], [0.3])[:2]}
    fig = roc_figure(curves, {"exact": (1 / 3, 1.0), "blind": (0.0, 0.0)})
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["exact (AUC 0.833)", "blind (AUC 0.500)"]
    fig.savefig(io.BytesIO(), format="png")
