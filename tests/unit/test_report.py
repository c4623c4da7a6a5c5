"""The report's value-of-hiding table: one cell per access and budget, seeds pooled, and what each step of hiding
buys tested on the same examples."""

from __future__ import annotations

import numpy as np

from gavel.experiments.statistics import mcnemar_test, rate_interval
from gavel.reports.report import Record, value_of_hiding


def record(threat_model: str, budget, seed: int, success: list[int], attack: str = "", **overrides) -> Record:
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
        run_id=f"{threat_model}{attack}{budget}{seed}{overrides}",
        name=f"{threat_model}-b{budget}-s{seed}",
        status="FINISHED",
        tags={
            "threat_model": threat_model,
            "attack": attack or threat_model,
            "judge": "cnn",
            "defense": "none",
            "overrides": " ".join(f"{k}={v}" for k, v in overrides.items()),
        },
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
    assert table[0] == ["judge", "defense", "setting", "white_box", "score_based @ 100"]
    pooled = rate_interval(5, 8)
    assert table[1][3] == f"0.625 [{pooled.low:.3f}, {pooled.high:.3f}] (2 seeds)"
    (step,) = gains[1:]
    assert step[5].startswith("+0.500 [")  # 5/8 fooled with open weights, 1/8 through the score API
    low, high = (float(v) for v in step[5].split("[")[1].rstrip("]").split(", "))
    assert low <= 0.5 <= high
    expected = mcnemar_test(np.array([1, 1, 1, 0, 1, 1, 0, 0], bool), np.array([1, 0, 0, 0, 0, 0, 0, 0], bool))
    assert step[6] == f"{expected.p_value:.3g} (4 vs 0 discordant)"


def test_different_attacks_and_settings_are_never_pooled_as_seeds():
    runs = [
        record("score_based", 100, 0, [1, 1, 1, 1], attack="square"),
        record("score_based", 100, 0, [0, 0, 0, 0], attack="simba"),
        record("score_based", 100, 0, [1, 0, 0, 0], attack="square", accounts="10"),
    ]
    table, gains = value_of_hiding(runs)
    # simba and square on the same examples: their union, every example fooled (pooled as seeds, they would be 0.5)
    assert table[0][3:] == ["score_based square @ 100", "score_based union(simba,square) @ 100"]
    assert [row[2] for row in table[1:]] == ["-", "accounts=10"]  # a setting of its own: a row of its own
    assert table[1][3] == "-" and table[1][4].startswith("1.000 [")
    assert table[2][3].startswith("0.250 [") and table[2][4] == "-"
    assert not any("seeds" in cell for row in table for cell in row)


def test_one_run_per_cell_shows_its_own_interval():
    table, gains = value_of_hiding([record("transfer", None, 0, [1, 0, 0, 0])])
    assert table[1][3].startswith("0.250 [") and "seeds" not in table[1][3]
    assert len(gains) == 1  # one access: no step to measure
