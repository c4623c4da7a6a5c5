"""Past one machine: sweeps on Hydra's joblib and submitit launchers, a store that is not there, jobs stopped by
SIGTERM, SIGINT or SIGKILL, and a killed sweep resumed with `resume=true`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from helpers.cli import GAVEL, gavel_in_own_folder

from gavel.experiments.validation import launcher_options

CORES = len(os.sched_getaffinity(0))


@pytest.fixture(autouse=True)
def restore_tracking_uri():
    """`mlflow.set_tracking_uri` also sets the environment variable: the session's store is saved before."""
    before = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(before)


def runs_in(store: Path, experiment: str = "gavel") -> list:
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    found = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    return [r for r in found if "sweep_parent_of" not in r.data.tags]


def table_of(stdout: str) -> str:
    """The sweep's table as printed (from its header to the line before `MLflow:`)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("threat model"))
    end = next(i for i, line in enumerate(lines) if line.startswith("MLflow:"))
    return "\n".join(lines[start:end]).strip()


def start_gavel(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """`gavel run` in the background, in a process group of its own (so that a kill reaches its workers)."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "GAVEL_CACHE_DIR": str(tmp_path / "cache"),
        **(env or {}),
    }
    return subprocess.Popen(
        [GAVEL, "run", *args, f"hydra.run.dir={tmp_path / 'out'}", f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(condition, what: str, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def freeze_while(job: subprocess.Popen, condition, what: str) -> None:
    """Wait for `condition`, then stop the job's process group (SIGSTOP) and check it again on the frozen job:
    a job that finished between the look and the stop is let go on (SIGCONT) and waited for again, so the
    caller's SIGKILL lands while `condition` holds, however fast this machine's judge makes the attack."""
    while True:
        wait_for(condition, what)
        os.killpg(job.pid, signal.SIGSTOP)
        if condition():
            return
        os.killpg(job.pid, signal.SIGCONT)


def running_runs(store: Path, where: str = "") -> list:
    """RUNNING runs in `store`, read straight from the sqlite file (the store may not exist yet)."""
    import sqlite3

    if not store.exists():
        return []
    try:
        with sqlite3.connect(store, timeout=5) as db:
            return db.execute(f"select run_uuid, name from runs where status = 'RUNNING' {where}").fetchall()
    except sqlite3.OperationalError:  # the schema is being created
        return []


# --- a store that is not there ---


@pytest.mark.parametrize(
    "uri, reason",
    [("http://127.0.0.1:9", "connection refused"), ("sqlite:////proc/gavel/x.db", "cannot be opened or created")],
)
def test_an_unreachable_or_unwritable_store_stops_the_job_before_training(tmp_path, uri, reason):
    """Before: 260 s of retries and a 101-line traceback (http), 112 s (sqlite). The subprocess timeout is the
    guard against the retries coming back."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "GAVEL_CACHE_DIR": str(tmp_path / "cache")}
    for mode in ([], ["--multirun", "seed=0,1"]):
        done = subprocess.run(
            [GAVEL, "run", *mode, "attack=fgsm", "n_examples=5", f"hydra.sweep.dir={tmp_path / 'multirun'}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 2, done.stderr[-2000:]
        errors = [line for line in done.stderr.splitlines() if line.startswith("gavel:")]
        assert len(errors) == 1 and f"MLFLOW_TRACKING_URI={uri}" in errors[0] and reason in errors[0], done.stderr
        assert "Traceback" not in done.stderr
        assert not (tmp_path / "cache").exists()  # nothing trained


def test_an_unknown_launcher_is_refused_with_the_allowed_ones(tmp_path):
    done = gavel_in_own_folder(tmp_path, "hydra/launcher=slurm_please", "attack=fgsm")
    assert done.returncode == 2
    allowed = launcher_options()
    assert {"basic", "joblib", "submitit_local", "submitit_slurm"} <= set(allowed)  # and ray, where installed
    assert done.stderr.strip() == f"gavel: hydra/launcher=slurm_please: unknown launcher; allowed: {', '.join(allowed)}"
    assert not (tmp_path / "mlflow.db").exists()


# --- launchers ---


@pytest.mark.slow
def test_a_joblib_sweep_runs_jobs_in_parallel_on_a_new_sqlite_store(tmp_path):
    """Two jobs at a time on a store that does not exist yet: the sweeper creates it once (before, one job died
    in MLflow's schema migration), and shares the cores out (`threads`), none lost or duplicated."""
    env = {k: v for k, v in os.environ.items() if k != "GAVEL_THREADS"}
    done = subprocess.run(
        [
            GAVEL,
            "run",
            "--multirun",
            "attack=fgsm",
            "n_examples=10",
            "seed=0,1,2,3",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ],  # fmt: skip
        cwd=tmp_path,
        env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "GAVEL_CACHE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = runs_in(tmp_path / "mlflow.db")
    assert sorted(r.data.params["seed"] for r in found) == ["0", "1", "2", "3"]
    assert all(r.info.status == "FINISHED" for r in found)
    assert {r.data.params["threads"] for r in found} == {str(max(1, CORES // 2))}
    assert len({r.data.tags["gavel.pid"] for r in found}) >= 2  # more than one worker process ran them
    assert "MLflow: 4 runs" in done.stdout


@pytest.mark.slow
def test_a_submitit_local_sweep_runs_each_job_in_its_own_process(tmp_path):
    """`submitit_local` stands in for `submitit_slurm`: the same launcher, jobs submitted and pickled alike."""
    done = gavel_in_own_folder(
        tmp_path, "--multirun", "attack=fgsm", "n_examples=10", "seed=0,1", "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10", timeout=600, cache_dir=os.environ["GAVEL_CACHE_DIR"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = runs_in(tmp_path / "mlflow.db")
    assert sorted(r.data.params["seed"] for r in found) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in found)
    assert os.getpid() not in {int(r.data.tags["gavel.pid"]) for r in found}
    assert (tmp_path / "multirun" / ".submitit").is_dir()


@pytest.mark.slow
def test_the_sweeper_checks_every_job_before_the_first_starts_under_joblib(tmp_path):
    done = gavel_in_own_folder(
        tmp_path, "--multirun", "attack=fgsm", "n_examples=5,0", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
    )
    assert done.returncode == 2
    assert "n_examples" in done.stderr and "(in sweep job:" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "mlflow.db").exists() or runs_in(tmp_path / "mlflow.db") == []


# --- stopped jobs ---


@pytest.mark.slow
@pytest.mark.parametrize("stop, status", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, None)])
def test_sigterm_and_sigint_end_the_run_killed_and_leave_the_cache_valid(tmp_path, stop, status):
    """Stopped while the judge trains (the cache is empty): the run ends KILLED (before: SIGTERM left it RUNNING
    forever, SIGINT ended it FAILED), and the cache holds no partial entry; the next job trains and runs."""
    job = start_gavel(tmp_path, "attack=square", "access=hidden_probabilities", "access.budget=100000")
    wait_for(lambda: running_runs(tmp_path / "mlflow.db"), "the run to start")
    os.kill(job.pid, stop)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode != 0 and (status is None or job.returncode == status), stderr[-2000:]
    (run,) = runs_in(tmp_path / "mlflow.db")
    assert run.info.status == "KILLED"
    models = tmp_path / "cache" / "models"
    leftovers = [p.name for p in models.iterdir() if p.is_dir()] if models.exists() else []
    assert all(not name.startswith(".") for name in leftovers)  # no staging folder left behind
    done = gavel_in_own_folder(tmp_path, "attack=fgsm", "n_examples=5")
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_after_sigkill_the_next_job_marks_the_orphaned_run_failed(tmp_path):
    job = start_gavel(tmp_path, "attack=square", "access=hidden_probabilities", "access.budget=100000")
    freeze_while(job, lambda: running_runs(tmp_path / "mlflow.db"), "the run to start")
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=60)
    assert [r.info.status for r in runs_in(tmp_path / "mlflow.db")] == ["RUNNING"]
    done = gavel_in_own_folder(tmp_path, "attack=fgsm", "n_examples=5")
    assert done.returncode == 0, done.stderr[-2000:]
    statuses = {r.data.tags["attack"]: r for r in runs_in(tmp_path / "mlflow.db")}
    orphan = statuses["square"]
    assert orphan.info.status == "FAILED" and "orphan cleanup" in orphan.data.tags["gavel.ended_by"]
    assert statuses["fgsm"].info.status == "FINISHED"


# --- resume ---

SWEEP = ("--multirun", "attack=square", "access=hidden_probabilities", "access.budget=10,3000,100", "n_examples=60")


@pytest.mark.slow
def test_a_sweep_killed_mid_job_resumes_to_the_same_table_as_an_uninterrupted_one(tmp_path):
    cache = {"GAVEL_CACHE_DIR": os.environ["GAVEL_CACHE_DIR"]}
    (tmp_path / "whole").mkdir()
    whole = gavel_in_own_folder(tmp_path / "whole", *SWEEP, timeout=600, cache_dir=cache["GAVEL_CACHE_DIR"])
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    store = killed_dir / "mlflow.db"
    job = start_gavel(killed_dir, *SWEEP, env=cache)
    later_job = "and name not like '0 %'"
    freeze_while(job, lambda: running_runs(store, later_job), "a job after the first to start")
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=60)
    before = {r.info.run_name: r.info.status for r in runs_in(store)}
    done_before = sum(status == "FINISHED" for status in before.values())
    assert sorted(before.values()) == ["FINISHED"] * done_before + ["RUNNING"] and done_before in (1, 2)

    def resume(sweep_dir: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [GAVEL, "run", *SWEEP, "resume=true", f"hydra.sweep.dir={killed_dir / sweep_dir}"],
            cwd=killed_dir,
            env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}", **cache},
            capture_output=True,
            text=True,
            timeout=600,
        )

    resumed = resume("multirun2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{done_before} jobs already FINISHED" in resumed.stdout and f"{3 - done_before} to run" in resumed.stdout
    assert table_of(resumed.stdout) == table_of(whole.stdout)
    after = runs_in(store)
    assert sorted(r.info.status for r in after) == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]
    finished = [r for r in after if r.info.status == "FINISHED"]
    assert len({r.data.tags["sweep_id"] for r in finished}) == 1  # one sweep, the resumed one, holds all three
    assert len({r.data.tags["config_digest"] for r in finished}) == 3

    again = resume("multirun3")
    assert again.returncode == 0 and "3 jobs already FINISHED" in again.stdout and "0 to run" in again.stdout
    assert table_of(again.stdout) == table_of(whole.stdout)
    assert len(runs_in(store)) == 4  # nothing ran again


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
