"""The report's value-of-hiding table: one cell per access and budget, seeds pooled, and what each step of hiding
buys tested on the same examples."""

from __future__ import annotations

import numpy as np

from experiments.statistics import mcnemar_test, rate_interval
from reports.report import Record, value_of_hiding


def record(threat_model: str, budget, seed: int, success: list[int]) -> Record:
    n = len(success)
    per_example = {
        "index": np.arange(n, dtype=float),
        "attacked": np.ones(n),
        "success": np.array(success, dtype=float),
        "queries": np.full(n, 10.0),
        "linf": np.full(n, 0.1),
    }
    rate = sum(success) / n
    interval = rate_interval(sum(success), n)
    return Record(
        run_id=f"{threat_model}{budget}{seed}",
        name=f"{threat_model}-b{budget}-s{seed}",
        status="FINISHED",
        tags={"threat_model": threat_model, "judge": "cnn", "defense": "none"},
        params={"access.budget": "null" if budget is None else str(budget), "seed": str(seed)},
        metrics={
            "attack_success_rate": rate,
            "attack_success_rate_ci_low": interval.low,
            "attack_success_rate_ci_high": interval.high,
            "n_attacked": float(n),
        },
        per_example=per_example,
    )


def test_seeds_are_pooled_and_each_step_is_tested_on_the_same_examples():
    white = [record("white_box", None, 0, [1, 1, 1, 0]), record("white_box", None, 1, [1, 1, 0, 0])]
    scores = [record("score_based", 100, 0, [1, 0, 0, 0]), record("score_based", 100, 1, [0, 0, 0, 0])]
    table, gains = value_of_hiding([*white, *scores])
    assert table[0] == ["judge", "defense", "white_box", "score_based @ 100"]
    pooled = rate_interval(5, 8)
    assert table[1][2] == f"0.625 [{pooled.low:.3f}, {pooled.high:.3f}] (2 seeds)"
    (step,) = gains[1:]
    assert step[4].startswith("+0.500 [")  # 5/8 fooled with open weights, 1/8 through the score API
    low, high = (float(v) for v in step[4].split("[")[1].rstrip("]").split(", "))
    assert low <= 0.5 <= high
    expected = mcnemar_test(np.array([1, 1, 1, 0, 1, 1, 0, 0], bool), np.array([1, 0, 0, 0, 0, 0, 0, 0], bool))
    assert step[5] == f"{expected.p_value:.3g} (4 vs 0 discordant)"


def test_one_run_per_cell_shows_its_own_interval():
    table, gains = value_of_hiding([record("transfer", None, 0, [1, 0, 0, 0])])
    assert table[1][2].startswith("0.250 [") and "seeds" not in table[1][2]
    assert len(gains) == 1  # one access: no step to measure
