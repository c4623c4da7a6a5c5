"""`gavel run` as a user types it: a sweep, and the headline preset, each checked against MLflow; a wrong value
exits non-zero with one line, before anything is trained or recorded."""

from __future__ import annotations

import os

import mlflow
import pytest
from helpers.cli import gavel_in_own_folder


def gavel(tmp_path, *args, timeout=600):
    """A run that must succeed, on the test session's model cache; MLflow then reads its store."""
    done = gavel_in_own_folder(tmp_path, *args, timeout=timeout, cache_dir=os.environ["GAVEL_CACHE_DIR"])
    assert done.returncode == 0, done.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return done


@pytest.fixture(autouse=True)
def restore_tracking_uri():
    """`mlflow.set_tracking_uri` also sets the environment variable: the session's store is saved before."""
    before = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(before)


def runs(experiment: str, *, sweep_parent: bool = False):
    """The jobs' runs of `experiment` (and with `sweep_parent`, the sweep's parent run too)."""
    found = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    return [r for r in found if sweep_parent or "sweep_parent_of" not in r.data.tags]


@pytest.mark.slow
def test_multirun_budget_sweep_is_one_run_per_job_grouped_by_sweep_id(tmp_path):
    done = gavel(
        tmp_path,
        "--multirun",
        "attack=square",
        "access=hidden_probabilities",
        "access.budget=5,20",
        "attack.eps=0.3",  # some example is fooled on any judge: the figures of successes are drawn too
        "n_examples=6",
        "experiment_name=sweep",
    )
    found = runs("sweep", sweep_parent=True)
    children = [r for r in found if "sweep_id" in r.data.tags]
    assert sorted(r.data.params["access.budget"] for r in children) == ["20", "5"]
    assert len({r.data.tags["sweep_id"] for r in children}) == 1 and len(found) == 3  # and the sweep's parent
    assert all(r.info.status == "FINISHED" for r in found)
    assert "score_based" in done.stdout and "MLflow: 2 runs in experiment 'sweep'" in done.stdout
    assert (tmp_path / "multirun" / "summary.md").exists()
    # the MLflow UI shows about 25 characters of a run's name: what tells the runs apart comes first
    assert sorted(r.info.run_name for r in children) == [
        "0 budget5 | square-probabilities-b5-cnn-s0",
        "1 budget20 | square-probabilities-b20-cnn-s0",
    ]
    # the dashboard: a parent run holds the sweep's table and artifacts, each job's run is its child, each run and
    # the experiment say what they are, the evaluation data is logged as an input, the budget is a tag
    (parent,) = [r for r in found if "sweep_parent_of" in r.data.tags]
    assert parent.data.tags["sweep_parent_of"] == children[0].data.tags["sweep_id"]
    assert "success rate" in parent.data.tags["mlflow.note.content"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id)}
    assert "summary.md" in artifacts and "curves_probabilities.png" in artifacts
    assert all(r.data.tags["mlflow.note.content"].startswith("square (score-based") for r in children)
    assert {r.data.tags["access.budget"] for r in children} == {"5", "20"}
    assert all(r.inputs.dataset_inputs for r in children)
    assert mlflow.get_experiment_by_name("sweep").tags["mlflow.note.content"].startswith("gavel experiment `sweep`")

    # the report, read back from the store, and logged to the sweep's parent run
    from gavel.experiments.cli import report_command

    assert report_command(["--experiment", "sweep", "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    for section in ("The value of hiding", "What each step of hiding buys", "Behind every number", "Figures"):
        assert section in page
    assert "[0." in page and page.count("data:image/png;base64,") >= 3  # intervals; curves, Kaplan-Meier, sizes
    for png in ("security_curves.png", "queries_to_success_km.png"):
        assert (tmp_path / "report" / png).stat().st_size > 10_000
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/report.md"} <= logged


@pytest.mark.slow
def test_headline_preset_attacks_the_same_examples_under_every_threat_model(tmp_path):
    done = gavel(tmp_path, "experiment=hiding_vs_ratelimit", "n_examples=10")
    found = runs("hiding_vs_ratelimit")
    rows = sorted(
        (
            r.data.tags["threat_model"],
            r.data.tags["attack"],
            r.data.tags["access.output"],
            r.data.params["access.budget"],
        )
        for r in found
    )
    assert rows == sorted(
        [("white_box", "pgd", "logits", "null"), ("transfer", "transfer_pgd", "label", "null")]
        + [("score_based", a, "probabilities", b) for a in ("square", "simba") for b in ("10", "100", "1000")]
        + [("decision_based", a, "label", b) for a in ("hopskipjump", "rays") for b in ("10", "100", "1000")]
    )
    examples = set()
    for run in found:
        assert run.info.status == "FINISHED"
        if run.data.tags["threat_model"] == "white_box":
            assert "queries_median" not in run.data.metrics  # no query sent: no query figure, not 0
        else:
            assert (
                run.data.metrics["queries_median"]
                <= {"null": 1, "10": 10, "100": 100, "1000": 1000}[run.data.params["access.budget"]]
            )
        table = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/per_example.csv").splitlines()
        examples.add(tuple(line.split(",")[1] for line in table))  # the labels column, row by row
    assert len(examples) == 1
    threat_models = ("white_box", "transfer", "score", "decision")
    table_lines = [line for line in done.stdout.splitlines() if line.startswith(threat_models)]
    assert len(table_lines) == 14 + 6  # a row per run, and each API's union of its two attacks at each budget
    assert sum("union(simba,square)" in line or "union(hopskipjump,rays)" in line for line in table_lines) == 6
    # every run's own sanity checks, and the sweep's (the white box against each black box on the same examples)
    white = next(r for r in found if r.data.tags["threat_model"] == "white_box")
    assert {"zero_gradients", "preprocessing_without_bpda", "randomised_without_eot"} <= {
        key.removeprefix("gavel.check.") for key, value in white.data.tags.items() if value in ("pass", "warn")
    }
    (parent,) = [r for r in runs("hiding_vs_ratelimit", sweep_parent=True) if "sweep_parent_of" in r.data.tags]
    assert parent.data.tags["gavel.check.black_box_beats_white_box"] in ("pass", "warn")


def preset_jobs(name: str) -> list[list[str]]:
    from gavel.experiments.config import compose_config
    from hydra_plugins.gavel_sweeper.gavel_sweeper import expand_grid

    sweeper = compose_config([f"experiment={name}"], return_hydra_config=True).hydra.sweeper
    return expand_grid([dict(block) for block in sweeper.grid], {}, [f"experiment={name}"])


PRESETS = [
    ("hiding_vs_ratelimit", 14),
    ("transfer_knowledge", 7),
    ("extraction_budget", 15),
    ("budget_curve", 28),
    ("output_hiding", 24),
    ("randomised_answers", 10),
    ("detection_vs_sybil", 50),
    ("preprocessing_vs_adaptive", 11),
    ("stacked_defenses", 20),
    ("panel_size", 18),
]


@pytest.mark.parametrize("preset, n_jobs", PRESETS)
def test_every_job_of_every_preset_composes_and_validates_and_its_run_names_differ_up_front(preset, n_jobs):
    """Each job's run name leads with what tells it from the preset's other jobs (its run label): the MLflow UI
    shows about 25 characters of a name, and no two of a preset's runs look the same there."""
    from gavel.experiments.config import compose_config
    from gavel.experiments.settings import RunSettings
    from gavel.experiments.tracking import run_name
    from hydra_plugins.gavel_sweeper.gavel_sweeper import run_labels

    jobs = preset_jobs(preset)
    assert len(jobs) == n_jobs
    names = []
    for job, label in zip(jobs, run_labels(jobs)):
        names.append(run_name(RunSettings.from_config(compose_config([*job, f"run_label='{label}'"]))))
    assert len({name[:25] for name in names}) == n_jobs, sorted(names)
    varying = {o.split("=")[0] for job in jobs for o in job} - {
        o.split("=")[0] for o in set.intersection(*map(set, jobs))
    }
    for job, name in zip(jobs, names):  # and each says what its job changes
        for key, value in (o.split("=", 1) for o in job if o.split("=")[0] in varying):
            shown = key.rsplit(".", 1)[-1] if value.lower() in ("true", "false") else value  # a flag by its name
            if value.startswith("["):  # a stack of defenses, by its members
                shown = "+".join(value.strip("[]").split(","))
            assert shown in name, (key, name)


@pytest.mark.slow
def test_transfer_knowledge_preset_runs_and_tabulates_what_the_attacker_knew(tmp_path):
    done = gavel(
        tmp_path,
        "experiment=transfer_knowledge",
        "n_examples=8",
        "attack.max_iter=5",
        "surrogate.extraction.label_budget=60",
    )
    found = runs("transfer_knowledge")
    knowledge = sorted(r.data.params["surrogate.knowledge"] for r in found)
    assert knowledge == ["extracted", "leaked", "proxy"] + ["same_distribution"] * 4
    assert all(r.info.status == "FINISHED" for r in found)
    extracted = next(r for r in found if r.data.params["surrogate.knowledge"] == "extracted")
    assert extracted.data.metrics["queries_shared"] == 60
    assert "surrogate.knowledge" in done.stdout and "surrogate.data_fraction" in done.stdout


@pytest.mark.parametrize(
    "args, key",
    [
        (["attack=foo"], "attack=foo"),
        (["access.budget=-5"], "access.budget=-5"),
        (["attack.eps=2"], "attack.eps=2"),
        (["access=hidden_probabilities"], "access.weights=hidden"),
        (["--multirun", "attack=square", "access=hidden_probabilities", "access.budget=10,-1"], "access.budget=-1"),
        (["data=mnist", "data.root=/nonexistent"], "data.root=/nonexistent"),
    ],
)
def test_cli_exits_nonzero_with_one_line_before_training_or_tracking(tmp_path, args, key):
    done = gavel_in_own_folder(tmp_path, *args, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gavel: ") and key in lines[0], done.stderr
    assert "allowed" in lines[0] or "data.download=true" in lines[0]
    assert not (tmp_path / "cache").exists()  # nothing trained
    assert not (tmp_path / "mlflow.db").exists()  # no run recorded, none left RUNNING


@pytest.mark.slow
def test_a_single_run_says_which_run_it_was_and_keeps_its_artifacts_beside_the_store(tmp_path):
    done = gavel(tmp_path, "attack=fgsm", "n_examples=6", "experiment_name=single")
    (run,) = runs("single")
    assert f"MLflow: run {run.info.run_id} ({run.info.run_name}) in experiment 'single'" in done.stdout
    assert "browse it with: mlflow ui --backend-store-uri sqlite:///" in done.stdout
    assert run.info.artifact_uri.startswith((tmp_path / "mlruns").resolve().as_uri())


@pytest.mark.slow
def test_the_gate_runs_its_experiment_first_with_run(tmp_path):
    from gavel.experiments.cli import gate_command

    policy = tmp_path / "first.yaml"
    policy.write_text(
        "experiment: gated\n"
        f"run: attack=fgsm n_examples=6 experiment_name=gated hydra.run.dir={tmp_path / 'out'}\n"
        "thresholds:\n"
        "  - {where: {threat_model: white_box}, metric: attack_success_rate, max: 1.0}\n"
    )
    assert gate_command(["--policy", str(policy), "--out", str(tmp_path / "gate")]) == 2  # nothing run yet
    assert gate_command(["--policy", str(policy), "--out", str(tmp_path / "gate"), "--run"]) == 0
    (run,) = runs("gated")
    assert run.data.tags["gate.first"] == "pass"
