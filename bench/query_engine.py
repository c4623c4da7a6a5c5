"""Speed of the query attacks, as a ratio: an attack's wall time divided by the bare judge's time for the same
number of rows at batch 256 (what the queries would cost with no attacker logic, Oracle or client at all). The
bare judge is the judge as the Oracle serves it (channels-last memory format, set in place when the first Oracle
is built), so the ratio measures the attack's and the accounting's overhead, not the memory layout.
gavel's batched Square and HopSkipJump, and ART's own batched Square over the bare judge (no Oracle, no budget:
the reference for what a library's batched loop costs). Printed, never asserted. Goal: <= 3 for gavel's.

    python bench/query_engine.py [--n-examples 196] [--budget 1000] [--threads 1] [--smoke]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from art.attacks.evasion import SquareAttack
from fixtures import SMOKE_TRAINING, add_smoke_flag, default_judge, smoke_cache

from gavel.attacks.adapters.art import pytorch_estimator
from gavel.attacks.base import AttackerKit
from gavel.attacks.query.hopskipjump import HopSkipJump
from gavel.attacks.query.square import Square
from gavel.targets.access import AccessPolicy, AttackerClient, Oracle
from gavel.targets.training import predict_labels


def bare_seconds(judge, x: np.ndarray, rows: int, batch: int = 256) -> float:
    """The judge alone evaluating `rows` rows at batch 256."""
    pool = torch.from_numpy(np.resize(x, (batch, *x.shape[1:])))
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, rows, batch):
            judge(pool[: min(batch, rows - first)])
    return time.perf_counter() - start


def attack_seconds(judge, data, attack, output: str, x, y, budget: int) -> tuple[float, int, float]:
    policy = AccessPolicy("hidden", output, budget)
    oracle = Oracle(judge, policy, input_shape=data.input_shape, n_classes=data.n_classes)
    client = AttackerClient(oracle)
    client.plan(len(x))
    start = time.perf_counter()
    result = attack.run(x, y, AttackerKit(client=client))
    seconds = time.perf_counter() - start
    fooled = float((predict_labels(judge, result.x_adv) != y).mean())
    return seconds, oracle.queries_total, fooled


def print_gavel_ratios(judge, data, x: np.ndarray, y: np.ndarray, budget: int) -> None:
    """gavel's batched Square (a score API) and HopSkipJump (a labels-only API) on `judge`, each as its wall time,
    the rows it asked, the bare judge's time for as many rows, and their ratio."""
    for name, attack, output in (
        ("gavel Square L-inf", Square(eps=0.1, backend="gavel"), "probabilities"),
        ("gavel HopSkipJump L-inf", HopSkipJump(eps=0.1, backend="gavel"), "label"),
    ):
        seconds, rows, fooled = attack_seconds(judge, data, attack, output, x, y, budget)
        bare = bare_seconds(judge, x, rows)
        print(
            f"  {name:<26} {seconds:6.1f} s  {rows:8d} rows  bare {bare:6.1f} s  ratio {seconds / bare:5.2f}  "
            f"(success {fooled:.3f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-examples", type=int, default=196)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    add_smoke_flag(parser, "8 examples, budget 50")
    args = parser.parse_args()
    if args.smoke:
        args.n_examples, args.budget = 8, 50
    torch.set_num_threads(args.threads)
    with smoke_cache(args.smoke):
        _, data, judge = default_judge(SMOKE_TRAINING if args.smoke else ())
    right = predict_labels(judge, data.eval.x) == data.eval.y
    x, y = data.eval.x[right][: args.n_examples], data.eval.y[right][: args.n_examples]
    print(
        f"query attacks on {len(x)} digits examples, budget {args.budget}, {torch.get_num_threads()} torch "
        f"thread(s): attack time / bare judge time for the same rows at batch 256"
    )
    print_gavel_ratios(judge, data, x, y, args.budget)
    estimator = pytorch_estimator(judge, data.input_shape, data.n_classes, "cpu")
    art = SquareAttack(
        estimator, norm=np.inf, eps=0.1, max_iter=args.budget, nb_restarts=1, batch_size=256, verbose=False
    )
    counted = {"rows": 0}
    hook = judge.register_forward_hook(lambda m, i, o: counted.__setitem__("rows", counted["rows"] + len(i[0])))
    start = time.perf_counter()
    x_adv = art.generate(x, y=y)
    seconds = time.perf_counter() - start
    hook.remove()
    ratio = seconds / bare_seconds(judge, x, counted["rows"])
    fooled = float((predict_labels(judge, x_adv) != y).mean())
    print(
        f"  {'ART Square (batched, bare)':<26} {seconds:6.1f} s  {counted['rows']:8d} rows  ratio {ratio:5.1f}  "
        f"(success {fooled:.3f}; {counted['rows'] / len(x):.0f} rows per example, no budget)"
    )


if __name__ == "__main__":
    main()
