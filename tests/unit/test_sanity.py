"""Each sanity check warns on the failure it is for (planted: a gradient-masking judge, a randomised one, a weak
attack, a preprocessing defense attacked without BPDA, a black box beating the white box) and an honest attack on
the undefended judge raises none."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from helpers.accounting import attackable
from torch import nn

from gavel.attacks.adapters.art import pytorch_estimator
from gavel.attacks.base import AttackerKit, AttackResult
from gavel.attacks.white_box.base import WhiteBoxAttack
from gavel.attacks.white_box.pgd import PGD
from gavel.defenses.preprocessing.bit_depth import Squeeze
from gavel.defenses.randomised.input_noise import NoisyInput
from gavel.experiments import sanity
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.experiments.validation import white_box_options
from gavel.reports import checks
from gavel.targets.access.preprocessing import Preprocessed

PGD_PARAMS = {"eps": 0.1, "eps_step": 0.01, "max_iter": 40, "num_random_init": 1}
WEAK = {"eps": 0.1, "eps_step": 1e-5, "max_iter": 1, "num_random_init": 0}


def run_checks(served: nn.Module, digits, params: dict, n: int = 30, **adaptive) -> dict[str, sanity.Check]:
    x, y = attackable(digits.judge, digits.data, 200, n)
    attack = PGD(**params, **adaptive)
    estimator_model = attack.attacked_model(served)
    estimator = pytorch_estimator(estimator_model, x.shape[1:], digits.data.n_classes, "cpu")
    kit = AttackerKit(client=None, surrogate=None, attacker_data=None, device="cpu")
    x_adv = attack.craft(estimator, x, y, kit)
    with torch.no_grad():
        fooled = served(torch.as_tensor(x_adv)).argmax(1).numpy() != y
    result = AttackResult.offline(x_adv)
    found = sanity.run_checks(attack, {**params, **adaptive}, served, x, y, result, fooled, kit, "cpu")
    return {check.name: check for check in found}


def warned(found: dict[str, sanity.Check]) -> set[str]:
    return {name for name, check in found.items() if not check.passed}


def test_an_honest_attack_on_the_undefended_judge_raises_none(digits):
    found = run_checks(digits.judge, digits, PGD_PARAMS)
    assert set(found) == {
        "zero_gradients", "randomised_without_eot", "preprocessing_without_bpda", "loss_not_decreasing", "eps_ladder"
    }  # fmt: skip
    assert warned(found) == set(), {name: c.detail for name, c in found.items()}


def test_a_gradient_masking_judge_warns_of_zero_gradients_and_of_preprocessing_without_bpda(digits):
    masked = Preprocessed(digits.judge, Squeeze(bits=1))
    found = run_checks(masked, digits, PGD_PARAMS)
    assert {"zero_gradients", "preprocessing_without_bpda"} <= warned(found)
    assert "of 30 examples have zero or non-finite input gradients" in found["zero_gradients"].detail
    adaptive = run_checks(masked, digits, PGD_PARAMS, bpda=True)
    assert "zero_gradients" not in warned(adaptive) and "preprocessing_without_bpda" not in warned(adaptive)


def test_a_randomised_judge_attacked_without_eot_warns_and_with_eot_does_not(digits):
    noisy = NoisyInput(digits.judge, 0.05, seed=3)
    assert "randomised_without_eot" in warned(run_checks(noisy, digits, PGD_PARAMS, n=10))
    assert "randomised_without_eot" not in warned(run_checks(noisy, digits, PGD_PARAMS, n=10, eot_samples=4))


def test_a_weak_attack_warns_its_loss_did_not_fall_and_its_ladder_does_not_reach_one(digits):
    found = run_checks(digits.judge, digits, WEAK)
    assert {"loss_not_decreasing", "eps_ladder"} <= warned(found)
    assert "at eps 1" in found["eps_ladder"].detail


def test_the_ladder_climbs_to_the_whole_input_range_of_the_attacks_norm():
    class L2(WhiteBoxAttack):
        norm = "2"

        def craft(self, estimator, x, y, kit):
            return x

    assert sanity.ladder_radii(PGD(eps=0.1), 64) == [0.4, 1.0]
    assert sanity.ladder_radii(PGD(eps=0.5), 64) == [1.0]
    assert sanity.ladder_radii(PGD(eps=1.0), 64) == []  # eps is the whole range already: no ladder to climb
    assert sanity.ladder_radii(L2(eps=1.0), 64) == [4.0, 8.0]
    assert sanity.ladder_radii(L2(eps=10.0), 64) == []


def test_an_attack_at_the_top_of_its_range_is_not_laddered(digits):
    found = run_checks(digits.judge, digits, {**PGD_PARAMS, "eps": 1.0, "eps_step": 0.1}, n=5)
    assert "eps_ladder" not in found and "zero_gradients" in found


def test_a_score_based_attack_is_held_to_its_loss_only_where_it_spent_its_whole_budget(digits):
    from gavel.attacks.query.square import Square
    from gavel.targets.access import SCORE_BASED

    x, y = attackable(digits.judge, digits.data, 100, 8)
    attack = Square(eps=0.1)
    assert attack.threat_model == SCORE_BASED
    unmoved = AttackResult.offline(x.copy())  # no progress at all
    fooled = np.zeros(len(x), bool)
    cut_off = sanity.run_checks(attack, {}, digits.judge, x, y, unmoved, fooled, None, "cpu")
    assert "loss_not_decreasing" not in {c.name for c in cut_off}  # banned or budget-cut: not the attack's failure
    spent = AttackResult(
        x_adv=x.copy(), queries=np.full(len(x), 100), budget_exhausted=np.ones(len(x), bool),
        queries_to_success=np.full(len(x), -1),
    )  # fmt: skip
    found = {c.name: c for c in sanity.run_checks(attack, {}, digits.judge, x, y, spent, fooled, None, "cpu")}
    assert not found["loss_not_decreasing"].passed and "(no lower)" in found["loss_not_decreasing"].detail


@dataclass
class FakeRun:
    name: str
    threat_model: str
    fooled: list[bool]
    status: str = "FINISHED"
    tags: dict = field(default_factory=dict)
    params: dict = field(default_factory=lambda: {"attack.eps": "0.1", "seed": "0", "n_examples": "60"})

    def __post_init__(self):
        self.tags = {"judge_key": "j", "defense": "none", "norm": "Linf", **self.tags}
        n = len(self.fooled)
        self.per_example = {"index": np.arange(n), "attacked": np.ones(n), "success": np.array(self.fooled, float)}


def test_a_black_box_that_beats_the_white_box_on_the_same_examples_warns():
    white = FakeRun("pgd", "white_box", [True] * 5 + [False] * 55)
    square = FakeRun("square", "score_based", [True] * 30 + [False] * 30)
    found, compared = checks.black_box_beats_white_box([white, square])
    assert compared == 1 and [f.check for f in found] == [checks.BEATS]
    assert found[0].run == "pgd" and "square (score-based) fooled 30 of 60" in found[0].detail
    other_judge = FakeRun("square", "score_based", [True] * 30 + [False] * 30, tags={"judge_key": "k"})
    assert checks.black_box_beats_white_box([white, other_judge]) == ([], 0)
    targeted = FakeRun("pgd", "white_box", [True] * 5 + [False] * 55)
    targeted.params = {**targeted.params, "attack.targeted": "True", "attack.target_class": "3"}
    assert checks.black_box_beats_white_box([targeted, square]) == ([], 0)  # another goal: not comparable
    even = FakeRun("square", "score_based", [True] * 6 + [False] * 54)
    assert checks.black_box_beats_white_box([white, even]) == ([], 1)


def test_the_reports_section_names_each_warning_and_counts_the_passes():
    honest = FakeRun("pgd", "white_box", [True] * 20 + [False] * 40, tags={"gavel.check.zero_gradients": "pass"})
    lines, rows = checks.section([honest])
    assert rows is None
    assert lines == "All 1 sanity checks passed (each run's own, and 0 white-box against black-box pairs)."
    masked = FakeRun(
        "pgd-bit_depth",
        "white_box",
        [False] * 60,
        tags={"gavel.check.zero_gradients": "warn", "gavel.check.zero_gradients.detail": "60 of 60 examples ..."},
    )
    lines, rows = checks.section([honest, masked])
    assert lines.startswith("1 of 2 sanity checks warn")
    assert rows == [["run", "check", "what it saw"], ["pgd-bit_depth", "zero gradients", "60 of 60 examples ..."]]


@pytest.mark.parametrize("threat_model", ["transfer", "decision_based"])
def test_only_white_box_and_score_based_runs_are_checked_for_their_loss(threat_model):
    class Query(WhiteBoxAttack):
        def craft(self, estimator, x, y, kit):
            return x

    attack = Query(eps=0.1)
    attack.threat_model = getattr(__import__("gavel.targets.access", fromlist=["x"]), threat_model.upper())
    x = np.zeros((2, 1, 8, 8), np.float32)
    found = sanity.run_checks(
        attack, {}, nn.Flatten(), x, np.zeros(2, int), AttackResult.offline(x), np.zeros(2, bool), None, "cpu"
    )
    assert found == []


WHITE_BOX_OPTIONS = white_box_options()


@pytest.mark.parametrize("option", WHITE_BOX_OPTIONS)
def test_every_white_box_attack_runs_its_checks(option, digits):
    """Each white-box option as configured (its own step rules, its norm) through every check that applies to it."""
    settings = RunSettings.from_config(
        compose_config([f"attack={option}", "attack.eps=0.1" if option != "patch" else "seed=0"])
    )
    attack = settings.attack_instance
    x, y = attackable(digits.judge, digits.data, 60, 4)
    kit = AttackerKit(client=None, surrogate=None, attacker_data=digits.data.attacker, device="cpu")
    estimator = pytorch_estimator(attack.attacked_model(digits.judge), x.shape[1:], digits.data.n_classes, "cpu")
    x_adv = attack.craft(estimator, x, y, kit)
    with torch.no_grad():
        fooled = digits.judge(torch.as_tensor(x_adv)).argmax(1).numpy() != y
    found = sanity.run_checks(
        attack, dict(settings.attack.params), digits.judge, x, y, AttackResult.offline(x_adv), fooled, kit, "cpu"
    )
    names = {check.name for check in found}
    expected = {"zero_gradients", "randomised_without_eot", "preprocessing_without_bpda"}
    if not fooled.all():  # the loss check reads the examples it did not fool
        expected.add("loss_not_decreasing")
    assert expected <= names
    assert ("eps_ladder" in names) == (attack.norm is not None)
