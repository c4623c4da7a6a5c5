"""The Oracle behind a protocol: the attacker's view (`QueryAPI`) apart from the operator's (`OperatorView`), time
from a `Clock`, and counts that stay exact under concurrent callers and whatever answers the rows (a responder)."""

import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from gavel.targets.access import (
    AccessPolicy,
    AttackerClient,
    OperatorView,
    Oracle,
    Output,
    QueryAPI,
    SimulatedClock,
    WallClock,
)
from gavel.targets.access.responder import Response, ShieldResponder, blank
from gavel.targets.access.shield import Shield


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 5))


def inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 4, 4), dtype=np.float32)


def oracle(**policy) -> Oracle:
    values = dict(weights="hidden", output="probabilities", budget=None) | policy
    made = Oracle(model(), AccessPolicy(**values), input_shape=(1, 4, 4), n_classes=5)
    return made


def test_the_oracle_is_both_views_and_the_client_needs_only_the_attackers():
    o = oracle()
    assert isinstance(o, QueryAPI) and isinstance(o, OperatorView)
    client = AttackerClient(o)
    client.plan(2)
    assert client.query(inputs(3), example=0).shape == (3, 5)
    assert o.queries_total == 3


def test_simulated_clock_is_the_default_and_spaces_queries_by_the_rate():
    o = oracle(rate=60.0)
    o.plan(1)
    o.query(inputs(5), example=0)
    assert o.clock == pytest.approx(5.0)  # 60 queries per minute: one a second, simulated


def test_wall_clock_times_the_ledger_as_it_passes():
    o = Oracle(
        model(),
        AccessPolicy(weights="hidden", output="label", budget=None, rate=1.0),
        input_shape=(1, 4, 4),
        n_classes=5,
        clock=WallClock(),
    )
    o.plan(1)
    o.query(inputs(2), example=0)
    time.sleep(0.05)
    o.query(inputs(2, 1), example=0)
    first, second = o.ledger
    assert second.start >= first.end + 0.04  # real time passed; the rate did not add 120 simulated seconds
    assert o.clock < 60


def test_simulated_clock_is_exact_under_threads():
    clock = SimulatedClock()
    threads = [threading.Thread(target=lambda: [clock.wait(0.5) for _ in range(1000)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.now() == 4000.0


@pytest.mark.parametrize("output", ["logits", "probabilities", "label"])
def test_answers_are_todays_through_the_shield_responder(output):
    """The responder split changes no answer: the same rows as the judge's own forward (and its arg-max)."""
    judge = model()
    o = Oracle(judge, AccessPolicy(weights="hidden", output=output, budget=None), input_shape=(1, 4, 4), n_classes=5)
    o.plan(1)
    x = inputs(9)
    with torch.no_grad():
        logits = judge(torch.from_numpy(x))
    expected = {
        "logits": logits.numpy(),
        "probabilities": torch.softmax(logits, 1).numpy(),
        "label": logits.argmax(1).numpy(),
    }[output]
    np.testing.assert_allclose(o.query(x, example=0), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(o.verdicts(x), logits.argmax(1).numpy())


def test_concurrent_callers_never_get_an_answer_past_the_quota_or_the_budget():
    o = oracle(account_limit=100, accounts=1, budget=400)
    o.plan(4)
    answered = []
    lock = threading.Lock()

    def caller(seed: int) -> None:
        for k in range(20):
            reply = o.query_rows(inputs(7, seed * 100 + k), [seed % 4] * 7, account=0)
            with lock:
                answered.append(int(reply.answered.sum()))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(answered) == 100 == o.queries_total == sum(entry.evaluated for entry in o.ledger)


class QuotaService:
    """A responder like a remote service's: it answers through a shield, and refuses an account's rows past its own
    quota (a 429), which the attacker's side does not know in advance."""

    def __init__(self, quota: int) -> None:
        self.inner = ShieldResponder(Shield(model()), n_classes=5)
        self.quota = quota
        self.used: dict[int, int] = {}
        self.banned: set[int] = set()
        self.model = None  # answers over an API: no weights

    def respond(self, x: np.ndarray, account: int, output: Output) -> Response:
        left = self.quota - self.used.get(account, 0)
        take = max(0, min(left, len(x)))
        self.used[account] = self.used.get(account, 0) + take
        inner = self.inner.respond(x[:take], account, output)
        values = blank(output, len(x), 5)
        values[:take] = inner.values
        refused = np.arange(len(x)) >= take
        none = np.zeros(len(x), dtype=bool)
        return Response(values, ~refused, none, none, refused, False)

    def verdicts(self, x, output):
        return self.inner.verdicts(x, output)

    def served_probabilities(self, x):
        return self.inner.served_probabilities(x)


def test_a_services_own_quota_refusal_moves_the_client_to_its_next_key():
    service = QuotaService(quota=5)
    policy = AccessPolicy(weights="hidden", output="label", budget=None, accounts=3)
    o = Oracle(None, policy, input_shape=(1, 4, 4), n_classes=5, responder=service)
    client = AttackerClient(o)
    client.plan(1)
    assert client.query(inputs(12), example=0).shape == (12,)
    assert service.used == {0: 5, 1: 5, 2: 2}
    assert o.queries_total == 12 and [e.account for e in o.ledger] == [0, 1, 2]
    with pytest.raises(Exception, match="no weights"):
        Oracle(None, AccessPolicy(weights="open", output="label", budget=None), input_shape=(1, 4, 4), n_classes=5,
               responder=service).open_weights()  # fmt: skip


class WithholdingService(QuotaService):
    """A service that refuses a whole request for a detector's flag on its last row, withholding the answers of the
    rows before it (evaluated and charged), as MLflow's protocol does."""

    def respond(self, x: np.ndarray, account: int, output: Output) -> Response:
        n = len(x)
        none = np.zeros(n, dtype=bool)
        flagged = np.arange(n) == n - 1
        return Response(blank(output, n, 5), none, flagged, none, none, True, withheld=~flagged)


def test_withheld_rows_are_charged_unanswered_and_only_the_flagged_row_is_a_detection():
    policy = AccessPolicy(weights="hidden", output="label", budget=None, accounts=2)
    o = Oracle(None, policy, input_shape=(1, 4, 4), n_classes=5, responder=WithholdingService(quota=100))
    o.plan(1)
    reply = o.query_rows(inputs(8), [0] * 8, account=0)
    assert reply.rejected.all() and not reply.answered.any() and reply.account_banned
    assert o.queries_total == 8 and len(o.detections) == 1 and o.detections[0].query == 8


def test_an_example_refused_by_the_services_quota_is_not_exhausted():
    """Rows within the budget that the service refused for the account's quota leave the example's budget unspent."""
    o = Oracle(None, AccessPolicy(weights="hidden", output="label", budget=5, accounts=1), input_shape=(1, 4, 4),
               n_classes=5, responder=QuotaService(quota=2))  # fmt: skip
    o.plan(1)
    o.query_rows(inputs(8), [0] * 8, account=0)
    assert o.queries(0) == 2 and o.allowance(0) == 3 and not o.exhausted(0)


def test_the_wall_clock_starts_when_the_attack_plans_and_a_call_is_timed_from_before_it_is_answered():
    class SlowService(QuotaService):
        def respond(self, x, account, output):
            time.sleep(0.05)
            return super().respond(x, account, output)

    o = Oracle(None, AccessPolicy(weights="hidden", output="label", budget=None), input_shape=(1, 4, 4), n_classes=5,
               responder=SlowService(quota=100), clock=WallClock())  # fmt: skip
    time.sleep(0.1)  # setting up (the evaluator's clean verdicts, a surrogate) is not the attack's time
    o.plan(1)
    o.query(inputs(2), example=0)
    (entry,) = o.ledger
    assert entry.start < 0.04 and entry.end - entry.start >= 0.045 and o.real_time
