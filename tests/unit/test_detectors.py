"""Stateful detectors on the real digits: each flags a Square-like run of near-duplicate queries within tens of
queries and few distinct benign images; scores a call's rows causally; stores only what it screened up to its
first flag; keeps one history per account or one for all; and its defense refuses attacks that send no queries,
builds from its YAML and refuses values out of range."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.accounting import RowCounter
from omegaconf import OmegaConf
from torch import nn

from gavel.defenses.base import Defense, OperatorKit
from gavel.defenses.benign import BenignStreamSpec, benign_stream, false_positive_rates
from gavel.defenses.detection.base import HistoryDetector, Scratch
from gavel.defenses.detection.blacklight import Blacklight, DigestMemo, _Postings, _shared_with, fingerprints
from gavel.defenses.detection.encoders import penultimate_encoder
from gavel.defenses.detection.knn_similarity import KnnSimilarity, k_smallest
from gavel.defenses.detection.piha import BitHistory, Piha, agreements, signs
from gavel.experiments.settings import read_component
from gavel.experiments.validation import ConfigError, Node
from gavel.targets.access import (
    DECISION_BASED,
    HYBRID,
    SCORE_BASED,
    TRANSFER,
    WHITE_BOX,
    AccessPolicy,
    Oracle,
    QueryRejected,
)
from gavel.targets.access.shield import Shield
from gavel.targets.params import declared_hyperparameters

CONF = Path(__file__).resolve().parents[2] / "conf" / "defense"
EPS = 0.1

DEFENSES = {
    "knn_pixels": lambda: KnnSimilarity(encoder="pixels"),
    "knn_penultimate": lambda: KnnSimilarity(encoder="penultimate"),
    "knn_similarity": lambda: KnnSimilarity(encoder="similarity"),
    "blacklight": lambda: Blacklight(),
    "piha": lambda: Piha(),
}
"""Each detector (the kNN one with each encoder) at its YAML defaults."""


def operator_kit(digits, seed: int = 0) -> OperatorKit:
    data = digits.data
    return OperatorKit(data.judge.x, data.judge.y, data.n_classes, seed=seed)


@pytest.fixture(scope="module")
def shields(digits) -> dict[str, Shield]:
    """Each defense deployed once on the default judge with the operator's data (the judge pool)."""
    return {name: build().deploy(digits.judge, operator_kit(digits)) for name, build in DEFENSES.items()}


@pytest.fixture(scope="module")
def detectors(shields) -> dict[str, HistoryDetector]:
    return {name: shield.detector for name, shield in shields.items()}


def square_like(image: np.ndarray, n: int, rng: np.random.Generator, side: int = 2) -> np.ndarray:
    """n queries of a Square attack (Andriushchenko et al., 2020) on one image: vertical stripes of +-EPS to start,
    then each query redraws one random side x side square of the current perturbation at +-EPS (never to what it
    was, as Square resamples such a square), and about a third of them become the current perturbation (as if they
    had lowered the margin)."""
    channels, height, width = image.shape
    current = np.broadcast_to(rng.choice([-EPS, EPS], size=(channels, 1, width)), image.shape).copy()
    queries = []
    for _ in range(n):
        candidate = current.copy()
        row, column = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        square = candidate[:, row : row + side, column : column + side]
        value = rng.choice([-EPS, EPS], size=(channels, 1, 1))
        if np.all(square == value):
            value = -value
        square[...] = value
        queries.append(np.clip(image + candidate, 0.0, 1.0))
        if rng.random() < 1 / 3:
            current = candidate
    return np.stack(queries).astype(np.float32)


def with_scope(detector: HistoryDetector, scope: str) -> HistoryDetector:
    clone = detector.fresh()
    clone.scope = scope
    return clone


# --- what each detector catches and what it lets through ------------------------------------------------------


@pytest.mark.parametrize("name", DEFENSES)
def test_a_square_like_attack_is_flagged_within_tens_of_queries(detectors, digits, name):
    rng = np.random.default_rng(0)
    caught_at = []
    for image in digits.data.eval.x[:5]:
        detector = detectors[name].fresh()
        for number, query in enumerate(square_like(image, 100, rng), start=1):
            first, _ = detector.screen(query[None], account=0)  # one query per call, as a Square attack asks
            if first is not None:
                caught_at.append(number)
                break
        else:
            caught_at.append(None)
    assert None not in caught_at, f"{name}: some attacks never flagged in 100 queries: {caught_at}"
    assert max(caught_at) <= 30, f"{name}: flagged only after {caught_at} queries"


@pytest.mark.parametrize("name", DEFENSES)
def test_distinct_benign_images_are_rarely_flagged(detectors, digits, name):
    detector = detectors[name].fresh()
    # 898 distinct images the operator never trained or calibrated on, all from one account: as many as the
    # operator's own data, so the history grows as large as the one its threshold was set against.
    benign = np.concatenate([digits.data.eval.x, digits.data.attacker.x])
    flagged = detector.scores(benign, account=0) >= detector.threshold
    assert flagged.mean() <= 0.01, f"{name}: {flagged.sum()} of {len(benign)} benign images flagged"


# --- the Detector contract ----------------------------------------------------------------------------------------


def mixed_stream(digits, rng) -> np.ndarray:
    """Benign images interleaved with two Square-like runs: 300 rows, more than one block of a call's rows."""
    x = np.concatenate([digits.data.eval.x[:200], square_like(digits.data.eval.x[200], 50, rng)])
    x = np.concatenate([x, square_like(digits.data.eval.x[201], 50, rng)])
    return x[rng.permutation(len(x))]


@pytest.mark.parametrize("name", DEFENSES)
def test_scores_within_one_call_equal_scores_one_call_per_row(detectors, digits, name):
    rng = np.random.default_rng(1)
    stored, x = digits.data.attacker.x[:40], mixed_stream(digits, rng)
    together = detectors[name].fresh()
    together.remember(stored, account=0)
    one_by_one = detectors[name].fresh()
    one_by_one.remember(stored, account=0)
    expected = []
    for row in x:
        expected.append(one_by_one.scores(row[None], account=0)[0])
        one_by_one.remember(row[None], account=0)
    scores = together.scores(x, account=0)
    assert scores.dtype == np.float64 and scores.shape == (len(x),)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert together.stored(0) == len(stored), "scores stored something"


@pytest.mark.parametrize("name", DEFENSES)
def test_a_first_query_scores_minus_infinity_and_exact_repeats_are_flagged_once_they_match_enough(
    detectors, digits, name
):
    detector = detectors[name].fresh()
    image = digits.data.eval.x[:1]
    first, scores = detector.screen(image, account=0)
    assert first is None and scores.tolist() == [-np.inf]
    # The hashing detectors flag a query only when `matches` earlier ones match it; the kNN one at the first repeat.
    for _ in range(getattr(detector, "matches", 1) - 1):
        first, scores = detector.screen(image, account=0)
        assert first is None and scores[0] < detector.threshold
    first, _ = detector.screen(image, account=0)
    assert first == 0


@pytest.mark.parametrize("name", DEFENSES)
def test_screen_stores_only_the_rows_up_to_the_first_flagged(detectors, digits, name):
    rng = np.random.default_rng(2)
    x = np.concatenate([digits.data.eval.x[:3], square_like(digits.data.eval.x[3], 30, rng)])
    detector = detectors[name].fresh()
    first, scores = detector.screen(x, account=0)
    assert first is not None and first >= 3, f"{name}: flagged row {first}"
    assert len(scores) == first + 1 and scores[-1] >= detector.threshold
    assert detector.stored(0) == first + 1
    up_to_flag = detectors[name].fresh()
    up_to_flag.remember(x[: first + 1], account=0)
    probes = x[first + 1 :]
    # (an encoder's float rounding depends a little on how many rows it encodes at once)
    np.testing.assert_allclose(detector.scores(probes, 0), up_to_flag.scores(probes, 0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", DEFENSES)
def test_fresh_has_an_empty_history_and_the_same_threshold(detectors, digits, name):
    detector = detectors[name].fresh()
    detector.remember(digits.data.eval.x[:10], account=0)
    clone = detector.fresh()
    assert clone.stored(0) == 0 and detector.stored(0) == 10
    assert clone.threshold == detector.threshold and np.isfinite(clone.threshold)
    assert clone.scores(digits.data.eval.x[:1], account=0).tolist() == [-np.inf]


@pytest.mark.parametrize("name", DEFENSES)
def test_account_scope_separates_accounts_and_global_scope_joins_them(detectors, digits, name):
    queries = square_like(digits.data.eval.x[0], 40, np.random.default_rng(3))
    for scope, joined in (("account", False), ("global", True)):
        detector = with_scope(detectors[name], scope)
        detector.remember(queries[:20], account=0)
        assert detector.stored(1) == (20 if joined else 0)
        # The rest of the run, each query asked alone, from the same account and from another one.
        same = np.array([detector.scores(query[None], account=0)[0] for query in queries[20:]])
        other = np.array([detector.scores(query[None], account=1)[0] for query in queries[20:]])
        assert (same >= detector.threshold).any(), f"{name}, scope={scope}: the run's own account not caught"
        assert (other >= detector.threshold).any() == joined, f"{name}, scope={scope}"
        if not joined:
            assert (other == -np.inf).all()


@pytest.mark.parametrize("name", DEFENSES)
def test_a_detected_query_is_rejected_by_the_oracle_and_bans_the_account(detectors, digits, name):
    data = digits.data
    api = Oracle(
        digits.judge,
        AccessPolicy("hidden", "probabilities", None),
        input_shape=data.input_shape,
        n_classes=data.n_classes,
        shield=Shield(digits.judge, detector=detectors[name].fresh()),
    )
    api.plan(1)
    with pytest.raises(QueryRejected):
        for query in square_like(data.eval.x[0], 30, np.random.default_rng(4)):
            api.query(query[None], example=0, account=0)
    assert api.banned == {0}


# --- the hashing detectors' `matches`: how many earlier queries must match ------------------------------------------

HASHING = {"blacklight": Blacklight, "piha": Piha}


def hashing_detector(digits, name: str, **hyperparameters) -> HistoryDetector:
    return HASHING[name](**hyperparameters).deploy(digits.judge, operator_kit(digits)).detector


def shares(detector: HistoryDetector, x: np.ndarray) -> np.ndarray:
    """[rows, rows]: the fraction of row i's fingerprints (Blacklight) or hash bits (PIHA) that row j shares, by
    brute force over every pair."""
    features = detector.features(x)
    if isinstance(features, np.ndarray):  # PIHA's packed hashes
        bits = np.unpackbits(features.view(np.uint8), axis=1)
        return 1.0 - (bits[:, None, :] != bits[None, :, :]).sum(axis=2) / detector.bits
    prints = [set(features.row(i).tolist()) for i in range(len(features))]
    return np.array([[len(mine & theirs) / len(mine) for theirs in prints] for mine in prints])


@pytest.mark.parametrize("name", HASHING)
def test_a_query_that_matches_fewer_than_matches_earlier_queries_is_not_flagged(detectors, digits, name):
    detector = hashing_detector(digits, name, matches=2)
    image, other = digits.data.eval.x[:1], digits.data.eval.x[1:2]
    detector.remember(np.concatenate([image, other]), account=0)
    # one earlier query matches it fully (an honest re-submission): the score is the share of the second best
    np.testing.assert_allclose(
        detector.scores(image, account=0), [shares(detector, np.concatenate([image, other]))[0, 1]]
    )
    assert detector.scores(image, account=0)[0] < detector.threshold
    detector.remember(image, account=0)
    assert detector.scores(image, account=0).tolist() == [1.0]  # two do
    assert detector.fresh().scores(image, account=0).tolist() == [-np.inf]


@pytest.mark.parametrize("name", HASHING)
def test_matches_count_the_earlier_rows_of_the_same_call(detectors, digits, name):
    detector = hashing_detector(digits, name, matches=2)
    repeats = np.repeat(digits.data.eval.x[:1], 4, axis=0)
    # nothing to compare with; one match (the missing second shares nothing); two; three
    assert detector.scores(repeats, account=0).tolist() == [-np.inf, 0.0, 1.0, 1.0]
    first, scores = detector.screen(repeats, account=0)
    assert first == 2 and detector.stored(0) == 3


@pytest.mark.parametrize("matches", [1, 2, 5])
@pytest.mark.parametrize("name", HASHING)
def test_a_score_is_the_share_of_the_matches_th_best_earlier_query(digits, name, matches):
    rng = np.random.default_rng(6)
    stored, x = digits.data.attacker.x[:40], mixed_stream(digits, rng)  # 300 rows: more than one block of a call
    detector = hashing_detector(digits, name, matches=matches)
    detector.remember(stored, account=0)
    every = shares(detector, np.concatenate([stored, x]))
    expected = []
    for i in range(len(stored), len(every)):
        earlier = np.sort(every[i, :i])[::-1]
        expected.append(earlier[matches - 1] if len(earlier) >= matches else 0.0)
    np.testing.assert_allclose(detector.scores(x, account=0), expected, rtol=0, atol=1e-12)
    one_by_one = hashing_detector(digits, name, matches=matches)
    one_by_one.remember(stored, account=0)
    scores = []
    for row in x:
        scores.append(one_by_one.scores(row[None], account=0)[0])
        one_by_one.remember(row[None], account=0)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)


def test_blacklight_fingerprints_are_sha256_of_the_windows_remembered_or_not(digits):
    x = digits.data.eval.x[:300]
    settings = dict(step=0.25, window=20, stride=1, kept=50)
    plain = fingerprints(x, **settings)
    levels = np.rint(x[0].ravel() / 0.25).astype(np.uint8)
    windows = {hashlib.sha256(levels[i : i + 20].tobytes()).digest()[:8] for i in range(64 - 20 + 1)}
    assert sorted(plain.row(0).tolist()) == sorted(int.from_bytes(digest, "big") for digest in windows)
    memo = DigestMemo(0.25, 20)
    for rows in (slice(0, 100), slice(50, 300), slice(0, 300)):  # new windows, then some seen, then all seen
        np.testing.assert_array_equal(fingerprints(x[rows], memo=memo, **settings).digests, plain[rows].digests)


@pytest.mark.parametrize("bits", [80, 150])
def test_piha_agreements_are_bits_less_twice_the_hamming_distance_and_scores_match_brute_force(bits):
    """The integer product of sign rows against XOR and popcount over every pair, with hashes of up to 127 bits
    (agreements held in int8) and more (int16), over more stored hashes than one product takes at once."""
    rng = np.random.default_rng(9)
    words = -(-bits // 64)

    def hashes(n: int, like: np.ndarray | None = None) -> np.ndarray:
        if like is not None:  # near-duplicates of `like`: a few bits flipped, so that distances are small too
            flips = np.packbits(rng.random((n, 64 * words)) < 0.03, axis=1)
            return like[rng.integers(0, len(like), n)] ^ flips.view(np.uint64)
        return rng.integers(0, 2**64, (n, words), dtype=np.uint64)

    def unpacked(h: np.ndarray) -> np.ndarray:
        return np.unpackbits(h.view(np.uint8), axis=1, count=bits).astype(np.int64)

    stored = hashes(5_000)
    calls = hashes(300, like=stored)
    got = agreements(signs(calls, bits), signs(stored, bits), torch.int8 if bits < 128 else torch.int16, Scratch())
    distance = (unpacked(calls)[:, None, :] != unpacked(stored)[None, :, :]).sum(2)
    np.testing.assert_array_equal(got, bits - 2 * distance)

    history = BitHistory(bits, matches=2)
    history.add(stored)
    every = np.concatenate([stored, calls])
    expected = []
    for i in range(len(stored), len(every)):
        nearest = np.sort((unpacked(every[i : i + 1]) != unpacked(every[:i])).sum(1))
        expected.append(1.0 - nearest[1] / bits)
    np.testing.assert_array_equal(history.scores(calls), expected)


@pytest.mark.parametrize("stream", ["distinct", "near_duplicates"])
def test_blacklight_counts_the_digests_shared_within_a_call_exactly_by_pairs_or_by_product(digits, stream):
    """Rows of one call that share digests: paired digest by digest when few rows share each (distinct images),
    overlapped by a matrix product when many do (an attack's near-duplicates); either way the counts of brute
    force."""
    rng = np.random.default_rng(10)
    x = digits.data.eval.x[:256] if stream == "distinct" else square_like(digits.data.eval.x[0], 256, rng)
    prints = fingerprints(x, step=0.25, window=20, stride=1, kept=50)
    holding = np.unique(prints.digests, return_counts=True)[1]
    by_pairs = (holding * (holding - 1)).sum() // 2 <= len(x) ** 2
    assert by_pairs == (stream == "distinct")
    row, shared = _shared_with(prints, [])
    sets = [set(prints.row(i).tolist()) for i in range(len(prints))]
    expected = sorted((i, len(sets[i] & sets[j])) for i in range(len(sets)) for j in range(i) if sets[i] & sets[j])
    assert sorted(zip(row.tolist(), shared.tolist())) == expected


def test_blacklight_runs_merge_as_one_sorted_run_older_postings_first():
    rng = np.random.default_rng(11)

    def run(n: int, first: int) -> _Postings:
        digests = np.sort(rng.integers(0, 50, n).astype(np.uint64))
        return _Postings(digests, np.arange(first, first + n))

    older, newer = run(300, 0), run(70, 300)
    merged = older.merged(newer)
    order = np.argsort(np.concatenate([older.digests, newer.digests]), kind="stable")
    np.testing.assert_array_equal(merged.digests, np.concatenate([older.digests, newer.digests])[order])
    np.testing.assert_array_equal(merged.numbers, np.concatenate([older.numbers, newer.numbers])[order])


def test_piha_hashes_leave_out_the_frequencies_the_resize_leaves_empty_and_do_not_depend_on_the_batch(digits):
    detector = hashing_detector(digits, "piha")
    assert detector.bits == 80  # 8x8 upsampled to 32x32: the 9th frequency of each axis is 0 for every image
    x = digits.data.eval.x[:50]
    hashes = detector.features(x)
    assert hashes.shape == (50, 2)
    np.testing.assert_array_equal(hashes, np.concatenate([detector.features(row[None]) for row in x]))
    on_cifar = Piha().deploy(digits.judge, OperatorKit(np.zeros((2, 3, 32, 32), np.float32), np.zeros(2), 10, seed=0))
    assert on_cifar.detector.bits == 99  # nothing resized: every frequency of the 10x10 block but the constant


@pytest.mark.parametrize("name", DEFENSES)
def test_the_configured_honest_stream_is_rarely_flagged(detectors, digits, name):
    """The runner's measurement on the config's `benign:` stream: 10 accounts x 50 queries, 15% of them an earlier
    input sent again, re-framed or relit; fresh ones from the evaluation examples past the 200 attacked, then the
    attacker's pool."""
    pool = np.concatenate([digits.data.eval.x[200:], digits.data.attacker.x])
    report = false_positive_rates(detectors[name], benign_stream(pool, BenignStreamSpec(10, 50)))
    assert report.per_query <= 0.01, f"{name}: {report.queries_flagged} of {report.queries_sent} flagged"


# --- the kNN detector's parts -------------------------------------------------------------------------------------


def test_knn_score_is_minus_the_mean_distance_to_the_k_nearest_stored(digits):
    detector = KnnSimilarity(encoder="pixels", k=5).detector(digits.judge, operator_kit(digits))
    stored, query = digits.data.attacker.x[:30], digits.data.eval.x[:1]
    distances = np.linalg.norm(stored.reshape(30, -1) - query.reshape(1, -1), axis=1)
    detector.remember(stored[:3], account=0)  # fewer than k stored: the mean over those there are
    np.testing.assert_allclose(detector.scores(query, 0), [-distances[:3].mean()], rtol=1e-5)
    detector.remember(stored[3:], account=0)
    np.testing.assert_allclose(detector.scores(query, 0), [-np.sort(distances)[:5].mean()], rtol=1e-5)


def test_k_smallest_is_exact_with_many_ties():
    keys = torch.from_numpy(np.random.default_rng(5).integers(0, 40, size=(7, 5_003)).astype(np.float32))
    columns = k_smallest(keys, 50)  # 5,003 points in blocks: the two-stage search, and a partial last block
    assert columns.shape == (7, 50)
    assert all(len(set(row)) == 50 for row in columns.tolist()), "a point picked twice"
    picked = keys.gather(1, columns).sort(dim=1).values
    torch.testing.assert_close(picked, keys.sort(dim=1).values[:, :50], rtol=0, atol=0)


def test_the_threshold_flags_about_fpr_of_the_operators_data_left_one_out(detectors, digits):
    detector = detectors["knn_pixels"]
    scores = detector.leave_one_out_scores(digits.data.judge.x)
    assert np.mean(scores >= detector.threshold) <= 0.001 + 1 / len(scores)
    # and the check discriminates: a threshold at the 0.99 quantile would flag more
    assert np.mean(scores >= np.quantile(scores, 0.99)) > 0.001 + 1 / len(scores)


def test_the_penultimate_encoder_is_the_judge_without_its_last_layer(digits):
    encoder = penultimate_encoder(digits.judge)
    x = digits.data.eval.x[:16]
    with torch.no_grad():
        logits = digits.judge(torch.from_numpy(x))
        np.testing.assert_allclose(digits.judge.net[-1](encoder(x)), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("on_detection", ["ban", "reject"])
def test_the_penultimate_detector_runs_the_judges_trunk_once_per_screened_row_and_its_head_once_per_answer(
    digits, on_detection
):
    """The kNN over the judge's penultimate layer shares the Oracle's forward pass: the trunk's features of a
    row the detector is shown are what it scores and what the answer is read from, through the judge's own last
    layer. So that layer is where an independent count of the judge's evaluations is taken: it sees every answered
    row once and no other; the trunk sees every row within the limits once (the detector's encoder always did,
    flagged rows and those after them included); the whole judge (trunk and head in one call) sees no query at all.
    The answers are the bare judge's."""
    data, judge = digits.data, digits.judge
    shield = KnnSimilarity(encoder="penultimate", on_detection=on_detection).deploy(judge, operator_kit(digits))
    detector = shield.detector
    assert detector.shared_forward(judge) is not None
    shape = dict(input_shape=data.input_shape, n_classes=data.n_classes)
    api = Oracle(judge, AccessPolicy("hidden", "probabilities", 40, accounts=2), **shape, shield=shield)
    bare = Oracle(judge, AccessPolicy("hidden", "probabilities", None), **shape)
    api.plan(3)
    bare.plan(3)
    benign = data.eval.x[10:30]
    attack = square_like(data.eval.x[0], 45, np.random.default_rng(8))
    calls = [  # an attack's 45 rows (5 past the budget), then benign rows; benign rows from each account
        (np.concatenate([attack, benign]), [0] * 45 + [1] * 20, 0),
        (benign, [2] * 20, 1),
        (benign[:5], [2] * 5, 0),
    ]
    head, trunk, whole = RowCounter(detector.encoder.head), RowCounter(detector.encoder.net), RowCounter(judge)
    replies, admitted = [], 0
    with head, trunk, whole:
        for x, keys, account in calls:
            heard = account not in api.banned  # a banned account's rows reach neither the detector nor the judge
            replies.append(api.query_rows(x, keys, account=account))
            admitted += heard * int((~replies[-1].over_budget & ~replies[-1].refused_by_account).sum())
    assert any(reply.rejected.any() for reply in replies), "the attack's rows should be flagged"
    answered = sum(int(reply.answered.sum()) for reply in replies)
    assert head.rows == api.rows_evaluated == answered
    assert trunk.rows == admitted  # once each, as the detector's encoder always did, and not once more to answer
    assert whole.rows == 0
    assert api.queries_total == answered + sum(int(reply.rejected.sum()) for reply in replies)
    for (x, keys, _), reply in zip(calls, replies):
        asked = [key for key, answered in zip(keys, reply.answered) if answered]
        expected = bare.query_rows(x[reply.answered], asked).values
        np.testing.assert_allclose(reply.values[reply.answered], expected, rtol=1e-5, atol=1e-7)


class _Scaled(nn.Module):
    """A judge whose logits are scaled after its last Linear layer: the layer is not its last step."""

    def __init__(self, judge: nn.Module) -> None:
        super().__init__()
        self.judge = judge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3.0 * self.judge(x)


def test_the_oracle_shares_the_forward_pass_only_with_the_judge_whose_head_ends_it(digits):
    defense = KnnSimilarity(encoder="penultimate")
    detector = defense.detector(digits.judge, operator_kit(digits))
    assert detector.shared_forward(digits.judge) is not None
    assert detector.shared_forward(_Scaled(digits.judge)) is None  # another model than the one it was cut from
    scaled = _Scaled(digits.judge)
    assert defense.detector(scaled, operator_kit(digits)).shared_forward(scaled) is None
    for name in ("knn_pixels", "knn_similarity"):
        assert DEFENSES[name]().detector(digits.judge, operator_kit(digits)).shared_forward(digits.judge) is None


def test_the_similarity_encoder_is_reproducible_from_the_operators_seed(digits):
    def embed(seed: int) -> torch.Tensor:
        defense = KnnSimilarity(encoder="similarity", train_steps=3)
        return defense.detector(digits.judge, operator_kit(digits, seed)).encoder(digits.data.eval.x[:8])

    torch.testing.assert_close(embed(0), embed(0), rtol=0, atol=0)
    assert not torch.equal(embed(0), embed(1))


# --- the defenses: check, deploy, config --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["knn_similarity", "blacklight", "piha"])
def test_check_refuses_attacks_that_send_no_queries(name):
    defense = read_yaml(name).instance
    policy = AccessPolicy("hidden", "probabilities", 100)
    for threat_model in (SCORE_BASED, DECISION_BASED, HYBRID):
        defense.check(policy, threat_model, name)
    for threat_model in (WHITE_BOX, TRANSFER):
        with pytest.raises(ValueError) as refused:
            defense.check(policy, threat_model, name)
        assert str(refused.value) == (
            f"defense={name} watches queries, but attack threat model {threat_model.name} sends none; "
            "allowed: score-based, decision-based or hybrid attacks"
        )


@pytest.mark.parametrize("name", DEFENSES)
def test_deploy_serves_the_judge_unchanged_with_a_thresholded_detector(shields, digits, name):
    shield = shields[name]
    assert DEFENSES[name]().kind == "detection"
    assert shield.model is digits.judge and shield.output_filter is None
    assert isinstance(shield.detector, HistoryDetector) and np.isfinite(shield.detector.threshold)


def class_defaults(cls: type) -> dict:
    """Each keyword-only `__init__` parameter along the class's bases and its default."""
    defaults = {}
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass is not object:
            for key, parameter in inspect.signature(klass.__init__).parameters.items():
                if parameter.kind is parameter.KEYWORD_ONLY:
                    defaults.setdefault(key, parameter.default)
    return defaults


def read_yaml(name: str, **changes):
    values = dict(OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml")), **changes)
    return read_component(Node(values, "defense"), "defense", Defense)


@pytest.mark.parametrize("name, cls", [("knn_similarity", KnnSimilarity), ("blacklight", Blacklight), ("piha", Piha)])
def test_each_yaml_builds_its_defense_with_every_hyperparameter_commented(name, cls):
    component = read_yaml(name)
    assert component.name == name and type(component.instance) is cls
    assert set(component.params) == set(declared_hyperparameters(cls.__mro__))
    assert dict(component.params) == class_defaults(cls), "the YAML and the class defaults differ"
    for line in (CONF / f"{name}.yaml").read_text().splitlines():
        if line.split(":")[0] in component.params:
            assert "#" in line, f"{name}.yaml: no comment on {line!r}"


@pytest.mark.parametrize(
    "name, key, value, allowed",
    [
        ("knn_similarity", "k", 0, "a positive integer"),
        ("knn_similarity", "fpr", 1.5, "a number in [0, 1]"),
        ("knn_similarity", "encoder", "raw", "similarity, penultimate, pixels"),
        ("blacklight", "scope", "everyone", "account, global"),
        ("blacklight", "quantization_step", 0, "a number in (0, 1]"),
        ("piha", "block", 1, "an integer >= 2"),
        ("blacklight", "matches", 0, "a positive integer"),
        ("piha", "matches", 1.5, "a positive integer"),
    ],
)
def test_the_config_boundary_names_the_key_out_of_range(name, key, value, allowed):
    with pytest.raises(ConfigError) as refused:
        read_yaml(name, **{key: value})
    assert str(refused.value) == f"defense.{key}={value!r}: allowed: {allowed}"


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: KnnSimilarity(k=0), "defense.k=0: allowed: a positive integer"),
        (lambda: KnnSimilarity(fpr=float("nan")), "defense.fpr=nan: allowed: a number in [0, 1]"),
        (lambda: KnnSimilarity(encoder="raw"), "defense.encoder='raw': allowed: similarity, penultimate, pixels"),
        (lambda: Blacklight(window_size=True), "defense.window_size=True: allowed: a positive integer"),
        (lambda: Piha(scope="all"), "defense.scope='all': allowed: account, global"),
        (lambda: Piha(resize=8, block=9), "defense.block=9: more frequencies than the 8x8 resized image has; "),
        (lambda: Blacklight(matches=0), "defense.matches=0: allowed: a positive integer"),
        (lambda: Piha(matches=2.0), "defense.matches=2.0: allowed: a positive integer"),
    ],
)
def test_a_defense_built_in_code_refuses_values_out_of_range(build, message):
    with pytest.raises(ValueError) as refused:
        build()
    assert str(refused.value).startswith(message)


def test_blacklight_refuses_a_window_longer_than_the_input(digits):
    with pytest.raises(ValueError, match=r"^defense\.window_size=65: longer than the 64 values of one input"):
        Blacklight(window_size=65).deploy(digits.judge, operator_kit(digits))


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_screening_every_row_scores_and_stores_as_scoring_then_remembering(name, digits, detectors):
    """`screen_every` (the Oracle's call when a flag only rejects): the scores of `scores`, every row stored."""
    detector = detectors[name].fresh()
    rng = np.random.default_rng(7)
    images = digits.data.eval.x[:5].repeat(4, axis=0)
    x = np.clip(images + rng.uniform(-0.05, 0.05, images.shape), 0, 1).astype(np.float32)
    reference = detectors[name].fresh()
    expected = reference.scores(x, account=0)
    flags, scores = detector.screen_every(x, account=0)
    np.testing.assert_allclose(scores, expected)
    assert (flags == (expected >= detector.threshold)).all()
    assert detector.stored(0) == 20 and detector.stored(1) == 0
