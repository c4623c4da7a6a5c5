"""MLflow conventions: one run per Hydra job, named and tagged so dashboards and reports can find it.

Tracking URI: MLFLOW_TRACKING_URI if set, else MLflow's own default. Before anything is trained the store must
answer and take the run (`check_tracking_store`, then the run's start, both without MLflow's minutes of retries):
else one line naming MLFLOW_TRACKING_URI and what failed. A run that raises ends FAILED; one stopped by Ctrl-C
or SIGTERM ends KILLED; one whose process died without a word (SIGKILL, a lost machine) stays RUNNING until the
next job on the same host ends it FAILED (`end_orphaned_runs`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import matplotlib.pyplot as plt
import mlflow
import mlflow.data
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf

from gavel.experiments import stops
from gavel.experiments.settings import RunSettings
from gavel.experiments.validation import ConfigError

REPO_DIR = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)


class TrackingStoreError(ConfigError):
    """The tracking store does not answer or refuses writes: one line naming MLFLOW_TRACKING_URI."""


QUICK_CALLS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""While a job checks the store and starts its run: no retries, 10 s per request (MLflow's defaults, 7 retries
with backoff and 120 s, spend 260 s on a server that is not there)."""


@contextmanager
def quick_store_calls():
    saved = {key: os.environ.get(key) for key in QUICK_CALLS}
    os.environ.update(QUICK_CALLS)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def store_failure(uri: str, what: str) -> TrackingStoreError:
    return TrackingStoreError(
        f"MLFLOW_TRACKING_URI={uri}: {what}; allowed: a running MLflow server (http://HOST:PORT, see "
        "`gavel tracking-server`) or a store this job can write (sqlite:///PATH, a folder)"
    )


def failure_reason(error: BaseException) -> str:
    """What failed, in a few words rather than MLflow's paragraph."""
    text = str(error)
    for marker, reason in (
        ("Connection refused", "no server answers there (connection refused)"),
        ("Name or service not known", "the host name does not resolve"),
        ("timed out", "the server did not answer within 10 s"),
        ("readonly database", "the database is read-only"),
        ("unable to open database file", "the database file cannot be opened or created"),
    ):
        if marker in text:
            return reason
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return first if len(first) <= 200 else first[:200] + "..."


def check_tracking_store() -> None:
    """Within seconds: the store answers, and (for a local file) can be written. Raises `TrackingStoreError`."""
    uri = mlflow.get_tracking_uri()
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = uri.removeprefix("sqlite:///")
        if path and path != ":memory:":
            try:
                connection = sqlite3.connect(path, timeout=5)  # creates an empty file if there is none
                try:
                    connection.execute("BEGIN IMMEDIATE")  # takes the write lock: fails on a read-only store
                    connection.rollback()
                finally:
                    connection.close()
            except sqlite3.Error as error:
                raise store_failure(uri, failure_reason(error)) from None
    elif parsed.scheme in ("", "file"):
        folder = Path(parsed.path if parsed.scheme else uri)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK):
                raise PermissionError("the folder is not writable")
        except OSError as error:
            raise store_failure(uri, failure_reason(error)) from None
    with quick_store_calls():
        try:
            mlflow.MlflowClient().search_experiments(max_results=1)
        except Exception as error:  # any failure to answer: the job must not start
            raise store_failure(uri, failure_reason(error)) from None


def prepare_store(experiment_names) -> None:
    """Before a sweep's jobs start: check the store, and create it and each experiment once, so that parallel
    jobs never race through MLflow's schema migration of a new sqlite store or create one experiment twice."""
    check_tracking_store()
    with quick_store_calls():
        for name in dict.fromkeys(experiment_names):
            try:
                use_experiment(name)
            except Exception as error:
                raise store_failure(mlflow.get_tracking_uri(), failure_reason(error)) from None


def process_identity(pid: int) -> str | None:
    """When process `pid` started (Linux: clock ticks since boot), so that a pid reused by another process
    is not taken for the run's; None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def process_alive(pid: int, identity: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    return identity is None or process_identity(pid) in (identity, None)


HOST, PID, PID_START = "gavel.host", "gavel.pid", "gavel.pid_start"
"""Tags naming the process a run belongs to, so that a later job can tell a run whose process died."""


def end_orphaned_runs(experiment: str) -> list[str]:
    """Mark FAILED every RUNNING run of `experiment` that was started on this host by a process that is gone
    (killed by SIGKILL, or its machine restarted). Runs from other hosts are left: their processes cannot be
    seen from here (a resumed sweep re-runs their jobs all the same, as they are not FINISHED)."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    client = mlflow.MlflowClient()
    ended = []
    for run in client.search_runs(
        [found.experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST}` = '{socket.gethostname()}'",
    ):
        tags = run.data.tags
        try:
            pid = int(tags[PID])
        except (KeyError, ValueError):
            continue
        if pid == os.getpid() or process_alive(pid, tags.get(PID_START) or None):
            continue
        client.set_tag(run.info.run_id, "gavel.ended_by", f"orphan cleanup: process {pid} on {tags[HOST]} was gone")
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
        log.warning(
            "run %s (%s) was left RUNNING by a process that is gone: marked FAILED", run.info.run_id, run.info.run_name
        )
        ended.append(run.info.run_id)
    return ended


SWEEP_LEVEL = ("run_label", "threads", "cache_dir", "resume", "seeds")
"""Config keys that do not change a job's result, or that belong to the sweep rather than the job: left out of
its `config_digest`."""


def config_digest(settings: RunSettings) -> str:
    """What identifies a job's result: the SHA-256 of its resolved config, less `SWEEP_LEVEL`."""
    config = {key: value for key, value in settings.plain_config().items() if key not in SWEEP_LEVEL}
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def finished_run_with(experiment: str, digest: str):
    """The newest FINISHED run of `experiment` with this config digest, or None."""
    runs = mlflow.search_runs(
        experiment_names=[experiment],
        filter_string=f"attributes.status = 'FINISHED' and tags.config_digest = '{digest}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0] if runs else None


def run_name(settings: RunSettings) -> str:
    """What tells the run from its sweep's others first (the MLflow UI shows about 25 characters of a name),
    then the attack, the API's output and budget, a target class, the surrogate's knowledge and the defense where
    they apply, the judge and the seed: `square-probabilities-b1000-cnn-s0`,
    `accounts10 knn_similarity | square-probabilities-b1000-knn_similarity-cnn-s0`."""
    attack = settings.attack_instance
    parts = [settings.attack.name, settings.access.output.value]
    if attack.threat_model.charged_queries:
        parts.append("binf" if settings.access.budget is None else f"b{settings.access.budget}")
    if attack.targeted:
        parts.append(f"t{attack.target_class}")
    if attack.threat_model.surrogate:
        parts.append(settings.surrogate_instance.knowledge)
    if settings.defense.name != "none":
        parts.append(settings.defense.name)
    poison = settings.poison_instance
    if poison.active:
        parts.append(settings.poison.name + ("" if poison.fraction is None else f"{poison.fraction:g}"))
    if settings.sanitiser_instance.active:
        parts.append(settings.sanitise.name)
    if settings.target_instance.adversarial:
        parts.append(f"adv_{settings.target_instance.adversarial}")
    name = "-".join([*parts, settings.target.name, f"s{settings.seed}"])
    return f"{settings.run_label} | {name}" if settings.run_label else name


def sweep_id_for(sweep_dir: str | Path) -> str:
    """One id per multirun sweep, the same in every job of it and in the sweep's end-of-run callback."""
    return hashlib.sha256(str(Path(sweep_dir).resolve()).encode()).hexdigest()[:12]


def flatten(node, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = "null" if value is None else str(value)
    return flat


VERSIONED = ("torch", "torchvision", "adversarial-robustness-toolbox", "foolbox", "mlflow", "numpy")


def library_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def one(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} absent"

    return ", ".join(one(name) for name in VERSIONED)


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


NOTE = "mlflow.note.content"
"""The tag MLflow's UI shows as an experiment's or a run's description."""


def experiment_description(name: str) -> str:
    """The preset's own header comment when `name` is a preset's experiment, else what gavel's runs hold."""
    preset = REPO_DIR / "conf" / "experiment" / f"{name}.yaml"
    if preset.exists():
        lines = preset.read_text().splitlines()
        comment = [line.removeprefix("#").strip() for line in lines if line.startswith("# ") and "@package" not in line]
        if comment:
            return f"gavel preset `{name}`: " + " ".join(comment)
    return (
        f"gavel experiment `{name}`: adversarial robustness of AI judges, one run per attack configuration. "
        "Each run logs attack_success_rate with its 95% interval (_ci_low, _ci_high), the per-example CSV and a "
        "grid of adversarial examples; a sweep's parent run holds its summary table and curves."
    )


def use_experiment(name: str) -> None:
    """Make `name` the active experiment, with a description. A new experiment in a local sqlite store keeps its
    artifacts in `mlruns/` beside the database file (MLflow's default is `./mlruns` in whatever folder the job
    runs in, which scatters one store's artifacts over every working directory, a repository's included).

    Jobs that start at the same moment on a new experiment (two machines, say) each try to create it; the losers
    use the winner's. It is created here rather than by `mlflow.set_experiment`, which in MLflow 3.17, on losing
    that race, returns the experiment without making it active, so that the loser's run lands in `Default`."""
    if mlflow.get_experiment_by_name(name) is None:
        uri = mlflow.get_tracking_uri()
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()
        try:
            mlflow.create_experiment(name, artifact_location=location)
        except MlflowException:
            pass  # another job created it first: use theirs
    experiment = mlflow.set_experiment(name)
    if NOTE not in experiment.tags:
        try:
            mlflow.set_experiment_tag(NOTE, experiment_description(name))
        except MlflowException:
            pass  # another job described it at the same moment


def unbounded(attack) -> str:
    """What bounds an attack with no norm: a poison's trigger (planted in training), else a patch (its size)."""
    return "trigger" if attack.threat_model.name == "poisoning" else "patch"


def run_description(settings: RunSettings, metrics: dict[str, float]) -> str:
    """One line: who attacked what through which API, and the result with its interval."""
    attack = settings.attack_instance
    budget = "unlimited" if settings.access.budget is None else f"{settings.access.budget:,}"
    eps = f"L{attack.norm} eps {attack.eps:g}" if attack.norm is not None else f"a {unbounded(attack)}"
    queries = f", {budget} queries per example" if attack.threat_model.charged_queries else ""
    return (
        f"{settings.attack.name} ({attack.threat_model.name.replace('_', '-')}, {eps}) against the "
        f"{settings.target.name} judge on {settings.data.name}, {settings.access.output.value} API{queries}, "
        f"defense {settings.defense.name}: success {metrics['attack_success_rate']:.3f} "
        f"[{metrics['attack_success_rate_ci_low']:.3f}, {metrics['attack_success_rate_ci_high']:.3f}] over "
        f"{int(metrics['n_attacked'])} attacked examples."
    )


OVERRIDES, OVERRIDES_JSON = "overrides", "overrides_json"
"""The tags of a job's Hydra overrides: one line for people (the overrides joined by spaces), and the list as
JSON, for readers: a value may hold spaces (`run_label='0 pgd open'`, `x=[1, 2]`), so the line cannot be split
back into the overrides."""
MAX_TAG_LENGTH = 8000
"""MLflow's limit on a tag's value (`mlflow.utils.validation.MAX_TAG_VAL_LENGTH`): a longer one fails the run."""


def overrides_tags(overrides: list[str]) -> dict[str, str]:
    """The tags that record a job's overrides (none without any). The JSON list is left out only where it would
    pass MLflow's limit on a tag's value; then `recorded_overrides` reads the line."""
    if not overrides:
        return {}
    tags = {OVERRIDES: " ".join(overrides)}
    listed = json.dumps(list(overrides), ensure_ascii=False)
    if len(listed) <= MAX_TAG_LENGTH:
        tags[OVERRIDES_JSON] = listed
    return tags


def recorded_overrides(tags: dict) -> list[str]:
    """A run's Hydra overrides exactly as its job was given them: the JSON list where the run recorded one, else
    (a run recorded before the list was, or one whose list was too long for a tag) the line split at the spaces
    outside quotes and brackets, as Hydra reads one override's value."""
    if OVERRIDES_JSON in tags:
        try:
            listed = json.loads(tags[OVERRIDES_JSON])
        except ValueError:
            listed = None
        if isinstance(listed, list) and all(isinstance(o, str) for o in listed):
            return listed
    return split_overrides(tags.get(OVERRIDES, ""))


def split_overrides(line: str) -> list[str]:
    """Overrides joined by spaces, apart again: a space ends one only outside quotes (' or ", a backslash escaping
    the next character within them) and outside brackets ([...], {...}, (...))."""
    words, word, quote, depth, escaped = [], [], None, 0, False
    for char in line:
        if quote:
            if char == quote and not escaped:
                quote = None
            escaped = not escaped and char == "\\"
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth = max(depth - 1, 0)
        elif char.isspace() and depth == 0:
            if word:
                words.append("".join(word))
                word = []
            continue
        word.append(char)
    if word:
        words.append("".join(word))
    return words


@contextmanager
def mlflow_run(settings: RunSettings, sweep_id: str | None = None, overrides: list[str] = ()):
    """Start the run with its params and tags (without MLflow's retries: a store that refuses the run stops the
    job here, before anything is trained, with a `TrackingStoreError`); on any exception the run ends FAILED,
    KILLED on Ctrl-C or SIGTERM (a `KeyboardInterrupt`, see experiments/run.py)."""
    attack = settings.attack_instance
    tags = {
        "threat_model": attack.threat_model.name,
        "norm": unbounded(attack) if attack.norm is None else f"L{attack.norm}",
        "attack": settings.attack.name,
        "judge": settings.target.name,
        "dataset": settings.data.name,
        "access.output": settings.access.output.value,
        "access.weights": settings.access.weights.value,
        "defense": settings.defense.name,
        "poison": settings.poison.name,
        "sanitise": settings.sanitise.name,
        "access.budget": "null" if settings.access.budget is None else str(settings.access.budget),
        "git_sha": git_sha(),
        "versions": library_versions(),
        "config_digest": config_digest(settings),
        HOST: socket.gethostname(),
        PID: str(os.getpid()),
        PID_START: process_identity(os.getpid()) or "",
    }
    if sweep_id is not None:
        tags["sweep_id"] = sweep_id
    tags.update(overrides_tags(list(overrides)))
    resolved = settings.plain_config()
    try:
        with stops.deferred(), quick_store_calls():  # a stop while the run is registered: raised once it is
            try:
                use_experiment(settings.experiment_name)
                end_orphaned_runs(settings.experiment_name)
                run = mlflow.start_run(run_name=run_name(settings), tags=tags)
                mlflow.log_params(flatten(resolved))
                mlflow.log_text(OmegaConf.to_yaml(OmegaConf.create(resolved)), "config.yaml")
            except Exception as error:
                raise store_failure(mlflow.get_tracking_uri(), failure_reason(error)) from None
        yield run
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (`experiments.stops` raises it as `Terminated`)
        _end_quietly(RunStatus.KILLED)
        raise
    except BaseException:
        _end_quietly(RunStatus.FAILED)
        raise
    with stops.deferred():
        mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))


def _end_quietly(status: int) -> None:
    """End the active run, if one was started, with `status` (a run left active would be ended FINISHED by
    MLflow's exit handler), keeping the error that brought us here if the store fails too."""
    if mlflow.active_run() is None:
        return
    try:
        with stops.deferred():  # a second stop must not interrupt the ending
            mlflow.end_run(RunStatus.to_string(status))
    except Exception as error:
        log.warning("could not mark the run %s: %s", RunStatus.to_string(status), failure_reason(error))


def runs_page(experiment: str) -> str:
    """Where `mlflow ui`'s runs table of `experiment` opens (MLflow 3 opens an experiment on its GenAI overview;
    `workflowType=machine_learning` is its "Model training" view, checked in MLflow 3.17's UI)."""
    found = mlflow.get_experiment_by_name(experiment)
    where = f"#/experiments/{found.experiment_id}/runs?workflowType=machine_learning" if found else ""
    return f"http://127.0.0.1:5000/{where}"


def describe_run(settings: RunSettings, metrics: dict[str, float]) -> None:
    mlflow.set_tag(NOTE, run_description(settings, metrics))


CLASSES_TAG = "dataset.classes"
"""The data's class names, in label order, joined by ", " (cut short, with their count, past MLflow's limit on a
tag's value)."""
CHECK_TAG = "gavel.check."
"""Each sanity check's tag: `gavel.check.<name>` = pass | warn (`experiments/sanity.py`)."""


def log_judge(judge, data) -> None:
    """Where the judge came from (a foreign file's SHA-256, a registry's URI and version, a trained judge's cache
    key), and the classes it judges."""
    names = ", ".join(data.class_names)
    if len(names) > MAX_TAG_LENGTH:
        names = names[: MAX_TAG_LENGTH - 40].rsplit(", ", 1)[0] + f", ... ({data.n_classes} classes)"
    mlflow.set_tags({**judge.tags, CLASSES_TAG: names, "dataset.n_classes": str(data.n_classes)})
    if judge.figures:
        mlflow.log_metrics(judge.figures)


def log_evaluation_data(x, y, dataset: str) -> None:
    """The evaluation examples, as an MLflow input (its digest tells runs on the same examples)."""
    data = mlflow.data.from_numpy(x, targets=y, name=f"{dataset}-evaluation-{len(y)}")
    for attempt in range(3):
        try:
            mlflow.log_input(data, context="evaluation")
            return
        except MlflowException as error:
            # Parallel jobs on the same examples: MLflow's store looks the dataset up, then inserts it, so two jobs
            # can both insert it and one hits the unique key. Asked again, it finds the other's and links it.
            duplicate = "UNIQUE constraint" in str(error) or "duplicate key" in str(error)
            if not duplicate or attempt == 2:
                raise


def log_checks(checks) -> None:
    """Each sanity check that applies to the run (`experiments/sanity.py`): `gavel.check.<name>` = pass | warn, and
    what it saw in `gavel.check.<name>.detail`; a warning is also logged for whoever watches the job."""
    for check in checks:
        mlflow.set_tags({f"{CHECK_TAG}{check.name}": check.value, f"{CHECK_TAG}{check.name}.detail": check.detail})
        if not check.passed:
            log.warning("sanity check %s: %s", check.name, check.detail)


def log_evaluation(evaluation, per_example_csv: str, figures: dict) -> None:
    """The run's metrics, its success-vs-queries curve, the per-example CSV, and its figures (artifact name ->
    matplotlib figure)."""
    mlflow.log_metrics(evaluation.metrics)
    for step, rate in evaluation.success_curve:
        mlflow.log_metric("attack_success_rate_at_queries", rate, step=step)
    mlflow.log_text(per_example_csv, "per_example.csv")
    for name, figure in figures.items():
        mlflow.log_figure(figure, name)
        plt.close(figure)
