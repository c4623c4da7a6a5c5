"""The strongest attacker per row (AutoAttack's principle): for one threat model, access policy and budget, and
every other setting that makes a row (defense, eps, the judge and data, the seed), the per-example union over
every attack the sweep ran for it. An example counts as fooled if any of the attacks fooled it within its budget
(each run's own re-check on the judge, under its own budget); an attacker that runs them all pays all their
queries, so the union's queries on an example are the sum of the attacks'.

Runs are united only when they attacked the same examples: the same data, number of examples, seed and judge,
and per-example tables (`per_example.csv`) listing the same examples with the same labels; otherwise the row has
no union, and a `Refusal` says why. Examples that some of the attacks did not attack (a randomised judge's first
answer was already wrong) are left out of the union's count, and counted as left out.

An attack's own hyperparameters (`attack.*` overrides, but for the keys that say what counts as fooled) make no
row of their own here: an attacker chooses them as freely as the attack, so a row's union takes in each
configuration the sweep ran.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import mlflow
import numpy as np

from gavel.experiments.statistics import Interval, rate_interval
from gavel.reports.table import run_overrides
from gavel.targets.access import threat_model_named

UNION = "union"
"""What a gate's `where: {attack: union}` names, and how a union's attack label begins: `union(hopskipjump,rays)`."""
UNITED_THREAT_MODELS = ("white_box", "transfer", "score_based", "decision_based", "hybrid")
"""A backdoor's success is another metric, on other inputs: poisoning runs are never united."""
GOAL = frozenset({"attack.eps", "attack.norm", "attack.targeted", "attack.target_class"})
"""An attack's keys that say what counts as fooled: they set the row; every other `attack.*` key is the attack's own."""
NOT_A_SETTING = frozenset({"run_label", "resume", "threads", "experiment", "experiment_name", "seed"})
"""Overrides that name a job or a sweep rather than what it measured (the seed is read from the run's params)."""
NEEDED = ("index", "attacked", "success", "queries")
"""The per-example columns a union reads (`experiments.metrics.PER_EXAMPLE_COLUMNS` has them all)."""
JUDGE_TAGS = ("judge", "judge_key", "judge.sha256", "judge.uri", "judge.model_version")


class NotSameExamples(ValueError):
    """Per-example tables that do not list the same examples: no union of them means anything."""


@dataclass(frozen=True)
class Member:
    """A FINISHED run that may join a union: its id, name, tags and params, and when it started (the newest run
    of one attack's configuration is the one united)."""

    run_id: str
    name: str
    tags: Mapping[str, str]
    params: Mapping[str, str]
    start_time: int = 0

    @property
    def attack(self) -> tuple[str, tuple]:
        """The attack and its own hyperparameters, as the job was given them."""
        own = tuple(sorted((k, v) for k, v in run_overrides(self.tags).items() if attack_own(k) and k != "attack"))
        return self.tags.get("attack", "?"), own


def attack_own(key: str) -> bool:
    """Whether an override key is the attack's own choice (the attack, or one of its hyperparameters)."""
    return key == "attack" or (key.startswith("attack.") and key not in GOAL)


def row_key(tags: Mapping[str, str], params: Mapping[str, str]) -> tuple | None:
    """What a run's row is, the attack aside (None: a run no union takes in)."""
    threat_model = tags.get("threat_model")
    if threat_model not in UNITED_THREAT_MODELS:
        return None
    settings = tuple(
        sorted((k, v) for k, v in run_overrides(tags).items() if not attack_own(k) and k not in NOT_A_SETTING)
    )
    return (
        threat_model,
        tags.get("access.weights"),
        tags.get("access.output"),
        params.get("access.budget", "null"),
        tags.get("defense", "none"),
        tags.get("norm"),
        params.get("attack.eps"),
        params.get("seed"),
        settings,
    )


def examples_of(tags: Mapping[str, str], params: Mapping[str, str]) -> dict[str, str]:
    """What picks a run's evaluation examples and their verdicts: data, how many, seed, judge."""
    judge = " ".join(f"{k}={tags[k]}" for k in JUDGE_TAGS if k in tags) or "?"
    return {
        "data": tags.get("dataset", "?"),
        "n_examples": params.get("n_examples", "?"),
        "seed": params.get("seed", "?"),
        "judge": judge,
    }


def unite(frames: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The per-example union of several attacks' tables (each as `load_per_example` reads it back): `index`;
    `attacked`: by every attack; `success`: among those, fooled by any; `queries`: the sum of the attacks' queries
    on it; `left_out`: attacked by some of them, not all; `label` and `initial_prediction` only where every table
    gives the same verdicts (a deterministic judge). `NotSameExamples` when the tables list other examples or
    labels."""
    if len(frames) < 2:
        raise ValueError(f"a union takes two or more attacks' tables; got {len(frames)}")
    missing = sorted({column for frame in frames for column in NEEDED if column not in frame})
    if missing:
        raise ValueError(f"a per-example table has no {missing[0]} column")
    first = frames[0]
    for frame in frames[1:]:
        for column in ("index", "label"):
            if column in first and not np.array_equal(frame.get(column), first[column]):
                raise NotSameExamples(f"the per-example tables differ in their {column} column")
    attacked_by = np.array([frame["attacked"] > 0 for frame in frames])
    attacked = attacked_by.all(axis=0)
    fooled = np.array([frame["success"] > 0 for frame in frames]).any(axis=0)
    united = {
        "index": first["index"],
        "attacked": attacked,
        "success": attacked & fooled,
        "queries": np.where(attacked, np.sum([frame["queries"] for frame in frames], axis=0), 0),
        "left_out": attacked_by.any(axis=0) & ~attacked,
    }
    initial = [frame.get("initial_prediction") for frame in frames]
    if "label" in first and all(i is not None and np.array_equal(i, initial[0]) for i in initial):
        united |= {"label": first["label"], "initial_prediction": initial[0]}
    return united


def union_metrics(united: Mapping[str, np.ndarray], charged: bool) -> dict[str, float]:
    """The union's metrics, under the names every run logs: success among the examples every attack attacked,
    with its interval; robust and clean accuracy where no example was left out and the judge's verdicts agree;
    with `charged` (a threat model that spends a query budget) or any query sent, queries per example summed over
    the attacks."""
    attacked, success = united["attacked"], united["success"]
    n = int(attacked.sum())
    if n == 0:
        raise ValueError("no example was attacked by every attack")
    hits = int(success.sum())
    metrics = {
        "attack_success_rate": hits / n,
        **_with_interval("attack_success_rate", rate_interval(hits, n)),
        "n_attacked": float(n),
        "n_examples": float(len(attacked)),
        "examples_left_out": float(united["left_out"].sum()),
    }
    if "initial_prediction" in united and not united["left_out"].any():
        correct = united["initial_prediction"] == united["label"]
        robust = correct & ~success
        metrics["clean_accuracy"] = float(correct.mean())
        metrics["robust_accuracy"] = float(robust.mean())
        metrics |= _with_interval("robust_accuracy", rate_interval(int(robust.sum()), len(robust)))
    queries = united["queries"][attacked]
    if charged or queries.sum() > 0:  # as a run's: an attack that sent no query has no query figures
        metrics |= {
            "queries_total": float(queries.sum()),
            "queries_mean": float(queries.mean()),
            "queries_median": float(np.median(queries)),
        }
    return metrics


def _with_interval(name: str, interval: Interval) -> dict[str, float]:
    return {f"{name}_ci_low": interval.low, f"{name}_ci_high": interval.high}


@dataclass(frozen=True)
class Union:
    members: tuple[Member, ...]
    per_example: dict[str, np.ndarray]
    metrics: dict[str, float]

    @property
    def name(self) -> str:
        """`union(hopskipjump,rays)`; an attack run in several configurations is counted: `union(square x3)`."""
        names = [m.tags.get("attack", "?") for m in self.members]
        counted = (name if names.count(name) == 1 else f"{name} x{names.count(name)}" for name in sorted(set(names)))
        return f"{UNION}({','.join(counted)})"

    @property
    def run_ids(self) -> tuple[str, ...]:
        return tuple(m.run_id for m in self.members)

    @property
    def where(self) -> str:
        return describe_row(self.members[0])


@dataclass(frozen=True)
class Refusal:
    """A row whose attacks cannot be united, and why."""

    members: tuple[Member, ...]
    why: str

    def line(self) -> str:
        attacks = ", ".join(sorted(m.tags.get("attack", "?") for m in self.members))
        return f"no union at {describe_row(self.members[0])} of {attacks}: {self.why}"


def describe_row(member: Member) -> str:
    """A row in words: `decision_based, output label, budget 100, seed 0`."""
    tags, params = member.tags, member.params
    budget = params.get("access.budget", "null")
    parts = [tags.get("threat_model", "?"), f"output {tags.get('access.output', '?')}"]
    parts += [] if budget in ("null", "None") else [f"budget {budget}"]
    parts += [] if tags.get("defense", "none") == "none" else [f"defense {tags['defense']}"]
    return ", ".join([*parts, f"seed {params.get('seed', '?')}"])


def load_per_example(run_id: str) -> dict[str, np.ndarray] | None:
    """A run's `per_example.csv`, a column each (None: the run has none)."""
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/per_example.csv")
    except Exception:  # a run without the table: the caller says so, nothing is dropped silently
        return None
    rows = list(csv.DictReader(io.StringIO(text)))
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]} if rows else None


def strongest(
    members: Sequence[Member],
    per_example: Callable[[str], Mapping[str, np.ndarray] | None] = load_per_example,
) -> list[Union | Refusal]:
    """A `Union` (or the `Refusal` of one) for each row that two or more attacks (or configurations of one) ran
    on, the newest run of each; rows with one attack have neither."""
    rows: dict[tuple, dict[tuple, Member]] = {}
    for member in sorted(members, key=lambda m: m.start_time, reverse=True):
        key = row_key(member.tags, member.params)
        if key is not None:
            rows.setdefault(key, {}).setdefault(member.attack, member)
    found: list[Union | Refusal] = []
    for _, by_attack in sorted(rows.items(), key=lambda item: _row_order(item[0])):
        if len(by_attack) < 2:
            continue
        united = tuple(sorted(by_attack.values(), key=lambda m: (m.attack, m.run_id)))
        found.append(_union(united, per_example))
    return found


def _row_order(key: tuple) -> tuple:
    """Threat models from open to hidden, budgets from small to large; the rest as text."""
    threat_model, budget = key[0], key[3]
    return (
        UNITED_THREAT_MODELS.index(threat_model),
        math.inf if budget in ("null", "None") else float(budget),
        repr(key),
    )


def _union(members: tuple[Member, ...], per_example) -> Union | Refusal:
    examples = [examples_of(m.tags, m.params) for m in members]
    for key in examples[0]:
        values = sorted({e[key] for e in examples})
        if len(values) > 1:
            return Refusal(members, f"not the same examples ({key} differs: {' / '.join(values)})")
    frames = [per_example(m.run_id) for m in members]
    missing = [m.name for m, frame in zip(members, frames) if frame is None]
    if missing:
        return Refusal(members, f"no per-example table for {', '.join(missing)}")
    try:
        united = unite(frames)
        charged = threat_model_named(members[0].tags["threat_model"]).charged_queries
        return Union(members, united, union_metrics(united, charged))
    except NotSameExamples as error:
        return Refusal(members, f"not the same examples ({error})")
    except ValueError as error:  # a table without a column the union reads, or no example every attack attacked
        return Refusal(members, str(error))


def union_rows(
    rows: Sequence[dict], per_example: Callable[[str], Mapping[str, np.ndarray] | None] = load_per_example
) -> tuple[list[dict], list[str]]:
    """The sweep table's union rows for its FINISHED runs (`table.sweep_rows`), each beside its attacks' own rows,
    and a line for each row whose attacks were not united or whose union left examples out."""
    by_id = {row["run_id"]: row for row in rows}
    members = [
        Member(row["run_id"], row["name"], row["tags"], row["params"], row["start_time"])
        for row in rows
        if row["status"] == "FINISHED"
    ]
    united, notes = [], []
    for found in strongest(members, per_example):
        if isinstance(found, Refusal):
            notes.append(found.line())
            continue
        first = by_id[found.members[0].run_id]
        overrides = {k: v for k, v in first["overrides"].items() if not attack_own(k) and k != "run_label"}
        united.append(
            {
                **{key: first[key] for key in ("threat_model", "defense", "output", "budget", "eps")},
                "run_id": None,
                "status": "FINISHED",
                "attack": found.name,
                "union": True,
                "overrides": overrides,
                **found.metrics,
            }
        )
        if found.metrics["examples_left_out"]:
            notes.append(left_out_line(found))
    return united, notes


def left_out_line(union: Union) -> str:
    left_out = int(union.metrics["examples_left_out"])
    return f"{union.name} at {union.where}: {left_out} examples attacked by some of its attacks only, left out"
