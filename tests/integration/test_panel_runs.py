"""`target=panel` end to end on the shrunk config: a panel of three answers every threat model it offers as one judge
(one query per row), its first member is the judge `target=cnn` trains, poisoning reaches every member; and bad input
is refused in one line, exit status 2, nothing trained or recorded."""

from __future__ import annotations

import mlflow
import pytest
from helpers.cli import gavel_in_own_folder
from helpers.configs import tiny_settings
from helpers.foreign_judges import save_torchscript
from mlflow.tracking import MlflowClient
from torch import nn

from gavel.experiments import runner
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.experiments.validation import ConfigError
from gavel.targets.errors import SourceError

PANEL = ["target=panel", "target.members=3"]
TORCHSCRIPT = "gavel.targets.judges.torchscript.TorchScriptJudge"


def run_panel(attack: str, *overrides: str):
    settings = tiny_settings(attack, *PANEL, *overrides)
    metrics = runner.run(settings, runner.prepare(settings))
    return metrics, MlflowClient().get_run(mlflow.last_active_run().info.run_id)


def test_a_panel_of_three_answers_a_score_api_as_one_judge_charged_per_row():
    metrics, run = run_panel("square", "access.budget=30", "experiment_name=panel")
    assert run.info.status == "FINISHED"
    tags, logged = run.data.tags, run.data.metrics
    assert tags["judge.members"] == "3" and tags["judge.vote"] == "mean_probabilities"
    keys = tags["judge.member_keys"].split(", ")
    assert len(set(keys)) == 3  # three seeds, three judges
    assert logged["judge_members"] == 3
    assert logged["judge_forward_ms_per_row"] > 0 and logged["judge_member_forward_ms_per_row"] > 0
    assert 0 <= logged["judge_train_accuracy"] <= 1
    assert metrics["queries_total"] <= 30 * metrics["n_attacked"]  # rows, not rows x members


def test_the_first_member_is_the_judge_target_cnn_trains():
    cnn = RunSettings.from_config(compose_config([]))
    data = runner.prepare(cnn).data
    panel = tiny_settings("square", *PANEL)
    provided = panel.target_instance.provide(data, panel.seed, panel.cache_dir, "cpu")
    first = provided.tags["judge.member_keys"].split(", ")[0]
    assert first == cnn.target_instance.spec(data, cnn.seed, "cpu").key


@pytest.mark.parametrize("vote", ["mean_probabilities", "majority"])
def test_a_panel_answers_a_labels_only_api_and_a_transfer_attacker(vote):
    for attack in ("hopskipjump", "transfer_pgd"):
        _, run = run_panel(attack, f"target.vote={vote}")
        assert run.info.status == "FINISHED"
        assert run.data.tags["judge.vote"] == vote


def test_open_weights_give_the_white_box_the_mean_and_refuse_it_the_majority():
    _, run = run_panel("pgd", "attack.max_iter=3")
    assert run.info.status == "FINISHED"
    settings = tiny_settings("pgd", *PANEL, "target.vote=majority")
    refusal = r"^attack=pgd: a white_box attack needs the judge's gradients, but target=panel offers none; allowed:"
    with pytest.raises(ConfigError, match=refusal):
        runner.prepare(settings)


def test_a_poisoned_pool_trains_every_member():
    settings = RunSettings.from_config(
        compose_config(
            ["attack=backdoor", "access=hidden_label", "poison=badnets", "poison.fraction=0.05", "n_examples=8",
             "target=panel", "target.members=2", "target.judges.cnn.train.epochs=5"]
        )
    )  # fmt: skip
    metrics = runner.run(settings, runner.prepare(settings))
    run = MlflowClient().get_run(mlflow.last_active_run().info.run_id)
    assert run.info.status == "FINISHED" and metrics["poisoned_examples"] > 0
    assert "clean_accuracy_clean_judge" in metrics
    clean = settings.target_instance.provide(runner.prepare(settings).data, settings.seed, settings.cache_dir, "cpu")
    poisoned = run.data.tags["judge.member_keys"].split(", ")
    assert len(poisoned) == 2 and not set(poisoned) & set(clean.tags["judge.member_keys"].split(", "))


def foreign(name: str, path) -> str:
    return f"+target.judges.{name}={{_target_:{TORCHSCRIPT},path:{path}}}"


def test_a_member_with_another_class_count_is_refused_before_the_run(tmp_path):
    three = save_torchscript(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval(), tmp_path / "three.pt")
    settings = RunSettings.from_config(compose_config(["target=panel", "target.members=2", foreign("theirs", three)]))
    with pytest.raises(SourceError) as refused:
        runner.prepare(settings)
    message = str(refused.value)
    assert message.startswith(f"target.judges.theirs.path={three}: the model returns [3, 3]"), message
    assert message.endswith("allowed: one score per class, [3, 10] (data=digits has 10 classes)"), message
    assert "\n" not in message


def test_a_judge_of_ones_own_sits_once_and_beside_trained_ones(tmp_path):
    ten = save_torchscript(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval(), tmp_path / "ten.pt")
    refusal = (
        r"^target.members=4: judges.theirs was trained elsewhere: a second seat would be a copy of its vote; "
        r"allowed: at most 3 with these judges$"
    )
    with pytest.raises(ConfigError, match=refusal):
        RunSettings.from_config(compose_config(["target=panel", "target.members=4", foreign("theirs", ten)]))
    settings = RunSettings.from_config(compose_config(["target=panel", "target.members=3", foreign("theirs", ten)]))
    assert settings.target_instance.seats == ["cnn", "theirs", "cnn"]
    assert runner.prepare(settings).judge is None  # the cnn seats are trained in the run


BAD = [
    (["target.members=0"], "target.members=0: allowed: a positive integer"),
    (["target.vote=plurality"], "target.vote='plurality': allowed: mean_probabilities, majority"),
    (["target.judges.cnn.arch.width=0"], "target.judges.cnn.arch.width=0: allowed: a positive integer"),
    (
        ["sanitise=spectral_signatures"],
        "sanitise=spectral_signatures: reads and retrains the one judge trained on the contributed data, but "
        "target=panel is several; allowed: sanitise=none",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(args) for args, _ in BAD])
def test_bad_panel_input_exits_2_in_one_line_with_nothing_trained_or_recorded(tmp_path, args, message):
    done = gavel_in_own_folder(tmp_path, "target=panel", *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"gavel: {message}"]
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "out").exists()


def test_the_panel_size_preset_sweeps_1_3_and_5_members_and_both_votes_under_three_attackers():
    from gavel.experiments.tracking import run_name
    from hydra_plugins.gavel_sweeper.gavel_sweeper import expand_grid, run_labels

    sweeper = compose_config(["experiment=panel_size"], return_hydra_config=True).hydra.sweeper
    jobs = expand_grid([dict(block) for block in sweeper.grid], {}, ["experiment=panel_size"])
    assert len(jobs) == 18
    names, members = [], []
    for job, label in zip(jobs, run_labels(jobs)):
        settings = RunSettings.from_config(compose_config([*job, f"run_label='{label}'"]))
        names.append(run_name(settings))
        members.append(settings.target_instance.members)
        assert settings.n_examples == 100 and settings.attack.params["eps"] == 0.1
    assert sorted(members) == [1] * 6 + [3] * 6 + [5] * 6
    assert len({name[:25] for name in names}) == 18, sorted(names)
