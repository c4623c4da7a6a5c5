"""config -> judge (cached) -> surrogate (cached) -> clean accuracy -> attack the examples the judge gets right
-> re-check every adversarial input on the judge -> metrics -> MLflow."""
from __future__ import annotations

import logging

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig

from attacks.base import Attack
from attacks.client import AttackerClient
from experiments import tracking
from experiments.figures import adversarial_grid
from experiments.metrics import Evaluation, compromise_from_ledger, evaluate, per_example_csv
from experiments.models import build_surrogate, cached_model
from experiments.validation import ConfigError, constructor_kwargs, validate
from targets.datasets import load_dataset
from targets.oracle import SHARED, AccessPolicy, Oracle
from targets.training import predict_labels

log = logging.getLogger(__name__)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def build(node: DictConfig, **extra):
    """The object a config-group node describes (`_target_` plus its keyword arguments)."""
    return get_class(node._target_)(**constructor_kwargs(node), **extra)


def run(cfg: DictConfig, sweep_id: str | None = None, overrides: list[str] = ()) -> dict[str, float]:
    """One experiment, one MLflow run (tagged with its sweep and the job's command-line overrides).
    Returns the run's metrics."""
    validate(cfg)
    attack: Attack = build(cfg.attack, seed=cfg.seed)
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.data)  # a missing data folder stops here, before any run is recorded
    if attack.targeted and not attack.target_class < data.n_classes:
        raise ConfigError(f"attack.target_class={attack.target_class}: allowed: 0 to {data.n_classes - 1}")
    with tracking.mlflow_run(cfg, attack, sweep_id, overrides):
        judge_model = cached_model("judge", cfg.target, data.judge, cfg.seed, data, cfg, device).model
        judge = build(cfg.defense).apply(judge_model)
        oracle = Oracle(
            judge,
            AccessPolicy.from_config(cfg.access),
            input_shape=data.input_shape,
            n_classes=data.n_classes,
            batch_size=cfg.oracle_batch_size,
            device=device,
        )
        client = AttackerClient(oracle)
        n = min(cfg.n_examples, len(data.eval))
        x, y = data.eval.x[:n], data.eval.y[:n]
        initial = predict_labels(judge, x, device=device)
        attacked = initial == y
        if attack.targeted:  # an example already judged as the target verdict has nothing to gain
            attacked &= y != attack.target_class
        if not attacked.any():
            raise RuntimeError(f"none of the {n} evaluation examples can be attacked: the judge gets none right")
        client.plan(int(attacked.sum()))
        surrogate = build_surrogate(cfg, data, client, device) if attack.needs_surrogate else None

        attacker_data = data.attacker if attack.needs_attacker_data else None
        result = attack.run(client, x[attacked], y[attacked], surrogate=surrogate, attacker_data=attacker_data)
        charged = int(result.queries.sum()) + oracle.queries(SHARED)
        if charged != oracle.queries_total:
            raise RuntimeError(
                f"accounting mismatch: the attack reports {charged} queries, the Oracle's ledger {oracle.queries_total}"
            )
        evaluation = evaluate(
            index=np.arange(n),
            x=x,
            y=y,
            initial=initial,
            attacked=attacked,
            final_attacked=predict_labels(judge, result.x_adv, device=device),
            result=result,
            goal=attack.goal,
            threat_model=attack.threat_model,
            compromise=compromise_from_ledger(oracle, result),
        )
        tracking.log_evaluation(evaluation, per_example_csv(evaluation.per_example), _grid(evaluation, x, result))
    _report(cfg, attack, evaluation)
    return evaluation.metrics


def _grid(evaluation: Evaluation, x: np.ndarray, result):
    attacked = evaluation.per_example["attacked"]
    pe = evaluation.per_example
    return adversarial_grid(
        x[attacked], result.x_adv, pe["label"][attacked], pe["initial_prediction"][attacked],
        pe["final_prediction"][attacked], pe["success"][attacked],
    )


def _report(cfg: DictConfig, attack: Attack, evaluation: Evaluation) -> None:
    m = evaluation.metrics
    log.info(
        "%s: clean accuracy %.3f, attack success rate %.3f over %d attacked, robust accuracy %.3f, "
        "median queries %g, budget exhausted %.2f",
        tracking.run_name(attack.threat_model, cfg), m["clean_accuracy"], m["attack_success_rate"],
        int(m["n_attacked"]), m["robust_accuracy"], m["queries_median"], m["budget_exhausted_fraction"],
    )
