"""Wall time of each attack on the demo set (digits, the CNN judge, eps 0.1 L-inf / 1.0 L2), through the real
runner, under the access its threat model needs. The judge and surrogate are trained (or loaded) once before
the clock starts. Printed, never asserted.
    python bench/attack_walltime.py [--quick | --smoke] [--n-examples 200] [--budget 1000] [--threads N]
        [--override attack.backend=foolbox ...] [attack ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import torch
from fixtures import SMOKE_TRAINING, add_smoke_flag, smoke_cache
from hydra.utils import get_class
from omegaconf import OmegaConf

from gavel.experiments.config import compose_config, group_options
from gavel.experiments.settings import RunSettings
from gavel.targets.access import DECISION_BASED, HYBRID, POISONING, SCORE_BASED, TRANSFER, WHITE_BOX, ThreatModel

# The access each threat model is run under; query attacks get the demo's largest budget.
ACCESS = {
    WHITE_BOX: ["access=open"],
    TRANSFER: ["access=hidden_label"],
    SCORE_BASED: ["access=hidden_probabilities"],
    DECISION_BASED: ["access=hidden_label"],
    HYBRID: ["access=hidden_probabilities"],
    POISONING: ["access=hidden_label", "poison=badnets", "poison.fraction=0.05"],  # the backdoor needs a poison
}


def settings_for(attack: str, n_examples: int, budget: int, extra: list[str]) -> tuple[ThreatModel, RunSettings]:
    """The attack's settings under its threat model's access; `extra` overrides apply where the attack has the key."""
    defaults = compose_config([f"attack={attack}"])
    threat_model = get_class(defaults.attack._target_).threat_model
    overrides = [f"attack={attack}", *ACCESS[threat_model], f"n_examples={n_examples}"]
    if threat_model.charged_queries:
        overrides.append(f"access.budget={budget}")
    overrides += [o for o in extra if OmegaConf.select(defaults, o.split("=", 1)[0]) is not None]
    return threat_model, RunSettings.from_config(compose_config(overrides))


def run(settings: RunSettings) -> dict:
    from gavel.experiments import runner  # after MLflow's store is chosen

    return runner.run(settings, runner.prepare(settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("attacks", nargs="*", help="attack options (default: every conf/attack yaml)")
    parser.add_argument("--n-examples", type=int, default=200, help="evaluation examples (the demo's 200)")
    parser.add_argument("--budget", type=int, default=1000, help="queries per example for query attacks")
    parser.add_argument("--quick", action="store_true", help="40 examples, budget 100: a minute or two")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--cold", action="store_true", help="a fresh model cache (default: GAVEL_CACHE_DIR's)")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override, applied to the attacks that have the key (repeatable)",
    )
    add_smoke_flag(parser, "5 examples, budget 20, attack.max_iter=3, every attack")
    args = parser.parse_args()
    if args.quick:
        args.n_examples, args.budget = 40, 100
    if args.smoke:
        args.n_examples, args.budget = 5, 20
        args.override = [*SMOKE_TRAINING, "attack.max_iter=3", *args.override]
    if args.threads:
        torch.set_num_threads(args.threads)
    attacks = args.attacks or group_options("attack")
    logging.disable(logging.INFO)

    with tempfile.TemporaryDirectory() as tmp, smoke_cache(args.smoke):
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        if args.cold:
            os.environ["GAVEL_CACHE_DIR"] = str(Path(tmp) / "cache")
        # the judge and the surrogate are trained (or loaded) before the clock starts (on examples of which a smoke
        # run's less trained judge gets some right)
        _, first = settings_for("transfer_pgd", args.n_examples if args.smoke else 1, args.budget, args.override)
        run(first)
        print(
            f"attack wall time on digits, {args.n_examples} examples, budget {args.budget} for query attacks, "
            f"{torch.get_num_threads()} torch threads {' '.join(args.override)}"
        )
        for attack in attacks:
            threat_model, settings = settings_for(attack, args.n_examples, args.budget, args.override)
            start = time.perf_counter()
            try:
                metrics = run(settings)
            except Exception as error:  # one attack that fails should not hide the others' times
                print(f"  {attack:<20} {threat_model.name:<15} failed: {type(error).__name__}: {error}")
                continue
            seconds = time.perf_counter() - start
            # a white-box attack sends no query: its query figures are left out, not 0
            queries = f"queries/example {metrics['queries_mean']:.0f}" if "queries_mean" in metrics else "no queries"
            print(
                f"  {attack:<20} {threat_model.name:<15} {seconds:7.1f} s  "
                f"success {metrics['attack_success_rate']:.3f} of {int(metrics['n_attacked'])}  {queries}"
            )


if __name__ == "__main__":
    main()
