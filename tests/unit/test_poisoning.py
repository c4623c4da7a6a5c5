"""Poisoning by data contributors, counted exactly: how the judge's pool is dealt among `data.contributors`, which
examples the attacker's contributors poison and how, the cache key of a poisoned judge, and the backdoor attack's
one charged query per example with the metrics the run logs. Facts of accounting, true on any trained weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.accounting import RowCounter, attackable, make_oracle
from helpers.configs import tiny_settings
from helpers.poisoning import backdoor_run

from gavel.attacks.base import AttackerKit
from gavel.attacks.poisoning.backdoor import Backdoor
from gavel.attacks.poisoning.badnets import BadNets
from gavel.attacks.poisoning.base import PoisonContext, stamp_patch
from gavel.experiments import runner
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.experiments.training_stage import train_judge
from gavel.targets.access import AttackerClient
from gavel.targets.datasets import split_among
from gavel.targets.errors import SourceError
from gavel.targets.training import ModelSpec, predict_labels

POOL = 898
"""Examples in the digits judge's training pool (half of scikit-learn's 1,797 digits)."""


def settings_for(*overrides: str) -> RunSettings:
    return RunSettings.from_config(compose_config(list(overrides)))


def contributed(*overrides: str):
    """The poison of the real config with `overrides` applied to its judge's pool, as the training stage applies it
    (a seed of its own): (the poison, the clean pool, who contributed each example, the poisoned pool)."""
    settings = settings_for(*overrides)
    data = settings.data_instance.load()
    poison = settings.poison_instance
    context = PoisonContext(
        data.contributors, settings.data_instance.contributors, 11, data.attacker, settings.cache_dir
    )
    return poison, data.judge, data.contributors, poison.apply(data.judge, context)


# -- contributors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, parties, shares, counts",
    [
        (10, 3, None, [4, 3, 3]),  # equal shares: the remainder to the first
        (898, 10, None, [90] * 8 + [89] * 2),
        (10, 3, [1, 2, 4], [1, 3, 6]),  # 1.43, 2.86, 5.71: the largest remainders rounded up
        (898, 4, [1, 1, 1, 5], [113, 112, 112, 561]),
        (5, 5, None, [1] * 5),
    ],
)
def test_the_pool_is_dealt_among_contributors_in_their_shares(n, parties, shares, counts):
    owners = split_among(n, parties, 0, shares)
    assert len(owners) == n and owners.dtype == np.int64
    assert np.bincount(owners, minlength=parties).tolist() == counts
    assert np.array_equal(split_among(n, parties, 0, shares), owners)  # deterministic by its seed
    other = split_among(n, parties, 1, shares)
    assert np.bincount(other, minlength=parties).tolist() == counts
    assert parties == n or not np.array_equal(other, owners)  # another seed deals other examples to each


def test_data_contributors_and_shares_deal_the_judges_pool_and_nothing_else():
    """`data.contributors` and `data.shares` say who gave each example of the judge's pool (dealt by
    `data.split_seed`); the pools themselves are those of one contributor."""
    one = settings_for().data_instance.load()
    assert np.array_equal(one.contributors, np.zeros(POOL, dtype=np.int64))
    many = settings_for("data.contributors=4", "data.shares=[1,1,1,5]").data_instance.load()
    assert np.bincount(many.contributors).tolist() == [113, 112, 112, 561]
    again = settings_for("data.contributors=4", "data.shares=[1,1,1,5]").data_instance.load()
    assert np.array_equal(again.contributors, many.contributors)
    for pool in ("judge", "attacker", "eval"):
        assert getattr(many, pool).fingerprint() == getattr(one, pool).fingerprint()
    equal = settings_for("data.contributors=10").data_instance.load()
    assert np.bincount(equal.contributors).tolist() == [90] * 8 + [89] * 2


# -- what the attacker poisons ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("poison", ["badnets", "blend", "label_flip"])
@pytest.mark.parametrize("fraction, attackers", [(0.05, 2), (0.01, 1), (0.003, 1)])
def test_the_attackers_contributors_poison_exactly_the_fraction_asked_for(poison, fraction, attackers):
    """round(fraction x pool) examples, all held by the last `poison.contributors` of the ten, none of the target
    class, each relabelled as the target; every other example is left as it was, and the pool keeps its size."""
    planted, clean, owners, out = contributed(
        f"poison={poison}", f"poison.fraction={fraction}", f"poison.contributors={attackers}",
        "poison.target_class=3", "data.contributors=10",
    )  # fmt: skip
    chosen = np.flatnonzero(out.poisoned)
    assert len(chosen) == round(fraction * POOL) and len(out.pool) == len(clean) == POOL
    assert set(owners[chosen]) <= set(range(10 - attackers, 10))
    assert not np.any(clean.y[chosen] == 3)
    assert np.all(out.pool.y[chosen] == 3)
    untouched = ~out.poisoned
    assert np.array_equal(out.pool.x[untouched], clean.x[untouched])
    assert np.array_equal(out.pool.y[untouched], clean.y[untouched])
    np.testing.assert_array_equal(out.pool.x[chosen], planted.trigger(clean.x[chosen]))


def test_the_triggers_are_what_each_paper_plants():
    """BadNets: a white size x size square one pixel in from the bottom-right corner, nothing else changed; blend:
    (1 - alpha) x + alpha x a fixed pattern; label flipping: the input itself."""
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32) * 0.5
    stamped = BadNets(size=2).trigger(x)
    assert np.all(stamped[..., 5:7, 5:7] == 1.0)
    outside = np.ones((8, 8), dtype=bool)
    outside[5:7, 5:7] = False
    assert np.array_equal(stamped[..., outside], x[..., outside])
    assert np.array_equal(stamp_patch(x, 3, 0.25)[..., 4:7, 4:7], np.full((4, 1, 3, 3), 0.25, dtype=np.float32))
    blend, _, _, _ = contributed("poison=blend", "poison.alpha=0.3")
    pattern = blend.pattern((1, 8, 8))
    np.testing.assert_allclose(blend.trigger(x), 0.7 * x + 0.3 * pattern, rtol=0, atol=1e-6)
    assert np.array_equal(pattern, blend.pattern((1, 8, 8)))  # fixed by pattern_seed
    flip, _, _, _ = contributed("poison=label_flip")
    assert np.array_equal(flip.trigger(x), x)


def test_a_null_fraction_poisons_every_example_the_attacker_may_use():
    planted, clean, owners, out = contributed(
        "poison=badnets", "poison.fraction=null", "poison.contributors=2", "data.contributors=10"
    )
    may = (owners >= 8) & (clean.y != planted.target_class)
    assert np.array_equal(out.poisoned, may)


def test_the_same_seed_poisons_the_same_examples():
    first = contributed("poison=badnets", "poison.fraction=0.05", "data.contributors=10")[3]
    again = contributed("poison=badnets", "poison.fraction=0.05", "data.contributors=10")[3]
    assert np.array_equal(first.poisoned, again.poisoned) and np.array_equal(first.pool.x, again.pool.x)


def test_clean_label_poison_takes_only_the_target_class_and_leaves_every_label_alone(digits):
    """Turner et al.: the poisoned examples are the target class's own, made hard within eps on the attacker's own
    model and stamped with the square; no label changes."""
    settings = settings_for(
        "poison=clean_label", "poison.fraction=0.01", "poison.contributors=2", "data.contributors=10"
    )
    data = settings.data_instance.load()
    planted = settings.poison_instance
    context = PoisonContext(data.contributors, 10, 11, data.attacker, digits.cache_dir)
    out = planted.apply(data.judge, context)
    chosen = np.flatnonzero(out.poisoned)
    assert len(chosen) == round(0.01 * POOL)
    assert np.all(data.judge.y[chosen] == planted.target_class) and set(data.contributors[chosen]) <= {8, 9}
    assert np.array_equal(out.pool.y, data.judge.y)
    poisoned, original = out.pool.x[chosen], data.judge.x[chosen]
    assert np.all(poisoned[..., 5:7, 5:7] == 1.0)  # BadNets' square
    rest = np.ones((8, 8), dtype=bool)
    rest[5:7, 5:7] = False
    assert np.abs(poisoned[..., rest] - original[..., rest]).max() <= planted.eps + 1e-6
    assert not np.array_equal(poisoned[..., rest], original[..., rest])  # PGD moved them


def test_a_fraction_the_attacker_cannot_plant_is_refused_naming_the_key():
    with pytest.raises(
        SourceError, match=r"^poison.fraction=0.0001: poisons no example of the 898 .* at least 0.0011$"
    ):
        contributed("poison=badnets", "poison.fraction=0.0001")
    with pytest.raises(SourceError, match=r"^poison.fraction=0.5: 449 examples to poison, but the attacker's 1 "):
        contributed("poison=badnets", "poison.fraction=0.5", "data.contributors=2")


# -- the poisoned judge in the model cache -----------------------------------------------------------------------------


def meta(cache_dir, key: str) -> dict:
    return json.loads((Path(cache_dir) / "models" / key / "meta.json").read_text())


def test_a_poisoned_judge_has_a_key_of_its_own_that_holds_its_poison(digits):
    """The clean judge keeps the key gavel always gave it (contributors change nothing about it); the poisoned one's
    key differs and its spec in meta.json says what was planted; a sanitised one's says what cleaned it too."""
    data = digits.data
    clean_spec = ModelSpec.of("judge", settings_for().target_instance.model, 0, data.judge, data.input_shape, 10)
    for overrides in ([], ["data.contributors=10"]):
        settings = settings_for(*overrides)
        clean = train_judge(settings, settings.data_instance.load(), "cpu").judge
        assert clean.tags["judge_key"] == clean_spec.key
    assert "training_data" not in meta(digits.cache_dir, clean_spec.key)["spec"]
    poisoned = settings_for("poison=badnets", "poison.fraction=0.05")
    key = train_judge(poisoned, poisoned.data_instance.load(), "cpu").judge.tags["judge_key"]
    assert key != clean_spec.key
    planted = meta(digits.cache_dir, key)["spec"]["training_data"]
    assert planted == {"poison": "BadNets", "fraction": 0.05, "contributors": 1, "target_class": 0, "size": 2,
                       "value": 1.0}  # fmt: skip
    tuned = settings_for("poison=badnets", "poison.fraction=0.05", "sanitise=fine_tune", "sanitise.epochs=2")
    tuned_key = train_judge(tuned, tuned.data_instance.load(), "cpu").judge.tags["judge_key"]
    assert tuned_key not in (key, clean_spec.key)
    held = meta(digits.cache_dir, tuned_key)["spec"]["training_data"]
    assert held == {**planted, "sanitiser": "FineTune", "epochs": 2, "lr": 0.001, "batch_size": 32,
                    "fine_tuned_from": key}  # fmt: skip
    other_fraction = settings_for("poison=badnets", "poison.fraction=0.04")
    assert train_judge(other_fraction, other_fraction.data_instance.load(), "cpu").judge.tags["judge_key"] != key


# -- the backdoor at test time ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [None, 1])
def test_the_backdoor_sends_each_example_once_with_the_trigger_charged_to_it(digits, budget):
    """One query per example, through the Oracle, even where one is all the policy allows; the rows the judge
    evaluates are the triggered inputs, and success is the judge answering the target class."""
    x, y = attackable(digits.judge, digits.data, 60, 30)
    oracle = make_oracle(digits.judge, digits.data, output="label", budget=budget, planned=len(x))
    poison = BadNets(size=2, target_class=0)
    with RowCounter(digits.judge) as counter:
        result = Backdoor(target_class=0).run(x, y, AttackerKit(client=AttackerClient(oracle), poison=poison))
    assert counter.rows == oracle.queries_total == len(x)
    assert [oracle.queries(i) for i in range(len(x))] == [1] * len(x) == result.queries.tolist()
    np.testing.assert_array_equal(np.stack(counter.inputs), poison.trigger(x))
    answers = predict_labels(digits.judge, poison.trigger(x))
    assert np.array_equal(result.queries_to_success == 1, answers == 0)
    assert not result.budget_exhausted.any()


def test_a_backdoor_run_attacks_the_examples_the_judge_gets_right_outside_the_target_and_logs_its_metrics(digits):
    """Through the real runner at 5% BadNets: exactly the examples the poisoned judge gets right and that are not of
    the target class are attacked, each charged one query; backdoor_success_rate is attack_success_rate with its
    interval; the clean judge's accuracy on the same examples and the poison planted are logged."""
    n = 60
    m = backdoor_run("poison=badnets", "poison.fraction=0.05", n_examples=n)
    rows = m.rows
    assert len(rows) == n
    for row in rows:
        right_and_other = row["label"] == row["initial_prediction"] and row["label"] != "0"
        assert row["attacked"] == ("1" if right_and_other else "0")
        assert row["queries"] == ("1" if right_and_other else "0")
        if row["success"] == "1":
            assert row["final_prediction"] == "0"
    attacked = sum(row["attacked"] == "1" for row in rows)
    assert m["n_attacked"] == attacked == m["queries_total"]
    for suffix in ("", "_ci_low", "_ci_high"):
        assert m[f"backdoor_success_rate{suffix}"] == m[f"attack_success_rate{suffix}"]
        assert m.logged[f"backdoor_success_rate{suffix}"] == pytest.approx(m[f"attack_success_rate{suffix}"])
    assert m["backdoor_success_rate"] == sum(row["success"] == "1" for row in rows) / attacked
    clean_right = predict_labels(digits.judge, digits.data.eval.x[:n]) == digits.data.eval.y[:n]
    assert m.logged["clean_accuracy_clean_judge"] == pytest.approx(clean_right.mean())
    assert m.logged["poisoned_examples"] == round(0.05 * POOL)
    assert m.tags["threat_model"] == "poisoning" and m.tags["attack"] == "backdoor"
    assert not {"poison_recall", "poison_precision", "honest_removed_fraction"} & set(m.logged)  # no sanitiser


def test_a_run_without_poison_logs_no_poisoning_metric():
    """A figure that does not apply is left out, never logged as 0."""
    settings = tiny_settings("pgd")
    metrics = runner.run(settings, runner.prepare(settings))
    assert not {"backdoor_success_rate", "clean_accuracy_clean_judge", "poisoned_examples"} & set(metrics)
