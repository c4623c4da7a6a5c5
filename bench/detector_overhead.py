"""Detector overhead: time per query through the Oracle with a stateful detector in its shield / through the bare
Oracle, the detector's history already holding 10,000 queries.

Printed, never asserted. Aim: at most 2x at batch 256. The detectors' thresholds are set to +inf here, so that
every row is screened and stored and none is rejected: this measures the cost of watching, not the savings of a
ban (a rejected row is never evaluated). Blacklight remembers the digests of windows it has hashed: the history
and the batches here are noisy copies of the same digits, so most windows hit (about 85%, as in an attack's
queries); on a stream of distinct fresh digits about 10% do, and its ratio is about 0.5 higher.

Each round times the bare Oracle and the shielded one back to back, on a fresh copy of the detector holding the
history, and the ratio printed is the median over rounds of that round's ratio (the range over rounds beside it):
a machine busy with other work slows both sides of a round alike. The same ratio in this process's CPU time
follows: it leaves out the time other processes held the CPU, not their effect on its caches. The kNN detector
over the judge's penultimate layer shares the Oracle's forward pass (`Detector.shared_forward`): its screening
time alone, measured outside the Oracle, includes the judge's trunk, which the shielded Oracle runs only once.

The ratio depends on what the judge costs: `--override target=resnet18` measures against a ResNet-18 judge on the
same digits (trained into the model cache on first use).
    GAVEL_THREADS=1 python bench/detector_overhead.py [--history 10000] [--batches 8] [--batch-size 256] [--rounds 15]
        [--override KEY=VALUE ...] [--smoke]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np
import torch
from fixtures import SMOKE_TRAINING, add_smoke_flag, default_judge, smoke_cache

from gavel.defenses.base import OperatorKit
from gavel.defenses.detection.blacklight import Blacklight
from gavel.defenses.detection.knn_similarity import KnnSimilarity
from gavel.defenses.detection.piha import Piha
from gavel.targets.access import AccessPolicy, Oracle
from gavel.targets.access.shield import Shield

DETECTORS = {
    "knn_similarity encoder=pixels": lambda: KnnSimilarity(encoder="pixels"),
    "knn_similarity encoder=penultimate": lambda: KnnSimilarity(encoder="penultimate"),
    "knn_similarity encoder=similarity": lambda: KnnSimilarity(encoder="similarity"),
    "blacklight": lambda: Blacklight(),
    "piha": lambda: Piha(),
}


def digit_like(images: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n queries that look like honest traffic: real digits with a little noise (so hash postings and
    neighbourhoods are as in use), each distinct."""
    picked = images[rng.integers(0, len(images), n)]
    return np.clip(picked + rng.uniform(-0.05, 0.05, picked.shape), 0.0, 1.0).astype(np.float32)


def timed(oracle: Oracle, batches: list[np.ndarray]) -> tuple[float, float]:
    """(wall-clock seconds, this process's CPU seconds) to query `batches`, one call each."""
    start, cpu = time.perf_counter(), time.process_time()
    for example, x in enumerate(batches):
        oracle.query(x, example=example)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--override", action="append", default=[], help="a config override for the judge, repeatable")
    add_smoke_flag(parser, "a history of 500, 2 queries of 32 rows, 2 rounds")
    args = parser.parse_args()
    if args.smoke:
        args.history, args.batches, args.batch_size, args.rounds = 500, 2, 32, 2

    torch.set_num_threads(int(os.environ.get("GAVEL_THREADS", "1")))
    with smoke_cache(args.smoke):
        settings, data, judge = default_judge([*SMOKE_TRAINING, *args.override] if args.smoke else args.override)
        operator = OperatorKit(data.judge.x, data.judge.y, data.n_classes, seed=settings.seed)
    pool = np.concatenate([data.eval.x, data.attacker.x])
    rng = np.random.default_rng(0)
    history = digit_like(pool, args.history, rng)
    batches = [digit_like(pool, args.batch_size, rng) for _ in range(args.batches)]
    policy = AccessPolicy("hidden", "probabilities", None)

    def oracle(shield: Shield | None = None) -> Oracle:
        api = Oracle(judge, policy, input_shape=data.input_shape, n_classes=data.n_classes, shield=shield)
        api.plan(args.batches)
        return api

    timed(oracle(), batches[:2])  # warm-up
    print(
        f"Detector overhead: {args.batches} queries of {args.batch_size} rows against a history of {args.history:,}, "
        f"{settings.target_instance.model.arch.name} judge on {settings.data.name}, "
        f"{torch.get_num_threads()} torch thread(s), median of {args.rounds} rounds"
    )
    us = 1e6 / (args.batches * args.batch_size)
    for name, build in DETECTORS.items():
        detector = build().deploy(judge, operator).detector
        detector.threshold = math.inf  # screen and store every row, reject none
        watching = detector.fresh()
        watching.remember(history, account=0)
        timed(oracle(Shield(judge, detector=watching)), batches[:2])  # warm-up
        bare_times, shielded_times, ratios, cpu_ratios, screen_times = [], [], [], [], []
        for _ in range(args.rounds):
            watching = detector.fresh()
            watching.remember(history, account=0)
            bare, bare_cpu = timed(oracle(), batches)
            shielded, shielded_cpu = timed(oracle(Shield(judge, detector=watching)), batches)
            bare_times.append(bare)
            shielded_times.append(shielded)
            ratios.append(shielded / bare)
            cpu_ratios.append(shielded_cpu / bare_cpu)
            alone = detector.fresh()  # the detector's own share, whatever the judge costs
            alone.remember(history, account=0)
            start = time.perf_counter()
            for x in batches:
                alone.screen(x, account=0)
            screen_times.append(time.perf_counter() - start)
        print(
            f"  {name:<36} {us * statistics.median(bare_times):6.1f} us/query bare, "
            f"{us * statistics.median(shielded_times):6.1f} shielded "
            f"({us * statistics.median(screen_times):5.1f} screening): ratio {statistics.median(ratios):.2f} "
            f"(rounds {min(ratios):.2f}-{max(ratios):.2f}; in CPU time {statistics.median(cpu_ratios):.2f}; "
            "target <= 2)"
        )


if __name__ == "__main__":
    main()
