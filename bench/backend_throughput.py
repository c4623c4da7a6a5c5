"""White-box PGD throughput, ART against foolbox (attack.backend), on the same digits CNN judge and examples:
examples per second for each and the ratio foolbox time / ART time (median of rounds). Printed, never asserted.
    python bench/backend_throughput.py [--n-examples 300] [--rounds 5] [--max-iter 40] [--threads N] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from fixtures import SMOKE_TRAINING, add_smoke_flag, default_judge, smoke_cache

from gavel.attacks.base import AttackerKit
from gavel.attacks.white_box.pgd import PGD
from gavel.attacks.white_box.pgd_l2 import PGDL2
from gavel.targets.access import AccessPolicy, AttackerClient, Oracle
from gavel.targets.training import predict_labels


def seconds(attack, client, x, y) -> float:
    start = time.perf_counter()
    attack.run(x, y, AttackerKit(client))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-examples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-iter", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    add_smoke_flag(parser, "16 examples, 3 steps, 1 round")
    args = parser.parse_args()
    if args.smoke:
        args.n_examples, args.rounds, args.max_iter = 16, 1, 3
    if args.threads:
        torch.set_num_threads(args.threads)

    with smoke_cache(args.smoke):
        _, data, judge = default_judge(SMOKE_TRAINING if args.smoke else ())
    right = predict_labels(judge, data.eval.x) == data.eval.y
    x, y = data.eval.x[right][: args.n_examples], data.eval.y[right][: args.n_examples]
    client = AttackerClient(
        Oracle(judge, AccessPolicy("open", "logits", None), input_shape=data.input_shape, n_classes=data.n_classes)
    )

    print(
        f"white-box PGD, {len(x)} digits examples, {args.max_iter} steps, {torch.get_num_threads()} torch threads "
        f"(median of {args.rounds} rounds)"
    )
    for label, make in (
        ("L-inf eps 0.1", lambda b: PGD(eps=0.1, max_iter=args.max_iter, backend=b)),
        ("L2 eps 1.0", lambda b: PGDL2(eps=1.0, max_iter=args.max_iter, backend=b)),
    ):
        times = {}
        for backend in ("art", "foolbox"):
            attack = make(backend)
            seconds(attack, client, x[:8], y[:8])  # warm-up
            times[backend] = statistics.median(seconds(attack, client, x, y) for _ in range(args.rounds))
        rates = "  ".join(f"{b} {t:.2f} s ({len(x) / t:.0f} examples/s)" for b, t in times.items())
        print(f"  {label:<14} {rates}  foolbox/ART = {times['foolbox'] / times['art']:.2f}")


if __name__ == "__main__":
    main()
