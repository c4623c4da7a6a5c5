"""Oracle overhead: time for N queries through the Oracle / the same batches through the bare model.

Printed, never asserted. Aim: at most 1.10 at batch 256. Each query is charged to an example of its own (the
Oracle answers only the example keys planned before the first query).
    python bench/oracle_overhead.py [--batches 200] [--batch-size 256] [--rounds 7] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from fixtures import SMOKE_TRAINING, add_smoke_flag, default_judge, smoke_cache

from gavel.targets.access import AccessPolicy, Oracle


def bare(model, batches):
    with torch.no_grad():
        for x in batches:
            model(torch.from_numpy(x)).numpy()


def through_oracle(oracle, batches):
    for i, x in enumerate(batches):
        oracle.query(x, example=i)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    add_smoke_flag(parser, "10 queries of batch 32, 2 rounds")
    args = parser.parse_args()
    if args.smoke:
        args.batches, args.batch_size, args.rounds = 10, 32, 2
    with smoke_cache(args.smoke):
        _, data, judge = default_judge(SMOKE_TRAINING if args.smoke else ())
    rng = np.random.default_rng(0)
    batches = [rng.random((args.batch_size, *data.input_shape), dtype=np.float32) for _ in range(args.batches)]
    bare(judge, batches[:5])  # warm-up

    print(
        f"Oracle overhead, {args.batches} queries of batch {args.batch_size}, digits CNN judge, "
        f"{torch.get_num_threads()} torch threads (median of {args.rounds} rounds)"
    )
    for output in ("logits", "probabilities", "label"):
        ratios = []
        for _ in range(args.rounds):
            oracle = Oracle(
                judge,
                AccessPolicy("hidden", output, None),
                input_shape=data.input_shape,
                n_classes=data.n_classes,
                batch_size=args.batch_size,
            )
            oracle.plan(len(batches))
            t0 = time.perf_counter()
            bare(judge, batches)
            t1 = time.perf_counter()
            through_oracle(oracle, batches)
            t2 = time.perf_counter()
            ratios.append((t2 - t1) / (t1 - t0))
        print(f"  output={output:<13} oracle/bare = {statistics.median(ratios):.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
