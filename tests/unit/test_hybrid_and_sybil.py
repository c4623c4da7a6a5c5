"""Hybrid and Sybil attackers: more ways to spend queries, never more queries than allowed. (What rate limits
and accounts cost a whole run is tested in tests/integration/test_runner.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.accounting import RowCounter, attackable, make_oracle

from gavel.attacks.base import AttackerKit
from gavel.attacks.hybrid.hybrid import Hybrid
from gavel.attacks.query.square import Square
from gavel.attacks.transfer.transfer_pgd import TransferPGD
from gavel.targets.access import AttackerClient

SQUARE = {"_target_": "gavel.attacks.query.square.Square", "max_iter": 1000, "p_init": 0.8}
HSJ = {"_target_": "gavel.attacks.query.hopskipjump.HopSkipJump", "init_eval": 10, "max_eval": 40}


@pytest.fixture(scope="module")
def setting(digits):
    return digits.data, digits.judge, digits.surrogate, *attackable(digits.judge, digits.data, 60, 24)


@pytest.mark.parametrize("query, output", [(SQUARE, "probabilities"), (HSJ, "label")])
@pytest.mark.parametrize("budget", [1, 10, 60])
def test_hybrid_never_exceeds_the_budget_across_both_stages(setting, query, output, budget):
    data, judge, surrogate, x, y = setting
    oracle = make_oracle(judge, data, output=output, budget=budget)
    with RowCounter(judge) as counter:
        result = Hybrid(eps=0.1, query=query, max_iter=10).run(
            x, y, AttackerKit(client=AttackerClient(oracle), surrogate=surrogate)
        )
    assert counter.rows == oracle.queries_total == int(result.queries.sum())
    assert result.queries.max() <= budget
    seen = result.queries_to_success > 0
    assert np.all(result.queries_to_success[seen] <= result.queries[seen])


@pytest.mark.parametrize("query, output", [(SQUARE, "probabilities"), (HSJ, "label")])
def test_hybrid_keeps_every_success_plain_transfer_has(setting, query, output):
    """Its first transfer candidate is plain transfer's; the query stage only adds."""
    data, judge, surrogate, x, y = setting

    def kit():
        return AttackerKit(
            client=AttackerClient(make_oracle(judge, data, output=output, budget=40)), surrogate=surrogate
        )

    transfer = TransferPGD(eps=0.1, max_iter=10).run(x, y, kit())
    hybrid = Hybrid(eps=0.1, query=query, max_iter=10).run(x, y, kit())
    transferred = transfer.queries_to_success == 1
    assert np.all(hybrid.queries_to_success[transferred] == 1)
    assert (hybrid.queries_to_success > 0).sum() >= transferred.sum()


def test_hybrid_refuses_a_query_stage_that_cannot_start_from_a_transfer_example():
    with pytest.raises(ValueError, match="attack.query"):
        Hybrid(eps=0.1, query={"_target_": "gavel.attacks.white_box.pgd.PGD"})


def test_sybil_attacker_rotates_accounts_and_stops_when_all_are_spent(setting):
    data, judge, _, x, y = setting
    oracle = make_oracle(judge, data, output="probabilities", budget=50, account_limit=40, accounts=3)
    client = AttackerClient(oracle)
    with RowCounter(judge) as counter:
        result = Square(eps=0.1).run(x, y, AttackerKit(client=client))
    assert counter.rows == oracle.queries_total == int(result.queries.sum()) <= 3 * 40
    assert result.queries.max() <= 50
    assert oracle.accounts_used <= 3
    if client.out_of_accounts:  # every example after the last account ran out was given up, unqueried
        last = int(np.flatnonzero(result.queries)[-1])
        assert np.all(result.queries[last + 1 :] == 0) and np.all(result.budget_exhausted[last + 1 :])


def test_more_accounts_only_add_successes(setting):
    """Seeded per example, the attacker asks the same questions until its accounts run out: more accounts reach
    more examples (a fact of the accounting, on any weights), and every success fewer accounts saw is seen again
    (eps 0.2: the most accounts fool some example on any judge, so the check is not vacuous)."""
    data, judge, _, x, y = setting
    outcomes, reached = [], []
    for accounts in (1, 2, 4):
        oracle = make_oracle(judge, data, output="probabilities", budget=100, account_limit=60, accounts=accounts)
        kit = AttackerKit(client=AttackerClient(oracle))
        result = Square(eps=0.2).run(x, y, kit)
        outcomes.append(result.queries_to_success > 0)
        reached.append(int((result.queries > 0).sum()))
    assert np.all(outcomes[0] <= outcomes[1]) and np.all(outcomes[1] <= outcomes[2])
    assert outcomes[2].any()
    assert reached[0] < reached[2] or reached[0] == len(x)
