"""The operator's shield inside the Oracle: a detected query is rejected (charged, never evaluated) and bans
its account; a banned account's queries are refused (counted, never charged, never evaluated); the client moves
on to its next account; output filters change every answer and the operator's own verdicts alike.

The judge writes down every row it evaluates (tests/helpers/tagging.py), so what the Oracle says it evaluated
is checked against what the judge really saw."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from gavel.targets.access import AttackerClient
from gavel.targets.access.errors import QueryRefused, QueryRejected
from gavel.targets.access.shield import Detector, OutputFilter, Shield
from tests.helpers.tagging import N_CLASSES, SHAPE, oracle, rows_for


class MarkedRowDetector(Detector):
    """Flags a row whose pixel (0, 0, 1) is above 0.5 (the test marks the rows it wants caught); stores every
    row it is told to, per account."""

    threshold = 0.5

    def __init__(self) -> None:
        self.history: dict[int, list[np.ndarray]] = {}

    def scores(self, x: np.ndarray, account: int) -> np.ndarray:
        return x[:, 0, 0, 1].astype(np.float64)

    def remember(self, x: np.ndarray, account: int) -> None:
        self.history.setdefault(account, []).extend(x)

    def fresh(self) -> MarkedRowDetector:
        return MarkedRowDetector()


def marked(keys, suspicious, rng) -> np.ndarray:
    x = rows_for(keys, rng)
    x[:, 0, 0, 1] = np.where(np.asarray(suspicious, dtype=bool), 0.9, 0.1)
    return x


def detecting(detector: Detector, on_detection: str = "ban"):
    return lambda judge: Shield(judge, detector=detector, on_detection=on_detection)


def test_a_detected_row_is_charged_not_evaluated_and_bans_its_account():
    detector = MarkedRowDetector()
    judge, api = oracle(shield=detecting(detector), budget=10, accounts=2)
    rng = np.random.default_rng(0)
    keys = [0, 1, 0, 1, 2]
    reply = api.query_rows(marked(keys, [0, 0, 1, 0, 0], rng), keys, account=0)
    assert reply.answered.tolist() == [True, True, False, False, False]
    assert reply.rejected.tolist() == [False, False, True, False, False]
    assert reply.banned.tolist() == [False, False, False, True, True]
    assert not reply.over_budget.any() and not reply.refused_by_account.any()
    assert Counter(judge.seen) == {0: 1, 1: 1}
    assert [api.queries(k) for k in range(3)] == [2, 1, 0]  # the rejected row is charged to example 0
    assert api.rows_evaluated == 2 and api.queries_total == 3
    assert api.banned == {0}
    (detection,) = api.detections
    assert (detection.account, detection.example, detection.query) == (0, 0, 2)
    assert len(detector.history[0]) == 3  # rows after the flagged one were never seen by the detector

    later = api.query_rows(marked([1, 2], [0, 0], rng), [1, 2], account=0)
    assert later.banned.all() and not later.answered.any() and not later.rejected.any()
    assert Counter(judge.seen) == {0: 1, 1: 1} and api.queries_total == 3
    entry = api.ledger[-1]
    assert (entry.requested, entry.evaluated, entry.rejected, entry.banned) == (1, 0, 0, 1)


def test_the_client_moves_on_after_a_ban_and_stops_when_every_account_is_banned():
    judge, api = oracle(shield=detecting(MarkedRowDetector()), budget=10, accounts=2)
    client = AttackerClient(api)
    rng = np.random.default_rng(1)
    keys = [0, 1, 2, 3]
    reply = client.query_rows(marked(keys, [0, 1, 0, 0], rng), keys)
    # account 0 answers row 0 and is banned at row 1; account 1 answers rows 2 and 3 (asked again)
    assert reply.answered.tolist() == [True, False, True, True]
    assert reply.rejected.tolist() == [False, True, False, False]
    assert client.account == 1 and not client.out_of_accounts
    assert [e.account for e in api.ledger if e.evaluated] == [0, 1, 1]
    reply = client.query_rows(marked([0, 1], [1, 0], rng), [0, 1])
    assert reply.rejected.tolist() == [True, False] and not reply.answered.any()
    assert client.out_of_accounts and client.stopped(1) and not client.stopped(0)
    assert Counter(judge.seen) == {0: 1, 2: 1, 3: 1}
    assert [api.queries(k) for k in range(4)] == [2, 1, 1, 1]
    assert api.banned == {0, 1} and len(api.detections) == 2


def test_without_bans_each_flagged_row_is_rejected_alone_and_the_account_goes_on():
    detector = MarkedRowDetector()
    judge, api = oracle(shield=detecting(detector, "reject"), budget=10, accounts=1)
    rng = np.random.default_rng(3)
    keys = [0, 1, 0, 1, 2]
    reply = api.query_rows(marked(keys, [0, 1, 1, 0, 1], rng), keys, account=0)
    assert reply.answered.tolist() == [True, False, False, True, False]
    assert reply.rejected.tolist() == [False, True, True, False, True]
    assert not reply.banned.any() and not reply.account_banned and api.banned == set()
    assert Counter(judge.seen) == {0: 1, 1: 1}
    assert [api.queries(k) for k in range(3)] == [2, 2, 1]  # every rejected row is charged
    assert api.rows_evaluated == 2 and api.queries_total == 5
    assert [(d.account, d.example, d.query) for d in api.detections] == [(0, 1, 1), (0, 0, 2), (0, 2, 1)]
    assert len(detector.history[0]) == 5  # every row screened and stored, flagged ones too

    later = api.query_rows(marked([1, 2], [0, 0], rng), [1, 2], account=0)
    assert later.answered.all() and api.queries_total == 7


def test_without_bans_the_client_keeps_its_account_and_a_library_attack_ends_the_example():
    judge, api = oracle(shield=detecting(MarkedRowDetector(), "reject"), budget=10, accounts=2)
    client = AttackerClient(api)
    rng = np.random.default_rng(4)
    reply = client.query_rows(marked([0, 1], [1, 0], rng), [0, 1])
    assert reply.rejected.tolist() == [True, False] and reply.answered.tolist() == [False, True]
    assert client.account == 0
    with pytest.raises(QueryRejected, match="query rejected") as caught:
        client.query(marked([2, 2], [0, 1], rng), example=2)
    assert not caught.value.banned and len(caught.value.answered) == 1
    assert client.account == 0 and client.stopped(2)


def test_a_spreading_attacker_sends_each_examples_queries_round_its_accounts():
    judge, api = oracle(planned=2, budget=20, accounts=3, sybil="spread", queries_per_visit=2)
    client = AttackerClient(api)
    rng = np.random.default_rng(5)
    for _ in range(4):  # Square-like: one row per example per call
        reply = client.query_rows(rows_for([0, 1], rng), [0, 1])
        assert reply.answered.all()
    # each example's rows 0-1 on account 0, 2-3 on account 1; one call per account per step
    assert [(e.example, e.account) for e in api.ledger] == [(0, 0), (1, 0)] * 2 + [(0, 1), (1, 1)] * 2
    reply = client.query_rows(rows_for([0] * 5, rng), [0] * 5)  # rows 4-8 of example 0: accounts 2, 2, 0, 0, 1
    assert reply.answered.all()
    assert [(e.account, e.evaluated) for e in api.ledger[-3:]] == [(2, 2), (0, 2), (1, 1)]
    assert client.query(rows_for([1] * 3, rng), example=1).shape == (3,)  # rows 4-6 of example 1: 2, 2, 0
    assert [(e.account, e.evaluated) for e in api.ledger[-2:]] == [(2, 2), (0, 1)]
    assert Counter(judge.seen) == {0: 9, 1: 7} and api.queries(0) == 9 and api.queries(1) == 7


def test_a_spreading_attacker_drops_a_banned_account_and_asks_again_on_the_others():
    judge, api = oracle(planned=2, shield=detecting(MarkedRowDetector()), budget=20, accounts=2, sybil="spread")
    client = AttackerClient(api)
    rng = np.random.default_rng(6)
    reply = client.query_rows(marked([0, 1, 0, 1], [0, 1, 0, 0], rng), [0, 1, 0, 1])
    # account 0 answers row 0, rejects row 1 and is banned: rows 2 and 3 are asked again on account 1
    assert reply.answered.tolist() == [True, False, True, True] and reply.rejected.tolist() == [
        False,
        True,
        False,
        False,
    ]
    assert api.banned == {0} and not client.out_of_accounts
    reply = client.query_rows(marked([0, 1], [0, 0], rng), [0, 1])
    assert reply.answered.all() and {e.account for e in api.ledger[-1:]} == {1}
    with pytest.raises(QueryRejected):
        client.query(marked([1], [1], rng), example=1)
    assert client.out_of_accounts
    reply = client.query_rows(marked([0], [0], rng), [0])
    assert not reply.answered.any() and client.stopped(0)
    assert Counter(judge.seen) == {0: 3, 1: 2}


def test_rows_over_budget_or_quota_never_reach_the_detector():
    detector = MarkedRowDetector()
    judge, api = oracle(shield=detecting(detector), budget=2, account_limit=3, accounts=1)
    rng = np.random.default_rng(2)
    keys = [0, 0, 0, 1, 1]
    reply = api.query_rows(marked(keys, [0, 0, 1, 0, 1], rng), keys, account=0)
    # example 0's third row is over budget (refused before the detector), example 1's second over the quota
    assert reply.over_budget.tolist() == [False, False, True, False, False]
    assert reply.answered.tolist() == [True, True, False, True, False]
    assert not reply.rejected.any() and not reply.banned.any() and api.banned == set()
    assert len(detector.history[0]) == 3


@pytest.mark.parametrize("sybil", ["rotate", "spread"])
@pytest.mark.parametrize("on_detection", ["ban", "reject"])
@pytest.mark.parametrize("trial", range(30))
def test_random_traffic_with_a_detector_is_charged_and_evaluated_exactly(trial, on_detection, sybil):
    """Random batches, random marks, budgets, quotas and accounts: rows evaluated equal what the judge saw,
    charges equal evaluated plus rejected, no banned account is ever answered, no limit is broken; without
    bans, every flagged row is rejected and no account is banned."""
    rng = np.random.default_rng(100 + trial)
    budget = None if rng.random() < 0.3 else int(rng.integers(1, 20))
    limit = None if rng.random() < 0.3 else int(rng.integers(1, 30))
    accounts = int(rng.integers(1, 5))
    planned = int(rng.integers(1, 8))
    judge, api = oracle(
        planned,
        shield=detecting(MarkedRowDetector(), on_detection),
        budget=budget,
        account_limit=limit,
        accounts=accounts,
        sybil=sybil,
        queries_per_visit=int(rng.integers(1, 6)),
    )
    client = AttackerClient(api)
    answered, rejected = Counter(), Counter()
    for _ in range(int(rng.integers(1, 15))):
        keys = rng.integers(0, planned, size=int(rng.integers(0, 25))).tolist()
        marks = rng.random(len(keys)) < 0.1
        if keys and rng.random() < 0.3:  # a library attack's call: one example's rows, answers read in order
            key = keys[0]
            x = marked([key] * len(keys), marks, rng)
            before = (api.queries(key), len(judge.seen))
            try:
                got = len(client.query(x, example=key))
            except QueryRefused as refused:
                got = len(refused.answered)
            seen_now = len(judge.seen) - before[1]
            answered[key] += seen_now
            rejected[key] += api.queries(key) - before[0] - seen_now
            assert got <= seen_now and (on_detection == "reject" or got == seen_now)
            continue
        reply = client.query_rows(marked(keys, marks, rng), keys)
        assert not (reply.answered & reply.rejected).any()
        if on_detection == "reject":  # a marked row within the limits is rejected, an unmarked one never
            assert not (reply.rejected & ~marks).any()
            assert not (reply.answered & marks).any()
        answered.update(k for k, ok in zip(keys, reply.answered) if ok)
        rejected.update(k for k, no in zip(keys, reply.rejected) if no)
    seen = Counter(judge.seen)
    for key in range(planned):
        assert seen[key] == answered[key]
        assert api.queries(key) == answered[key] + rejected[key]
        assert budget is None or api.queries(key) <= budget
    assert api.rows_evaluated == len(judge.seen) == sum(e.evaluated for e in api.ledger)
    assert api.queries_total == sum(e.evaluated + e.rejected for e in api.ledger)
    assert len(api.detections) == sum(rejected.values())
    assert len(api.banned) == (len(api.detections) if on_detection == "ban" else 0)
    banned_in_call = {d.account: d.call for d in api.detections if on_detection == "ban"}
    for entry in api.ledger:
        if entry.call > banned_in_call.get(entry.account, entry.call):
            assert entry.evaluated == 0 and entry.rejected == 0  # nothing after a ban
    per_account = Counter()
    for entry in api.ledger:
        per_account[entry.account] += entry.evaluated + entry.rejected
    assert limit is None or max(per_account.values(), default=0) <= limit


class Halve(OutputFilter):
    """Moves half of the top score's mass to the next class: changes the scores, and the verdict when the top
    two are close."""

    def __call__(self, probabilities: np.ndarray) -> np.ndarray:
        out = probabilities.copy()
        top = out.argmax(axis=1)
        moved = out[np.arange(len(out)), top] / 2
        out[np.arange(len(out)), top] -= moved
        out[np.arange(len(out)), (top + 1) % out.shape[1]] += moved
        return out


@pytest.mark.parametrize("output", ["probabilities", "label"])
def test_an_output_filter_changes_every_answer_and_the_operators_verdicts(output):
    judge, api = oracle(shield=lambda j: Shield(j, output_filter=Halve()), output=output)
    raw_judge, raw_api = oracle(output="probabilities")
    rng = np.random.default_rng(3)
    keys = [0, 1, 2, 3] * 5
    x = rows_for(keys, rng)
    raw = raw_api.query_rows(x, keys).values
    expected = Halve()(raw)
    got = api.query_rows(x, keys).values
    if output == "label":
        np.testing.assert_array_equal(got, expected.argmax(axis=1))
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_array_equal(api.verdicts(x), expected.argmax(axis=1))
    assert api.queries_total == len(keys)  # the operator's own verdicts are not queries
    assert got.shape[0] == len(keys) and SHAPE == x.shape[1:] and raw.shape[1] == N_CLASSES


def test_detection_metrics_count_only_the_attacks_a_detection_cut_off():
    """One call of three examples; example 0's row is flagged. Rows of examples 1 and 2 after it are refused by
    the ban and answered on the next account: their attacks were not cut off. Then the last account is banned
    at example 1: example 2, unfooled with budget left, was cut off too; a fooled example is not."""
    from gavel.attacks.base import AttackResult
    from gavel.experiments.operator_metrics import detection_metrics

    judge, api = oracle(shield=detecting(MarkedRowDetector()), budget=10, accounts=2)
    client = AttackerClient(api)
    rng = np.random.default_rng(4)

    def result(fooled_at):
        queries = np.array([api.queries(k) for k in range(3)])
        return AttackResult(x_adv=np.zeros((3, *SHAPE), np.float32), queries=queries,
                            queries_to_success=np.array(fooled_at), budget_exhausted=np.zeros(3, bool))  # fmt: skip

    reply = client.query_rows(marked([0, 1, 2], [1, 0, 0], rng), [0, 1, 2])
    assert reply.rejected.tolist() == [True, False, False] and reply.answered.tolist() == [False, True, True]
    metrics = detection_metrics(api, result([-1, -1, -1]))
    assert metrics["detection_rate"] == pytest.approx(1 / 3)
    assert metrics["queries_to_detection_median"] == 1.0
    assert metrics["detections_total"] == 1.0
    assert metrics["rejected_query_fraction"] == pytest.approx(3 / 5)  # 1 flagged + 2 banned of 5 received
    client.query_rows(marked([1, 2], [1, 0], rng), [1, 2])  # the last account banned at example 1
    assert client.out_of_accounts and api.accounts_used == 2
    assert detection_metrics(api, result([-1, -1, -1]))["detection_rate"] == 1.0
    assert detection_metrics(api, result([-1, -1, 1]))["detection_rate"] == pytest.approx(2 / 3)


def test_without_bans_queries_to_detection_count_up_to_the_first_flagged_row():
    """A call of ten rows of one example, only the first flagged: the rows after it are answered and charged,
    but the attack was detected at its first query."""
    from gavel.attacks.base import AttackResult
    from gavel.experiments.operator_metrics import detection_metrics

    judge, api = oracle(shield=detecting(MarkedRowDetector(), "reject"), budget=20, accounts=1)
    rng = np.random.default_rng(8)
    api.query_rows(marked([0] * 10, [1] + [0] * 9, rng), [0] * 10, account=0)
    assert api.queries(0) == 10 and api.detections[0].query == 1
    result = AttackResult(x_adv=np.zeros((1, *SHAPE), np.float32), queries=np.array([10]),
                          queries_to_success=np.array([-1]), budget_exhausted=np.zeros(1, bool))  # fmt: skip
    assert detection_metrics(api, result)["queries_to_detection_median"] == 1.0
