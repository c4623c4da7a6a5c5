"""The sweep table: runs that differ only in their seed are pooled, with the pooled interval."""

from __future__ import annotations

import pytest

from gavel.experiments.statistics import rate_interval
from gavel.reports.table import format_table, pool_seeds, run_overrides


def row(seed: int, success: float, n: int, **overrides) -> dict:
    return {
        "run_id": f"r{seed}{overrides}",
        "status": "FINISHED",
        "threat_model": "score_based",
        "attack": "square",
        "defense": "none",
        "output": "probabilities",
        "budget": "100",
        "eps": "Linf 0.1",
        "overrides": {"seed": str(seed), **overrides},
        "attack_success_rate": success,
        "n_attacked": float(n),
        "robust_accuracy": 0.5,
        "n_examples": 100.0,
        "queries_median": 100.0 if seed else 80.0,
    }


def test_runs_that_differ_only_in_their_seed_are_pooled_over_their_examples():
    rows = [row(0, 0.25, 40), row(1, 0.5, 60), row(0, 0.1, 50, defense_k="2"), row(1, 0.3, 50, defense_k="2")]
    pooled = pool_seeds(rows)
    assert len(pooled) == 2 and all(r["seeds"] == 2 for r in pooled)
    first = next(r for r in pooled if "defense_k" not in r["overrides"])
    assert first["attack_success_rate"] == pytest.approx((10 + 30) / 100) and first["n_attacked"] == 100
    interval = rate_interval(40, 100)
    assert (first["attack_success_rate_ci_low"], first["attack_success_rate_ci_high"]) == (interval.low, interval.high)
    assert first["queries_median"] == 90.0  # other figures: the mean over the seeds
    table = format_table(rows)
    assert "seeds" in table.splitlines()[0] and "[0.309, 0.498]" in table


def test_without_a_seed_axis_the_rows_stay_as_they_are():
    rows = [row(0, 0.25, 40), row(0, 0.5, 60, defense_k="2")]
    assert pool_seeds(rows) == rows


def test_run_overrides_reads_the_overrides_tag_as_keys_and_values():
    tags = {"overrides": "attack=square +defense.k=5 access.budget=1000 ~seed run_label=a=b"}
    assert run_overrides(tags) == {"attack": "square", "defense.k": "5", "access.budget": "1000", "run_label": "a=b"}
    assert run_overrides({}) == {}
