"""One job, in named stages:

    prepare (data, a foreign judge: loaded and checked, before any run)
    -> provision (a trained judge, the defense, the Oracle) -> select examples -> attack -> audit the ledger
    -> evaluate -> measure the operator's side (the defense's cost and catch) -> record

Config errors are found before `run` (`RunSettings.from_config`); data or a judge that cannot be used stops the job
in `prepare`, before an MLflow run starts (one line, exit status 2). Everything after happens inside the run, which
ends FAILED if any stage raises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from gavel.attacks.base import Attack, AttackerKit, AttackResult
from gavel.defenses.base import OperatorKit
from gavel.experiments import operator_metrics, sanity, tracking
from gavel.experiments.figures import adversarial_grid
from gavel.experiments.metrics import Evaluation, compromise_from_ledger, evaluate, per_example_csv
from gavel.experiments.models import build_surrogate
from gavel.experiments.operator_metrics import OperatorReport
from gavel.experiments.settings import Device, RunSettings
from gavel.experiments.training_stage import held_out, train_judge
from gavel.experiments.validation import ConfigError
from gavel.targets.access import POISONING, SHARED, AccessDenied, AttackerClient, Oracle, Output, Shield
from gavel.targets.datasets import Dataset
from gavel.targets.judges.base import FULL, Capabilities, ProvidedJudge
from gavel.targets.training import predict_labels

log = logging.getLogger(__name__)


def resolve_device(device: Device) -> str:
    if device == Device.AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.value


@dataclass(frozen=True)
class Prepared:
    """What a job needs before its run starts: the data, and a foreign judge loaded and checked against it (None:
    a judge gavel trains inside the run)."""

    data: Dataset
    judge: ProvidedJudge | None
    planned: Capabilities = FULL
    """What a judge the run makes will offer (its source says, before training it)."""

    @property
    def capabilities(self) -> Capabilities:
        return self.planned if self.judge is None else self.judge.capabilities


@dataclass(frozen=True)
class Provisioned:
    """The operator's side, set up: the evaluation data, the judge, the defense deployed around it (its shield),
    and the Oracle in front. Verdicts are the Oracle's: what the operator's API returns."""

    data: Dataset
    judge: nn.Module
    shield: Shield
    oracle: Oracle
    device: str
    training: dict[str, float] = field(default_factory=dict)
    """What the training stage measured: the poison planted, what the sanitiser removed (`training_stage`)."""


@dataclass(frozen=True)
class Selection:
    """The first `n_examples` evaluation examples, the judge's verdict on each, and which are attacked."""

    x: np.ndarray
    y: np.ndarray
    initial: np.ndarray
    attacked: np.ndarray


class Unavailable(ConfigError):
    """The job needs what the judge or the data does not offer (gradients, scores, the attacker's own data, the
    operator's): a sweep leaves the job out and says so; a single job stops, one line, exit status 2."""


def prepare(settings: RunSettings) -> Prepared:
    """Before any run is recorded: the data, for the judge's input; a foreign judge loaded and checked against it;
    and what the data and the judge must give the attack and the defense. Anything missing or unusable is a
    `SourceError` or a `ConfigError` naming the key, and nothing is recorded."""
    prepared = load_inputs(settings)
    check_prepared(settings, prepared)
    return prepared


def load_inputs(settings: RunSettings) -> Prepared:
    """The data, for the judge's input, and a foreign judge loaded and checked against it."""
    torch.set_num_threads(settings.threads_for("provision"))
    source = settings.target_instance
    data = settings.data_instance.load(source.input_shape)
    judge = source.prepare(data, resolve_device(settings.device))
    return Prepared(data, judge, source.capabilities)


def check_prepared(settings: RunSettings, prepared: Prepared) -> None:
    """What the attack, the API and the defense need of the data and the judge, now that both are known."""
    data, attack = prepared.data, settings.attack_instance
    judge = f"target={settings.target.name}" + ("" if prepared.judge is None else f" ({prepared.judge.description})")
    try:
        attack.check_access(settings.access, prepared.capabilities, judge)
    except AccessDenied as denied:
        raise Unavailable(f"attack={settings.attack.name}: {denied}") from None
    if settings.access.output != Output.LABEL and not prepared.capabilities.scores:
        raise Unavailable(
            f"access.output={settings.access.output.value}: {judge} answers with a label only; allowed: label"
        )
    poison = settings.poison_instance
    if poison.active:
        poison.check(data.input_shape, data.n_classes)
        why = poison.shortfall(data.judge, data.contributors, settings.data_instance.contributors)
        if why is not None:
            raise Unavailable(f"poison={settings.poison.name}: {why}")
    why = settings.sanitiser_instance.shortfall(held_out(data, settings.n_examples))
    if why is not None:
        raise Unavailable(
            f"sanitise={settings.sanitise.name}: {why} (n_examples={settings.n_examples}; the evaluation pool holds "
            f"{len(data.eval)})"
        )
    if attack.targeted and attack.target_class >= data.n_classes:
        raise ConfigError(
            f"attack.target_class={attack.target_class}: allowed: 0 to {data.n_classes - 1} "
            f"(data={settings.data.name} has {data.n_classes} classes)"
        )
    needs_own_data = attack.needs_attacker_data or (
        attack.threat_model.surrogate and settings.surrogate_instance.knowledge != "leaked"
    )
    if needs_own_data and len(data.attacker) == 0:
        raise Unavailable(
            f"data.attacker=None: attack={settings.attack.name} needs the attacker's own data; "
            "allowed: a path with the attacker's examples, or an attack that needs none (score- or decision-based)"
        )
    if prepared.judge is not None and prepared.judge.service is not None:
        check_remote(settings, prepared.judge)
    if prepared.judge is not None:
        try:
            settings.defense_instance.check_judge(prepared.judge.model)
        except ValueError as error:
            raise Unavailable(f"defense={settings.defense.name}: {error}") from None
    if settings.defense_instance.needs_operator_data and data.operator is None:
        raise Unavailable(
            f"data.operator=None: defense={settings.defense.name} calibrates on the operator's own data; "
            "allowed: a path with the operator's held-out examples (or data.judge_train)"
        )


def check_remote(settings: RunSettings, judge: ProvidedJudge) -> None:
    """A judge served elsewhere: its operator deploys the defense and trained it; the attacker holds one key per
    account and asks for what the service shows."""
    source = settings.target_instance
    if settings.defense.name != "none":
        raise ConfigError(
            f"defense={settings.defense.name}: target=remote is defended where it is served "
            f"(gavel serve defense={settings.defense.name}); allowed here: defense=none"
        )
    for key, node in (("poison", settings.poison), ("sanitise", settings.sanitise)):
        if node.name != "none":
            raise ConfigError(f"{key}={node.name}: target=remote was trained elsewhere; allowed: {key}=none")
    if settings.access.accounts > source.accounts:
        raise ConfigError(
            f"access.accounts={settings.access.accounts}: target.api_key_env names {source.accounts} key(s); "
            f"allowed: at most {source.accounts} (one key per account)"
        )
    why = source.check_output(settings.access.output)
    if why is not None:
        raise Unavailable(f"access.output={settings.access.output.value}: {why}")


def run(settings: RunSettings, prepared: Prepared, sweep_id: str | None = None, overrides: list[str] = ()) -> dict:
    """One experiment, one MLflow run (tagged with its sweep and the job's command-line overrides).
    Returns the run's metrics."""
    attack = settings.attack_instance
    with tracking.mlflow_run(settings, sweep_id, overrides):
        provisioned = provision(settings, prepared)
        data = provisioned.data
        selection = select_examples(settings, provisioned, attack)
        tracking.log_evaluation_data(selection.x, selection.y, settings.data.name)
        client = AttackerClient(provisioned.oracle)
        result = run_attack(settings, provisioned, selection, attack, client)
        audit_ledger(provisioned.oracle, result)
        evaluation = evaluate_result(provisioned, selection, attack, result)
        service = getattr(prepared.judge, "service", None)
        if service is None:  # a remote judge's margins and defense are its operator's: only its answers reach here
            tracking.log_checks(check_run(settings, provisioned, selection, attack, result, evaluation, client))
            operator = measure_operator(settings, provisioned, selection, result)
        else:
            remote = {"evaluator_queries": float(service.evaluator.rows_asked)}
            if provisioned.oracle.detections or provisioned.oracle.banned:  # the service's detector, seen from here
                remote.update(operator_metrics.detection_metrics(provisioned.oracle, result))
            operator = OperatorReport(remote, {})
        evaluation.metrics.update(operator.metrics)
        evaluation.metrics.update(poisoning_metrics(settings, provisioned, selection, evaluation.metrics))
        record(evaluation, selection, result, operator.figures, data.class_names)
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


def provision(settings: RunSettings, prepared: Prepared) -> Provisioned:
    """The judge (a foreign one as prepared; a trained one trained once, cached), the operator's defense around
    it, and the Oracle in front; the run records where the judge came from."""
    torch.set_num_threads(settings.threads_for("provision"))
    device = resolve_device(settings.device)
    data = prepared.data
    training_metrics: dict[str, float] = {}
    if prepared.judge is None:  # a judge gavel trains: its training stage (contributions, poison, sanitiser)
        trained = train_judge(settings, data, device)
        judge, training_metrics = trained.judge, trained.metrics
    else:
        judge = prepared.judge
    tracking.log_judge(judge, data)
    judge_model = judge.model
    own = data.operator
    operator = OperatorKit(
        None if own is None else own.x, None if own is None else own.y, data.n_classes, settings.seed, device,
        settings.cache_dir,
    )  # fmt: skip
    shield = settings.defense_instance.deploy(judge_model, operator)
    remote = {}
    if judge.service is not None:  # the attacker's Oracle keeps the budgets; the service answers, on the wall clock
        service = judge.service
        remote = dict(
            responder=service.responder(settings.access.accounts), evaluator=service.evaluator, clock=service.clock
        )
    oracle = Oracle(
        judge_model,
        settings.access,
        input_shape=data.input_shape,
        n_classes=data.n_classes,
        batch_size=settings.oracle_batch_size,
        device=device,
        shield=shield,
        **remote,
    )
    return Provisioned(data, judge_model, shield, oracle, device, training_metrics)


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
            settings.surrogate_instance,
            provisioned.data,
            client,
            settings.seed + 1,
            settings.cache_dir,
            provisioned.device,
        )
    kit = AttackerKit(
        client=client,
        surrogate=surrogate,
        attacker_data=provisioned.data.attacker if attack.needs_attacker_data else None,
        device=provisioned.device,
        poison=settings.poison_instance if settings.poison_instance.active else None,
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


def check_run(
    settings: RunSettings,
    provisioned: Provisioned,
    selection: Selection,
    attack: Attack,
    result: AttackResult,
    evaluation: Evaluation,
    client: AttackerClient,
) -> list[sanity.Check]:
    """The sanity checks that apply to this run (`experiments/sanity.py`), on the operator's side: nothing they do
    is charged to the attacker."""
    attacked = selection.attacked
    kit = AttackerKit(
        client=client,
        surrogate=None,
        attacker_data=provisioned.data.attacker if attack.needs_attacker_data else None,
        device=provisioned.device,
    )
    return sanity.run_checks(
        attack,
        dict(settings.attack.params),
        provisioned.shield.model,
        selection.x[attacked],
        selection.y[attacked],
        result,
        evaluation.per_example["success"][attacked] > 0,
        kit,
        provisioned.device,
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


def poisoning_metrics(
    settings: RunSettings, provisioned: Provisioned, selection: Selection, metrics: dict[str, float]
) -> dict[str, float]:
    """What the training stage measured; with a poison, the clean judge's accuracy on the same examples (the judge
    the pool would have trained without it); for the backdoor attack, its success as `backdoor_success_rate`."""
    out = dict(provisioned.training)
    if settings.poison_instance.active:
        clean = settings.target_instance.provide(
            provisioned.data, settings.seed, settings.cache_dir, provisioned.device
        ).model
        verdicts = predict_labels(clean, selection.x, device=provisioned.device)
        out["clean_accuracy_clean_judge"] = float((verdicts == selection.y).mean())
    if settings.attack_instance.threat_model == POISONING:
        for suffix in ("", "_ci_low", "_ci_high"):
            out[f"backdoor_success_rate{suffix}"] = metrics[f"attack_success_rate{suffix}"]
    return out


def record(
    evaluation: Evaluation, selection: Selection, result: AttackResult, figures: dict, class_names: tuple[str, ...]
) -> None:
    attacked = evaluation.per_example["attacked"]
    pe = evaluation.per_example
    grid = adversarial_grid(
        selection.x[attacked],
        result.x_adv,
        pe["label"][attacked],
        pe["initial_prediction"][attacked],
        pe["final_prediction"][attacked],
        pe["success"][attacked],
        class_names,
    )
    tracking.log_evaluation(evaluation, per_example_csv(pe), {"adversarial_grid.png": grid, **figures})
