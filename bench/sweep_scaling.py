"""Scaling out on one machine: the demo sweep (experiment=hiding_vs_ratelimit, 14 jobs) with one job at a time
(Hydra's basic launcher, each job on every core) against two at a time (hydra/launcher=joblib n_jobs=2, each job
on half the cores), and the peak memory of one job. Each way runs once to fill its model cache (a judge trained
on 2 threads is another model than one trained on 1: see targets/training.ModelSpec.trained_on), then once timed,
in its own folder and MLflow store. Printed, not asserted.

    python bench/sweep_scaling.py [--smoke]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path

from fixtures import SMOKE_TRAINING, add_smoke_flag, timed_gavel

DEMO = ["--multirun", "experiment=hiding_vs_ratelimit"]
WAYS = {
    "1 job at a time (basic launcher)": [],
    "2 jobs at a time (joblib, n_jobs=2)": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
}
# --smoke: the same job and sweeps, 10 examples, one budget (4 jobs a sweep instead of 8), judges trained 5 epochs,
# each sweep timed on a cold cache (no filling run first)
SMOKE = ["n_examples=10", "access.budget=10", *SMOKE_TRAINING]


def gavel(workdir: Path, cache: Path, *args: str) -> float:
    """`timed_gavel` without GAVEL_THREADS: the sweeper shares the cores out."""
    return timed_gavel(workdir, cache, *args, env={k: v for k, v in os.environ.items() if k != "GAVEL_THREADS"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_smoke_flag(parser, "10 examples, budget 10: one job, then 4 jobs a sweep, each sweep run once")
    args = parser.parse_args()
    smoke = SMOKE if args.smoke else []
    one_job = ["attack=square", "access=hidden_probabilities", *(smoke or ["access.budget=1000", "n_examples=200"])]
    print(f"cores: {len(os.sched_getaffinity(0))}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        # First, while no other child has run: ru_maxrss of children is the largest any of them reached.
        gavel(root / "one_job", cache, *one_job)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"peak memory of one job ({' '.join(one_job)}, judge trained): {peak / 1024:.0f} MiB")
        seconds = {}
        for number, (way, launcher) in enumerate(WAYS.items()):
            if not args.smoke:
                gavel(root / f"fill{number}", cache, *DEMO, *launcher)
            seconds[way] = gavel(root / f"timed{number}", cache, *DEMO, *launcher, *smoke)
            print(f"demo sweep, {way}: {seconds[way]:.1f} s ({'cold' if args.smoke else 'warm'} cache)")
        one, two = seconds.values()
        print(f"2 parallel jobs / 1 job at a time, wall time: {two / one:.2f} (below 1: parallel is faster)")


if __name__ == "__main__":
    main()
