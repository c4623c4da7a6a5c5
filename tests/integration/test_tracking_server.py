"""Against a real MLflow tracking server over HTTP: a sweep records its runs there, and the report and the gate
are built from what the server returns."""

from __future__ import annotations

import os
import subprocess

import mlflow
import pytest
from helpers.cli import GAVEL

from gavel.experiments.server import ServerError, free_port, mlflow_server, wait_until_up


@pytest.fixture
def server(tmp_path):
    port = free_port()
    process = mlflow_server(
        tmp_path, f"sqlite:///{tmp_path / 'server.db'}", "127.0.0.1", port, ["--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(uri, process, timeout=120)
    except ServerError as error:
        process.kill()
        pytest.fail(str(error))
    before = mlflow.get_tracking_uri()
    yield uri
    mlflow.set_tracking_uri(before)
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.slow
def test_a_sweep_against_a_tracking_server_and_its_report_and_gate(tmp_path, server):
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    done = subprocess.run(
        [GAVEL, "run", "--multirun", "attack=square", "access=hidden_probabilities", "access.budget=5,20",
         "n_examples=6", "experiment_name=served", f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    mlflow.set_tracking_uri(server)
    runs = mlflow.search_runs(experiment_names=["served"], output_format="list")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)  # two jobs and the sweep's parent
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)  # served by the server

    report = subprocess.run(
        [GAVEL, "report", "--experiment", "served", "--out", str(tmp_path / "report")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert "The value of hiding" in (tmp_path / "report" / "report.html").read_text()

    policy = tmp_path / "served.yaml"
    policy.write_text(
        "experiment: served\nthresholds:\n"
        "  - {where: {threat_model: score_based}, metric: attack_success_rate, max: 1.0}\n"
    )
    gate = subprocess.run(
        [GAVEL, "gate", "--policy", str(policy), "--out", str(tmp_path / "gate")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert gate.returncode == 0, gate.stderr[-3000:] + gate.stdout[-3000:]
    assert (tmp_path / "gate" / "gate.xml").exists()
