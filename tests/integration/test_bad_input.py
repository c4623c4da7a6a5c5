"""Bad command lines, as a new user types them: one line naming the key and what is allowed, exit status 2,
nothing trained or recorded; and an error raised mid-run is never reported as a config error."""

from __future__ import annotations

import subprocess

import mlflow
import pytest
from helpers.cli import GAVEL, gavel_in_own_folder

from gavel.experiments import runner
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.experiments.validation import ConfigError, check_overrides

EXTRACTED = ["attack=transfer_pgd", "access=hidden_label", "surrogate.knowledge=extracted"]
SCORES = ["attack=square", "access=hidden_probabilities"]

# (command line, the start of the one line gavel must print after "gavel: ")
BAD = [
    (["seed=-1"], "seed=-1: allowed: an integer from 0 to"),
    (["seed=18446744073709551616"], "seed=18446744073709551616: allowed: an integer from 0 to"),
    (["seed=abc"], "seed='abc': allowed: an integer"),
    (["seed=1.5"], "seed=1.5: allowed: an integer"),
    (["data.split.eval=0"], "data.split.eval=0: allowed: a number > 0"),
    (["data.split.judge=-0.5"], "data.split.judge=-0.5: allowed: a number > 0"),
    (["data.split_seed=abc"], "data.split_seed='abc': allowed: an integer"),
    (["data=mnist", "data.download=maybe"], "data.download='maybe': allowed: true or false"),
    (["data.download=true"], "data.download: no such key; allowed keys under data: _target_, name, split_seed"),
    (["target.arch.width=0"], "target.arch.width=0: allowed: a positive integer"),
    (["target=mlp", "target.arch.hidden=[0]"], "target.arch.hidden=[0]: allowed: a list of positive integers"),
    (["target.train.lr=inf"], "target.train.lr=inf: allowed: a number > 0"),
    (["target.train.weight_decay=-1"], "target.train.weight_decay=-1: allowed: a number >= 0"),
    (["attack.max_iter=-3"], "attack.max_iter=-3: allowed: a positive integer"),
    (["attack.eps_step=-1"], "attack.eps_step=-1: allowed: a number > 0"),
    (["attack.targeted=no"], "attack.targeted='no': allowed: true or false"),
    (["attack.targeted=true"], "attack.target_class=None: allowed: a class index"),
    (["attack=pgd_l2", "attack.eps=inf"], "attack.eps=inf: allowed: a number > 0"),
    (["attack.eps=nan"], r"attack.eps=nan: allowed: a number in (0, 1]"),
    (["attack.backend=tensorflow"], "attack.backend='tensorflow': allowed: art, foolbox"),
    (["attack=autoattack", "attack.losses=[hinge]"], "attack.losses=['hinge']: allowed: a list of"),
    (["attack=hybrid", "access=hidden_probabilities", "attack.budget_split=1"], "attack.budget_split=1: allowed"),
    (["attack=hybrid", "access=hidden_probabilities", "attack.query.max_iter=0"], "attack.query.max_iter=0: allowed"),
    (["attack=patch", "attack.patch_type=hexagon"], "attack.patch_type='hexagon': allowed: square, circle"),
    ([*EXTRACTED, "access.budget=1"], "surrogate.extraction.label_budget=1000: nothing left to buy labels with"),
    ([*EXTRACTED, "surrogate.extraction.method=steal"], "surrogate.extraction.method='steal': allowed: copycat"),
    (["surrogate.data_fraction=2"], r"surrogate.data_fraction=2: allowed: a number in (0, 1]"),
    (["access.window=inf"], "access.window=inf: allowed: a positive number of hours"),
    (["access.budget=1.5"], "access.budget=1.5: allowed: a positive integer"),
    (["n_examples=1.0"], "n_examples=1.0: allowed: a positive integer"),
    (["device=gpu"], "device='gpu': allowed: cpu, cuda, auto"),
    (["experiment_name="], "experiment_name='': allowed: a non-empty MLflow experiment name"),
    (["experiment_name=null"], "experiment_name=None: allowed: a non-empty MLflow experiment name"),
    (["~experiment_name"], "~experiment_name: gavel needs every key and config group"),
    (["~attack"], "~attack: gavel needs every key and config group"),
    (["attack=["], "attack=[: not a valid override"),
    (["cache_dir=/proc/gavel"], "cache_dir=/proc/gavel: cannot write there"),
    # the operator's defenses: unknown options, out-of-range values, and defenses that cannot apply
    (["defense=nope"], "defense=nope: unknown option; allowed: bit_depth, blacklight, input_noise, jpeg"),
    (["defense=input_noise", "defense.sigma=-1"], r"defense.sigma=-1: allowed: a number in (0, 1]"),
    ([*SCORES, "defense=rounded", "defense.decimals=0"], "defense.decimals=0: allowed: a positive integer"),
    ([*SCORES, "defense=rounded", "defense.bogus=1"], "defense.bogus: no such key; allowed keys under defense"),
    ([*SCORES, "defense=knn_similarity", "defense.k=0"], "defense.k=0: allowed: a positive integer"),
    (["defense=rounded"], "access.output=logits: defense=rounded does not apply to it; allowed: probabilities"),
    (
        ["attack=hopskipjump", "access=hidden_label", "defense=reverse_sigmoid"],
        "access.output=label: defense=reverse_sigmoid does not apply to it; allowed: probabilities",
    ),
    (["attack=pgd", "defense=blacklight"], "defense=blacklight watches queries, but attack threat model white_box"),
    (["+n_exampels=5"], "n_exampels: no such key; allowed keys at the top level: experiment_name"),
    # stacks of defenses
    (["defense=[jpeg,nope]"], "defense=[jpeg,nope]: unknown defense nope; allowed in a list: bit_depth, blacklight"),
    (["defense=[jpeg,jpeg]"], "defense=[jpeg,jpeg]: jpeg listed twice; allowed: each defense once"),
    (["defense=[none,jpeg]"], "defense=[none,jpeg]: none is no defense, not a member; allowed in a list:"),
    (["defense=[]"], "defense=[]: an empty list; allowed: defense=none, or a list of"),
    (
        [*SCORES, "defense=[rounded,labels_only]"],
        "defense=[rounded,labels_only]: rounded and labels_only are both output defenses and a shield has one output",
    ),
    (
        [*SCORES, "defense=[blacklight,piha]"],
        "defense=[blacklight,piha]: blacklight and piha are both detection defenses",
    ),
    ([*SCORES, "defense=[jpeg,labels_only]", "defense.quality=3"], "defense.quality: no such key; allowed keys under"),
    ([*SCORES, "defense=[jpeg,labels_only]", "defense.jpeg.quality=0"], "defense.jpeg.quality=0: allowed:"),
    (["defense=[jpeg,blacklight]"], "defense=blacklight watches queries, but attack threat model white_box"),
    (["defense=[jpeg,rounded]"], "access.output=logits: defense=rounded does not apply to it; allowed: probabilities"),
    (
        [*SCORES, "target=panel", "defense=knn_similarity", "defense.encoder=penultimate"],
        "defense.encoder=penultimate: target=panel has 3 judges and no one penultimate layer",
    ),
    (
        [*SCORES, "target=panel", "defense=[knn_similarity,labels_only]", "defense.knn_similarity.encoder=penultimate"],
        "defense.knn_similarity.encoder=penultimate: target=panel has 3 judges",
    ),
    ([*SCORES, "attack.eot_samples=0"], "attack.eot_samples=0: allowed: a positive integer"),
    ([*SCORES, "attack.blinding=-1"], "attack.blinding=-1: allowed: a number >= 0"),
    ([*SCORES, "attack.backend=art", "attack.adaptive=true"], "attack=square: attack.blinding and attack.adaptive"),
    (["benign.mix.fresh=0.5"], "benign.mix: fresh + resubmit + crop_shift + brightness = 0.65, must sum to 1"),
    (["benign.accounts=0"], "benign.accounts=0: allowed: a positive integer"),
    ([*SCORES, "defense=piha", "defense.on_detection=kick"], "defense.on_detection='kick': allowed: ban, reject"),
    (["access.sybil=swarm"], "access.sybil='swarm': allowed: rotate, spread"),
    (["seeds=0"], "seeds=0: allowed: a positive integer"),
    (["access.queries_per_visit=0"], "access.queries_per_visit=0: allowed: a positive integer"),
]


def refusal(args: list[str]) -> str:
    """The `ConfigError` gavel refuses these overrides with, from the CLI's checks or the typed boundary."""
    with pytest.raises(ConfigError) as refused:
        check_overrides(args)
        RunSettings.from_config(compose_config(args))
    return str(refused.value)


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(args) for args, _ in BAD])
def test_a_bad_value_is_refused_in_one_line_naming_the_key(args, message):
    error = refusal(args)
    assert error.startswith(message), error
    assert "\n" not in error


# One of each kind of refusal, through the real CLI: range, type, an inconsistent budget, removal, syntax, disk.
CLI_SAMPLE = [
    (args, message)
    for args, message in BAD
    if args[0] in ("seed=-1", "data.split.eval=0", "attack.targeted=no", "~experiment_name", "attack=[")
    or args[-1] in ("attack.eps=inf", "access.budget=1")
    or args[0].startswith("cache_dir=")
    or args[0] in ("defense=nope", "defense=rounded", "defense=[jpeg,nope]", "defense=[jpeg,jpeg]")
]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", CLI_SAMPLE, ids=[" ".join(args) for args, _ in CLI_SAMPLE])
def test_the_cli_exits_2_with_that_line_and_nothing_trained_or_recorded(tmp_path, args, message):
    done = gavel_in_own_folder(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"gavel: {refusal(args)}"]
    assert done.stderr.startswith(f"gavel: {message}")
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "out").exists()  # no output folder for a refused run


@pytest.mark.slow
def test_an_error_raised_mid_run_fails_the_run_and_is_not_called_a_config_error(tmp_path):
    done = gavel_in_own_folder(
        tmp_path,
        "attack=transfer_pgd",
        "access=hidden_label",
        "surrogate.knowledge=proxy",
        "surrogate.proxy=mnist",
        f"surrogate.proxy_root={tmp_path / 'no_mnist_here'}",
        "target.train.epochs=3",  # the judge is trained before the surrogate's data is looked for
        "n_examples=4",
        "experiment_name=mid_run",
    )
    assert done.returncode == 1, done.stderr
    assert "gavel: " not in done.stderr and "FileNotFoundError" in done.stderr
    before = mlflow.get_tracking_uri()  # set_tracking_uri also sets the environment variable
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        runs = mlflow.search_runs(experiment_names=["mid_run"], output_format="list")
    finally:
        mlflow.set_tracking_uri(before)
    assert [run.info.status for run in runs] == ["FAILED"]


def test_a_target_class_the_data_does_not_have_is_refused_before_the_run():
    """The classes come from the data: a verdict past them is refused once the data is loaded, before any run."""
    settings = RunSettings.from_config(compose_config(["attack.targeted=true", "attack.target_class=12"]))
    with pytest.raises(ConfigError, match=r"^attack.target_class=12: allowed: 0 to 9 \(data=digits has 10 classes\)$"):
        runner.prepare(settings)


def test_a_surrogate_the_attack_does_not_use_is_not_held_to_its_labelling_budget():
    """The extraction budget matters only where the attack crafts on a surrogate."""
    args = ["attack=square", "access=hidden_probabilities", "access.budget=1", "surrogate.knowledge=extracted"]
    check_overrides(args)
    assert RunSettings.from_config(compose_config(args)).access.budget == 1


@pytest.mark.slow
def test_a_refused_run_never_deletes_a_folder_it_did_not_make(tmp_path):
    """`hydra.run.dir` pointed at a folder of the user's: the refused run removes nothing of theirs."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep")
    done = subprocess.run(
        [GAVEL, "run", "access.budget=-1", f"hydra.run.dir={mine}"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert (mine / "precious.txt").read_text() == "keep"


@pytest.mark.slow
@pytest.mark.parametrize("attacks", ["pgd,square", "square,pgd"])
def test_a_key_only_some_swept_options_have_is_refused_in_one_line_whichever_comes_first(tmp_path, attacks):
    """`attack.bpda` exists on pgd, not on square: refused before any job runs, whatever the sweep's order."""
    done = gavel_in_own_folder(tmp_path, "--multirun", f"attack={attacks}", "attack.bpda=true", "n_examples=4")
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gavel: attack.bpda:"), lines
    assert "reads no gradients" in lines[0] or "not a key of attack=" in lines[0]
    assert not (tmp_path / "mlflow.db").exists()
