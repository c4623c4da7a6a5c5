"""Poisoning through the real runner: the shapes the literature reports, reproduced at small size (slow), and bad
input refused before anything is trained or recorded.

Shapes (the digits judge's pool holds 898 examples: 5% is 45 poisoned, 0.5% is 4), compared on the same evaluation
examples with McNemar's test (`helpers.paired`), at seeds 0 and 1:
- BadNets (Gu et al., 2017) opens the judge to its trigger on most examples at a few percent of poison, far more
  than at 0.5%, and costs the judge almost no clean accuracy;
- clean-label poison (Turner et al., 2019) trained from scratch needs far more than BadNets (Schwarzschild et al.,
  2021): at the same 5% it opens the judge on significantly fewer examples.

Measured on the machine this was written on (backdoor success at seeds 0, 1, 2; 176-180 examples attacked):
BadNets 0.5% 0.11/0.14/0.23, 1% 0.31/0.58/0.45, 5% 0.95/0.94/0.93, 10% 0.98/1.00/0.99; clean-label 5%
0.17/0.24/0.15; clean accuracy of the poisoned judges 0.975-0.985, the clean judges' 0.970-0.985.
"""

from __future__ import annotations

import pytest
from helpers.cli import gavel_in_own_folder
from helpers.foreign_judges import save_torchscript
from helpers.paired import enough_to_compare, less_success
from helpers.poisoning import backdoor_run, paired

from gavel.experiments import runner
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.experiments.validation import ConfigError, check_overrides
from gavel.targets.errors import SourceError

SEEDS = (0, 1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_badnets_opens_the_judge_at_a_few_percent_of_poison_at_almost_no_cost_in_clean_accuracy(seed):
    """At 5% the trigger opens the judge on significantly more of the same examples than at 0.5%, on most of them
    (the interval's low end above one half), and each poisoned judge's clean accuracy is within 0.05 of the clean
    judge's on the same 200 examples."""
    little = backdoor_run("poison=badnets", "poison.fraction=0.005", f"seed={seed}")
    few = backdoor_run("poison=badnets", "poison.fraction=0.05", f"seed={seed}")
    at_little, at_few = paired(little, few)
    enough_to_compare(at_little, at_few)
    less_success(at_little, at_few)
    assert few["backdoor_success_rate_ci_low"] > 0.5, few.metrics
    for run in (little, few):
        assert abs(run["clean_accuracy"] - run["clean_accuracy_clean_judge"]) <= 0.05, run.metrics


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_clean_label_poison_needs_more_than_badnets_at_the_same_fraction(seed):
    badnets = backdoor_run("poison=badnets", "poison.fraction=0.05", f"seed={seed}")
    clean_label = backdoor_run("poison=clean_label", "poison.fraction=0.05", f"seed={seed}")
    assert clean_label["poisoned_examples"] == badnets["poisoned_examples"] == 45
    with_clean_labels, with_badnets = paired(clean_label, badnets)
    enough_to_compare(with_clean_labels, with_badnets)
    less_success(with_clean_labels, with_badnets)


# -- bad input --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def foreign_judge(tmp_path_factory, digits) -> str:
    """A judge of the user's own (TorchScript): gavel did not train it, so it cannot poison or retrain it."""
    return str(save_torchscript(digits.judge, tmp_path_factory.mktemp("foreign") / "judge.pt"))


def cases(foreign: str) -> list[tuple[list[str], str]]:
    """(command line, the start of the one line gavel must print after "gavel: ")."""
    own = ["target=torchscript", f"target.path={foreign}"]
    return [
        (["poison=badnets", "poison.fraction=0"], "poison.fraction=0: allowed: a number in (0, 1) or null"),
        (["poison=badnets", "poison.fraction=1.5"], "poison.fraction=1.5: allowed: a number in (0, 1) or null"),
        (
            ["poison=badnets", "poison.contributors=3", "data.contributors=2"],
            "poison.contributors=3: more than the data's 2 contributor(s); allowed: 1 to 2",
        ),
        (
            ["poison=badnets", "poison.fraction=0.5", "data.contributors=2"],
            "poison=badnets: poison.fraction=0.5: 449 examples to poison, but the attacker's 1 contributor(s) hold "
            "only",
        ),
        (
            ["poison=badnets", "poison.fraction=0.0001"],
            "poison=badnets: poison.fraction=0.0001: poisons no example of the 898 in the judge's pool; allowed: a "
            "fraction of at least 0.0011",
        ),
        (["poison=badnets", "poison.target_class=10"], "poison.target_class=10: allowed: 0 to 9"),
        (
            ["poison=badnets", "poison.size=9"],
            "poison.size=9: a square that large does not fit in 8x8 images one pixel in from the edges; allowed: 1 "
            "to 6",
        ),
        (
            ["sanitise=fine_tune", *own],
            "sanitise=fine_tune: retrains the judge on what it keeps, but target=torchscript was trained elsewhere: "
            "nothing to retrain; allowed: a judge gavel trains",
        ),
        (
            ["sanitise=fine_tune", "n_examples=359"],
            "sanitise=fine_tune: fine-tunes on the operator's clean held-out data, and there is none; allowed: fewer "
            "n_examples than the evaluation pool holds, or data.operator=PATH (n_examples=359; the evaluation pool "
            "holds 359)",
        ),
        (
            ["sanitise=provenance", "data.contributors=1"],
            "sanitise=provenance: judges contributors, but data.contributors=1 (one party gave everything); allowed: "
            "data.contributors=2 or more",
        ),
        (["sanitise=contributor_cap"], "sanitise=contributor_cap: judges contributors, but data.contributors=1"),
        (
            ["poison=badnets", *own],
            "poison=badnets: poisons the judge's training data, but target=torchscript was trained elsewhere; allowed: "
            "a judge gavel trains",
        ),
        (
            ["target.train.adversarial=pgd", "target.train.eps=2"],
            "target.train.eps=2: allowed: a number in (0, 1]",
        ),
        (
            ["attack=backdoor", "access=hidden_label"],
            "attack=backdoor: tests a backdoor, but poison=none planted none; allowed: poison=badnets, blend, "
            "clean_label or label_flip",
        ),
        (
            ["attack=backdoor", "poison=badnets", "attack.target_class=3"],
            "attack.target_class=3: the poison's trigger forces poison.target_class=0; allowed: null or 0",
        ),
        (
            ["data.contributors=2", "data.shares=[1,2,3]"],
            "data.shares=[1, 2, 3]: allowed: 2 weights, one per contributor, or null (equal shares)",
        ),
        (
            ["data.contributors=2000"],
            "data.contributors=2000: more than the 898 examples of the judge's training pool; allowed: 1 to 898",
        ),
    ]


def refusal(args: list[str]) -> str:
    """The one-line refusal, from the CLI's checks, the typed boundary or the checks once the data is loaded."""
    with pytest.raises((ConfigError, SourceError)) as refused:
        check_overrides(args)
        runner.prepare(RunSettings.from_config(compose_config(args)))
    return str(refused.value)


def test_bad_poisoning_input_is_refused_in_one_line_naming_the_key(foreign_judge):
    for args, message in cases(foreign_judge):
        error = refusal(args)
        assert error.startswith(message), f"{' '.join(args)}: {error}"
        assert "\n" not in error


# One of each stage that refuses, by the start of its message: the typed boundary (a range, a foreign judge), and the
# checks once the data is loaded (a fraction the attacker cannot plant, a trigger that does not fit, nothing to
# fine-tune on).
CLI_SAMPLE = (
    "poison.fraction=1.5",
    "sanitise=fine_tune: retrains",
    "poison=badnets: poison.fraction=0.5",
    "poison.size=9",
    "sanitise=fine_tune: fine-tunes",
)


@pytest.mark.slow
@pytest.mark.parametrize("says", CLI_SAMPLE)
def test_the_cli_exits_2_with_that_line_and_nothing_trained_or_recorded(tmp_path, foreign_judge, says):
    (args,) = [args for args, message in cases(foreign_judge) if message.startswith(says)]
    done = gavel_in_own_folder(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"gavel: {refusal(args)}"]
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "out").exists()
