"""One job, in named stages:

    provision (data, judge, defense, Oracle) -> select examples -> attack -> audit the ledger -> evaluate
        -> measure the operator's side (the defense's cost and catch) -> record

Config errors are found before `run` (`RunSettings.from_config`); data that cannot be loaded stops the job
before an MLflow run starts. Everything from the judge on happens inside the run, which ends FAILED if any
stage raises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gavel.attacks.base import Attack, AttackerKit, AttackResult
from gavel.defenses.base import OperatorKit
from gavel.experiments import operator_metrics, tracking
from gavel.experiments.figures import adversarial_grid
from gavel.experiments.metrics import Evaluation, compromise_from_ledger, evaluate, per_example_csv
from gavel.experiments.models import build_surrogate, cached_model
from gavel.experiments.operator_metrics import OperatorReport
from gavel.experiments.settings import Device, RunSettings
from gavel.targets.access import SHARED, AttackerClient, Oracle, Shield
from gavel.targets.datasets import Dataset, load_dataset

log = logging.getLogger(__name__)


def resolve_device(device: Device) -> str:
    if device == Device.AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.value


@dataclass(frozen=True)
class Provisioned:
    """The operator's side, set up: the evaluation data, the judge as trained, the defense deployed around it
    (its shield), and the Oracle in front. Verdicts are the Oracle's: what the operator's API returns."""

    data: Dataset
    judge: nn.Module
    shield: Shield
    oracle: Oracle
    device: str


@dataclass(frozen=True)
class Selection:
    """The first `n_examples` evaluation examples, the judge's verdict on each, and which are attacked."""

    x: np.ndarray
    y: np.ndarray
    initial: np.ndarray
    attacked: np.ndarray


def load_data(settings: RunSettings) -> Dataset:
    """Before any run is recorded: a missing data folder stops the job here."""
    return load_dataset(settings.data)


def run(settings: RunSettings, data: Dataset, sweep_id: str | None = None, overrides: list[str] = ()) -> dict:
    """One experiment, one MLflow run (tagged with its sweep and the job's command-line overrides).
    Returns the run's metrics."""
    attack = settings.attack_instance
    with tracking.mlflow_run(settings, sweep_id, overrides):
        provisioned = provision(settings, data)
        selection = select_examples(settings, provisioned, attack)
        tracking.log_evaluation_data(selection.x, selection.y, settings.data.name.value)
        client = AttackerClient(provisioned.oracle)
        result = run_attack(settings, provisioned, selection, attack, client)
        audit_ledger(provisioned.oracle, result)
        evaluation = evaluate_result(provisioned, selection, attack, result)
        operator = measure_operator(settings, provisioned, selection, result)
        evaluation.metrics.update(operator.metrics)
        record(evaluation, selection, result, operator.figures)
        tracking.describe_run(settings, evaluation.metrics)
    m = evaluation.metrics
    queries = (
        f", median queries {m['queries_median']:g}, budget exhausted {m['budget_exhausted_fraction']:.2f}"
        if "queries_median" in m
        else ""
    )
    log.info(
        "%s: clean accuracy %.3f, attack success rate %.3f [%.3f, %.3f] over %d attacked, robust accuracy %.3f%s",
        tracking.run_name(settings),
        m["clean_accuracy"],
        m["attack_success_rate"],
        m["attack_success_rate_ci_low"],
        m["attack_success_rate_ci_high"],
        int(m["n_attacked"]),
        m["robust_accuracy"],
        queries,
    )
    return m


def provision(settings: RunSettings, data: Dataset) -> Provisioned:
    """The judge (trained once, cached), the operator's defense around it, and the Oracle in front."""
    torch.set_num_threads(settings.threads_for("provision"))
    device = resolve_device(settings.device)
    judge_model = cached_model(
        "judge", settings.target.model, data.judge, settings.seed, data, settings.cache_dir, device
    ).model
    operator = OperatorKit(data.judge.x, data.judge.y, data.n_classes, settings.seed, device, settings.cache_dir)
    shield = settings.defense_instance.deploy(judge_model, operator)
    oracle = Oracle(
        judge_model,
        settings.access,
        input_shape=data.input_shape,
        n_classes=data.n_classes,
        batch_size=settings.oracle_batch_size,
        device=device,
        shield=shield,
    )
    return Provisioned(data, judge_model, shield, oracle, device)


def select_examples(settings: RunSettings, provisioned: Provisioned, attack: Attack) -> Selection:
    """The same evaluation examples for every threat model; only those the judge gets right are attacked (and,
    when targeted, not those it already judges as the target)."""
    data = provisioned.data
    n = min(settings.n_examples, len(data.eval))
    x, y = data.eval.x[:n], data.eval.y[:n]
    initial = provisioned.oracle.verdicts(x)
    attacked = initial == y
    if attack.targeted:
        attacked &= y != attack.target_class
    if not attacked.any():
        raise RuntimeError(f"none of the {n} evaluation examples can be attacked: the judge gets none right")
    return Selection(x, y, initial, attacked)


def run_attack(
    settings: RunSettings, provisioned: Provisioned, selection: Selection, attack: Attack, client: AttackerClient
) -> AttackResult:
    """The attacker plans its examples, gets what its threat model gives it (a surrogate, its own data), and
    attacks."""
    client.plan(int(selection.attacked.sum()))
    torch.set_num_threads(settings.threads_for("provision"))  # the surrogate trains on every core
    surrogate = None
    if attack.threat_model.surrogate:
        surrogate = build_surrogate(
            settings.surrogate, provisioned.data, client, settings.seed + 1, settings.cache_dir, provisioned.device
        )
    kit = AttackerKit(
        client=client,
        surrogate=surrogate,
        attacker_data=provisioned.data.attacker if attack.needs_attacker_data else None,
        device=provisioned.device,
    )
    attacked = selection.attacked
    torch.set_num_threads(settings.threads_for("attack"))
    return attack.run(selection.x[attacked], selection.y[attacked], kit)


def audit_ledger(oracle: Oracle, result: AttackResult) -> None:
    """The attack's own query counts must be the Oracle's, row for row."""
    charged = int(result.queries.sum()) + oracle.queries(SHARED)
    if charged != oracle.queries_total:
        raise RuntimeError(
            f"accounting mismatch: the attack reports {charged} queries, the Oracle's ledger {oracle.queries_total}"
        )


def evaluate_result(provisioned: Provisioned, selection: Selection, attack: Attack, result: AttackResult) -> Evaluation:
    """Every adversarial input re-checked by the operator's API (the defended verdict), never taken from the
    attack."""
    return evaluate(
        index=np.arange(len(selection.y)),
        x=selection.x,
        y=selection.y,
        initial=selection.initial,
        attacked=selection.attacked,
        final_attacked=provisioned.oracle.verdicts(result.x_adv),
        result=result,
        goal=attack.goal,
        threat_model=attack.threat_model,
        compromise=compromise_from_ledger(provisioned.oracle, result),
    )


def measure_operator(
    settings: RunSettings, provisioned: Provisioned, selection: Selection, result: AttackResult
) -> OperatorReport:
    """The defense's cost to honest users and, with a detector, what it caught and its false positives on a
    benign stream."""
    return operator_metrics.measure(
        provisioned.oracle,
        provisioned.shield,
        provisioned.judge,
        provisioned.data,
        selection.x,
        selection.y,
        selection.initial,
        result=result,
        n_examples=len(selection.y),
        benign=settings.benign,
        device=provisioned.device,
    )


def record(evaluation: Evaluation, selection: Selection, result: AttackResult, figures: dict) -> None:
    attacked = evaluation.per_example["attacked"]
    pe = evaluation.per_example
    grid = adversarial_grid(
        selection.x[attacked],
        result.x_adv,
        pe["label"][attacked],
        pe["initial_prediction"][attacked],
        pe["final_prediction"][attacked],
        pe["success"][attacked],
    )
    tracking.log_evaluation(evaluation, per_example_csv(pe), {"adversarial_grid.png": grid, **figures})
