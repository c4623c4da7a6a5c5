"""`gavel gate --policy conf/gate/NAME.yaml`: check robustness thresholds against the newest matching runs, for CI.

A policy names an MLflow experiment and a list of thresholds. Each threshold selects runs (`where`: tags such as
`threat_model`, `attack`, `defense`, `access.output`, and `budget_max` / `budget_min` on `access.budget`), keeps
the newest FINISHED run of each configuration, and checks one metric of each. Where a row (a threat model, access
policy and budget, and every other setting but the attack) was attacked several ways, the threshold binds on the
strongest attacker, the per-example union of its attacks (`reports/union.py`), unless `where: {attack: NAME}`
names one attack (`attack: union` says the default); runs a union cannot join (not the same examples) are an
error, not a weaker check:

- `max: X` passes when the metric's upper 95% bound (`_ci_high`) is at most X, `min: X` when its lower bound
  (`_ci_low`) is at least X; `bound: point` checks the point estimate instead;
- `baseline: RUN_ID` with `max_increase: X` (or `max_decrease: X`) fails when the metric moved by more than X
  from the baseline run's.

With `--run` only the runs that run made are checked; without, the newest run of every configuration the
experiment holds (an old configuration stays in the gate until its runs are deleted).

A policy can pin the judge (`judge:` with `sha256`, the SHA-256 of the judge's file; `uri` and `model_version`, a
registry's; `key`, the cache key of a judge gavel trains): every checked run must have judged exactly that one,
else the gate is an error (exit 2), whatever its thresholds say: a gate on another file than the one the policy
names proves nothing about it.

Exit status 0 when every check passes, 1 when one fails, 2 for an error (a malformed policy, no matching run).
It prints a table, writes `summary.json` and JUnit XML (`gate.xml`) to `--out`, and tags every checked run
`gate.<policy name>` = pass | fail.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import yaml

from gavel.reports.summary import SWEEP_PARENT
from gavel.reports.table import aligned, run_overrides
from gavel.reports.union import UNION, Member, Refusal, Union, strongest

TAG_KEYS = ("threat_model", "attack", "defense", "access.output", "dataset", "judge", "norm", "poison", "sanitise")
WHERE_KEYS = (*TAG_KEYS, "budget_max", "budget_min")
THRESHOLD_KEYS = ("name", "where", "metric", "max", "min", "bound", "baseline", "max_increase", "max_decrease")
BOUNDS = ("interval", "point")
PINS = {"sha256": "judge.sha256", "uri": "judge.uri", "model_version": "judge.model_version", "key": "judge_key"}
"""A policy's `judge:` keys, and the run tags each must equal."""


class PolicyError(ValueError):
    """A policy gavel cannot check: one line naming the key and what is allowed."""


@dataclass(frozen=True)
class Threshold:
    name: str
    metric: str
    where: dict[str, Any]
    limit: float
    kind: str
    """max | min | max_increase | max_decrease."""
    bound: str = "interval"
    baseline: str | None = None


@dataclass(frozen=True)
class Subject:
    """What a threshold checks: one run, or the union of a row's attacks."""

    run_ids: tuple[str, ...]
    name: str
    metrics: dict[str, float]

    @classmethod
    def of(cls, run) -> Subject:
        return cls((run.info.run_id,), run.info.run_name, run.data.metrics)

    @classmethod
    def united(cls, union: Union) -> Subject:
        return cls(union.run_ids, f"{union.name} ({union.where})", union.metrics)

    def __str__(self) -> str:
        if len(self.run_ids) == 1:
            return f"run {self.run_ids[0]}"
        return f"the union {self.name} of runs {', '.join(self.run_ids)}"


@dataclass(frozen=True)
class Check:
    threshold: str
    run_id: str
    """The run checked; a union's runs joined by +."""
    run_name: str
    metric: str
    value: float
    """What was compared with the limit: a bound of the interval, the point estimate, or the change."""
    limit: float
    kind: str
    passed: bool


@dataclass(frozen=True)
class Policy:
    name: str
    experiment: str
    run: list[str]
    """`gavel run`'s arguments for --run."""
    thresholds: list[Threshold]
    judge: dict[str, str]
    """The judge every checked run must have judged: run tag -> value (`PINS`)."""


def load_policy(path: Path) -> Policy:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise PolicyError(f"--policy {path}: cannot be read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise PolicyError(f"--policy {path}: not YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"--policy {path}: allowed: a mapping with experiment and thresholds")
    unknown = sorted(set(raw) - {"experiment", "run", "thresholds", "judge"})
    if unknown:
        raise PolicyError(f"policy.{unknown[0]}: no such key; allowed: experiment, run, thresholds, judge")
    experiment = raw.get("experiment")
    if not isinstance(experiment, str) or not experiment:
        raise PolicyError(f"policy.experiment={experiment!r}: allowed: an MLflow experiment name")
    run = raw.get("run", [])
    if isinstance(run, str):
        run = run.split()
    if not isinstance(run, list) or not all(isinstance(a, str) for a in run):
        raise PolicyError(f"policy.run={run!r}: allowed: the arguments of `gavel run`, as text or a list")
    items = raw.get("thresholds")
    if not isinstance(items, list) or not items:
        raise PolicyError(f"policy.thresholds={items!r}: allowed: a list of one or more thresholds")
    thresholds = [_threshold(i, item) for i, item in enumerate(items)]
    return Policy(Path(path).stem, experiment, run, thresholds, _pin(raw.get("judge")))


def _pin(judge: Any) -> dict[str, str]:
    if judge is None:
        return {}
    if not isinstance(judge, dict) or not judge:
        raise PolicyError(f"policy.judge={judge!r}: allowed: a mapping of {', '.join(PINS)}")
    for key, value in judge.items():
        if key not in PINS:
            raise PolicyError(f"policy.judge.{key}: no such key; allowed: {', '.join(PINS)}")
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
            raise PolicyError(f"policy.judge.{key}={value!r}: allowed: text (the run tag {PINS[key]}'s value)")
    return {PINS[key]: str(value) for key, value in judge.items()}


def check_pin(pin: dict[str, str], runs: list) -> None:
    """Every run judged the pinned judge; else a `PolicyError` naming the first that did not."""
    for run in runs:
        for tag, wanted in pin.items():
            got = run.data.tags.get(tag)
            if got != wanted:
                judged = f"{tag}={got}" if got is not None else f"no {tag} tag"
                raise PolicyError(
                    f"policy.judge: run {run.info.run_id} ({run.info.run_name}) judged another judge ({judged}, "
                    f"the policy pins {wanted}); allowed: runs of the pinned judge only"
                )


def _threshold(i: int, item: Any) -> Threshold:
    where_key = f"policy.thresholds[{i}]"
    if not isinstance(item, dict):
        raise PolicyError(f"{where_key}={item!r}: allowed: a mapping with metric and max, min or a baseline")
    unknown = sorted(set(item) - set(THRESHOLD_KEYS))
    if unknown:
        raise PolicyError(f"{where_key}.{unknown[0]}: no such key; allowed: {', '.join(THRESHOLD_KEYS)}")
    metric = item.get("metric")
    if not isinstance(metric, str) or not metric:
        raise PolicyError(f"{where_key}.metric={metric!r}: allowed: a metric name, e.g. attack_success_rate")
    where = item.get("where", {}) or {}
    if not isinstance(where, dict):
        raise PolicyError(f"{where_key}.where={where!r}: allowed: a mapping of {', '.join(WHERE_KEYS)}")
    for key, value in where.items():
        if key not in WHERE_KEYS:
            raise PolicyError(f"{where_key}.where.{key}: no such key; allowed: {', '.join(WHERE_KEYS)}")
        if key == "attack" and (not isinstance(value, str) or not value):
            raise PolicyError(f"{where_key}.where.attack={value!r}: allowed: {UNION} (the default) or an attack's name")
        if key.startswith("budget_") and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise PolicyError(f"{where_key}.where.{key}={value!r}: allowed: a positive integer")
    kinds = [k for k in ("max", "min", "max_increase", "max_decrease") if k in item]
    if len(kinds) != 1:
        raise PolicyError(f"{where_key}: allowed: exactly one of max, min, max_increase, max_decrease")
    kind = kinds[0]
    limit = item[kind]
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit):
        raise PolicyError(f"{where_key}.{kind}={limit!r}: allowed: a number")
    baseline = item.get("baseline")
    if kind.endswith("crease") != (baseline is not None):
        raise PolicyError(f"{where_key}: {kind} needs a baseline run id; max and min compare with no baseline")
    bound = item.get("bound", "interval")
    if bound not in BOUNDS:
        raise PolicyError(f"{where_key}.bound={bound!r}: allowed: {', '.join(BOUNDS)}")
    name = str(item.get("name") or f"{metric} {kind} {limit}")
    return Threshold(name, metric, dict(where), float(limit), kind, bound, baseline)


def matching_runs(experiment: str, where: dict[str, Any], since: int = 0) -> list:
    """The newest FINISHED run of each configuration (its overrides, less its run label) matching `where`, among
    the runs started at or after `since` (ms since the epoch)."""
    if mlflow.get_experiment_by_name(experiment) is None:
        return []
    runs = mlflow.search_runs(
        experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'", output_format="list"
    )
    newest: dict[tuple, Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time, reverse=True):
        tags, params = run.data.tags, run.data.params
        if SWEEP_PARENT in tags or not all(tags.get(k) == str(v) for k, v in where.items() if k in TAG_KEYS):
            continue
        if (run.info.start_time or 0) < since:
            continue
        budget = params.get("access.budget", "null")
        budget = math.inf if budget in ("null", "None") else int(budget)
        if budget > where.get("budget_max", math.inf) or budget < where.get("budget_min", 0):
            continue
        overrides = " ".join(f"{k}={v}" for k, v in sorted(run_overrides(tags).items()) if k != "run_label")
        key = (tags.get("threat_model"), tags.get("attack"), tags.get("defense"), budget, overrides)
        newest.setdefault(key, run)
    return list(newest.values())


def selected_runs(threshold: Threshold, experiment: str, since: int = 0) -> list:
    """`matching_runs` of the threshold's `where`, every attack's when it binds on the union."""
    where = {k: v for k, v in threshold.where.items() if not (k == "attack" and v == UNION)}
    return matching_runs(experiment, where, since)


def subjects(threshold: Threshold, runs: list) -> list[Subject]:
    """What the threshold checks among `runs`: each row's union where several attacks ran on it (the default),
    each run where the threshold names its attack or its row was attacked one way."""
    if threshold.where.get("attack", UNION) != UNION:
        return [Subject.of(run) for run in runs]
    members = [Member(r.info.run_id, r.info.run_name, r.data.tags, r.data.params, r.info.start_time or 0) for r in runs]
    found = strongest(members)
    refused = [f for f in found if isinstance(f, Refusal)]
    if refused:
        raise PolicyError(
            f"{threshold.name}: binds on the union of each row's attacks, and {refused[0].line()}; allowed: runs on "
            "the same examples, or one attack (where: {attack: NAME})"
        )
    union_of = {run_id: union for union in found for run_id in union.run_ids}
    checked, seen = [], set()
    for run in runs:  # in the runs' order, a union where its first run stood
        union = union_of.get(run.info.run_id)
        if union is None:
            checked.append(Subject.of(run))
        elif union.run_ids not in seen:
            seen.add(union.run_ids)
            checked.append(Subject.united(union))
    return checked


def check(threshold: Threshold, subject: Subject) -> Check:
    metrics = subject.metrics
    if threshold.metric not in metrics:
        name_one = "; name one attack (where: {attack: NAME})" if len(subject.run_ids) > 1 else ""
        raise PolicyError(f"{threshold.name}: {subject} has no metric {threshold.metric}{name_one}")
    if threshold.kind in ("max", "min"):
        suffix = "" if threshold.bound == "point" else ("_ci_high" if threshold.kind == "max" else "_ci_low")
        key = threshold.metric + suffix
        if key not in metrics:
            raise PolicyError(f"{threshold.name}: {subject} has no {key}; use bound: point")
        value = metrics[key]
        passed = value <= threshold.limit if threshold.kind == "max" else value >= threshold.limit
    else:
        base = mlflow.get_run(threshold.baseline).data.metrics.get(threshold.metric)
        if base is None:
            raise PolicyError(f"{threshold.name}: baseline run {threshold.baseline} has no metric {threshold.metric}")
        value = metrics[threshold.metric] - base
        passed = value <= threshold.limit if threshold.kind == "max_increase" else -value <= threshold.limit
    return Check(threshold.name, "+".join(subject.run_ids), subject.name, threshold.metric, value, threshold.limit,
                 threshold.kind, bool(passed))  # fmt: skip


def junit(policy: str, checks: list[Check]) -> str:
    suite = ET.Element(
        "testsuite", name=f"gavel gate {policy}", tests=str(len(checks)),
        failures=str(sum(not c.passed for c in checks)),
    )  # fmt: skip
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"gate.{policy}", name=f"{c.threshold} [{c.run_name}]")
        if not c.passed:
            failure = ET.SubElement(case, "failure", message=f"{c.metric}: {c.value:.4f} against {c.kind} {c.limit}")
            failure.text = f"run {c.run_id}" if "+" not in c.run_id else f"runs {c.run_id.replace('+', ', ')}"
    return ET.tostring(suite, encoding="unicode")


def gate(policy_path: Path, out: Path, *, run_first: bool = False, overrides: list[str] = ()) -> int:
    """Check the policy; write the summary and JUnit XML to `out`; the exit status. With `run_first`, `gavel run`
    runs the policy's arguments and then `overrides` (the judge and data of this CI job, say)."""
    policy = load_policy(policy_path)
    name, experiment, run_args, thresholds = policy.name, policy.experiment, policy.run, policy.thresholds
    since = 0  # with --run, only the runs it made: an older configuration must not pass or fail this gate
    if run_first:
        since = int(time.time() * 1000)
        if not run_args:
            raise PolicyError("--run: the policy has no run: arguments for `gavel run`")
        run_args = [*run_args, *overrides]
        done = subprocess.run([sys.executable, "-m", "gavel.experiments.cli", "run", *run_args])
        if done.returncode != 0:
            raise PolicyError(f"--run: `gavel run {' '.join(run_args)}` exited {done.returncode}")
    elif overrides:
        raise PolicyError(f"{' '.join(overrides)}: overrides apply to the run; allowed: only with --run")
    checks: list[Check] = []
    for threshold in thresholds:
        runs = selected_runs(threshold, experiment, since)
        if not runs:
            raise PolicyError(
                f"{threshold.name}: no FINISHED run in experiment {experiment!r} matches {threshold.where}"
            )
        check_pin(policy.judge, runs)
        checks += [check(threshold, subject) for subject in subjects(threshold, runs)]
    client = mlflow.MlflowClient()
    for c in checks:
        for run_id in c.run_id.split("+"):
            client.set_tag(run_id, f"gate.{name}", "pass" if c.passed else "fail")
    out.mkdir(parents=True, exist_ok=True)
    verdict = "pass" if all(c.passed for c in checks) else "fail"
    summary = {"policy": name, "experiment": experiment, "verdict": verdict, "checks": [asdict(c) for c in checks]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "gate.xml").write_text(junit(name, checks))
    print(table(checks))
    print(f"\ngate {name}: {verdict} ({sum(c.passed for c in checks)} of {len(checks)} checks passed)")
    return 0 if verdict == "pass" else 1


def table(checks: list[Check]) -> str:
    rows = [["threshold", "run", "metric", "value", "limit", "verdict"]]
    rows += [
        [c.threshold, c.run_name, c.metric, f"{c.value:.3f}", f"{c.kind} {c.limit:g}", "pass" if c.passed else "FAIL"]
        for c in checks
    ]
    return aligned(rows)
