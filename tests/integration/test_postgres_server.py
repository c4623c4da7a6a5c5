"""The shared tracking server of `gavel tracking-server` (PostgreSQL store, served artifacts), started on localhost from
its own pieces: the headline preset swept by two parallel joblib jobs against it records every job's run once,
FINISHED, with its metrics and artifacts, plus the sweep's parent run."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import psycopg2
import pytest
from helpers.cli import GAVEL
from mlflow import MlflowClient

from gavel.experiments.config import compose_config
from gavel.experiments.server import ServerError, local_server, postgres_bin
from gavel.reports.summary import SWEEP_PARENT
from hydra_plugins.gavel_sweeper.gavel_sweeper import expand_grid

PRESET = "hiding_vs_ratelimit"
SMALL = ["n_examples=10"]  # RayS has no max_iter: every attack of the preset runs its own schedule


@pytest.fixture
def postgres_server():
    """(MLflow's URL, the backend store URI, the server's folder); everything stopped and removed afterwards."""
    try:
        postgres_bin()
    except ServerError as error:
        pytest.skip(str(error))
    if os.geteuid() == 0 and "postgres" not in {user.pw_name for user in pwd.getpwall()}:
        pytest.skip("running as root, and no 'postgres' user to run PostgreSQL as")
    try:
        with local_server(["--workers", "2"]) as server:
            yield server.url, server.backend_uri, server.directory
    except ServerError as error:
        pytest.fail(str(error))


@pytest.mark.slow
def test_a_parallel_sweep_against_the_postgres_server_loses_and_duplicates_no_run(tmp_path, postgres_server):
    url, backend_uri, directory = postgres_server
    done = subprocess.run(
        [GAVEL, "run", f"experiment={PRESET}", *SMALL, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
         f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": url}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    sweeper = compose_config([f"experiment={PRESET}"], return_hydra_config=True).hydra.sweeper
    n_jobs = len(expand_grid([dict(block) for block in sweeper.grid], {}, [f"experiment={PRESET}", *SMALL]))
    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(PRESET)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if SWEEP_PARENT in r.data.tags]
    jobs = [r for r in runs if SWEEP_PARENT not in r.data.tags]
    assert len(parents) == 1 and len(jobs) == n_jobs, [r.info.run_name for r in runs]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["sweep_id"] for r in jobs} == {parents[0].data.tags[SWEEP_PARENT]}
    assert len({r.data.tags["overrides"] for r in jobs}) == n_jobs  # one run per job: none twice
    assert len({r.info.run_name for r in jobs}) == n_jobs
    spans = sorted((r.info.start_time, r.info.end_time) for r in jobs)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))  # two jobs wrote at once
    for run in jobs:
        assert {"clean_accuracy", "attack_success_rate"} <= set(run.data.metrics), run.info.run_name
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # uploaded through the server
        assert {"per_example.csv", "config.yaml"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    table = Path(client.download_artifacts(jobs[0].info.run_id, "per_example.csv", str(tmp_path)))
    assert len(table.read_text().splitlines()) == 11  # a header and the 10 examples
    assert any((directory / "artifacts").rglob("per_example.csv"))  # kept in the server's folder

    with psycopg2.connect(backend_uri.replace("+psycopg2", "")) as db, db.cursor() as cursor:
        cursor.execute("SELECT experiment_id, count(*) FROM runs GROUP BY experiment_id")
        by_experiment = dict(cursor.fetchall())
    db.close()
    # All in PostgreSQL, and none elsewhere (a job that loses the race to create the experiment in MLflow 3.17's
    # set_experiment is left on the Default experiment and logs there)
    assert by_experiment == {int(experiment.experiment_id): n_jobs + 1}
