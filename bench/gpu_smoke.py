"""GPU smoke check: the whole job on CUDA (judge training, the Oracle, gavel's batched Square and HopSkipJump),
through the real runner. Prints each run's success and wall time; exits 1 if a run fails, 0 with a message
where no CUDA device exists. Run it on a machine with a GPU:

    python bench/gpu_smoke.py [--n-examples 200] [--budget 1000] [--device cuda|cpu] [--smoke]

`--smoke`: the same runs at a tiny size, on CUDA where there is one and on the CPU otherwise (so that the script
itself is exercised on every machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from fixtures import SMOKE_TRAINING, add_smoke_flag

from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings

RUNS = (
    ["attack=square", "access=hidden_probabilities"],
    ["attack=hopskipjump", "access=hidden_label"],
    ["attack=pgd", "access=open"],
    ["attack=transfer_mifgsm", "access=hidden_label"],
    ["attack=square", "access=hidden_probabilities", "defense=knn_similarity"],
    ["attack=hopskipjump", "access=hidden_label", "defense=input_noise"],
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-examples", type=int, default=200)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--device", help="cuda (the check, the default), or cpu (--smoke's default without CUDA)")
    add_smoke_flag(parser, "10 examples, budget 20, on CUDA where there is one, else on the CPU")
    args = parser.parse_args()
    if args.smoke:
        args.n_examples, args.budget = 10, 20
    if args.device is None:
        args.device = "cpu" if args.smoke and not torch.cuda.is_available() else "cuda"
    training = list(SMOKE_TRAINING) if args.smoke else []
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: nothing to check (run this on a GPU machine)")
        return 0
    if args.device == "cuda":
        print(f"CUDA: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    else:
        print(f"device={args.device}: the script's own path, not a GPU check")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        os.environ["GAVEL_CACHE_DIR"] = str(Path(tmp) / "cache")
        from gavel.experiments import runner

        failed = False
        for overrides in RUNS:
            common = [
                f"device={args.device}",
                f"n_examples={args.n_examples}",
                f"access.budget={args.budget}",
                *training,
            ]
            if "access=open" in overrides:
                common.remove(f"access.budget={args.budget}")
            settings = RunSettings.from_config(compose_config([*overrides, *common]))
            start = time.perf_counter()
            try:
                metrics = runner.run(settings, runner.prepare(settings))
            except Exception as error:  # report every run, then fail
                print(f"  {' '.join(overrides):<45} FAILED: {type(error).__name__}: {error}")
                failed = True
                continue
            print(
                f"  {' '.join(overrides):<45} {time.perf_counter() - start:6.1f} s  "
                f"success {metrics['attack_success_rate']:.3f}  queries {metrics.get('queries_total', 'n/a')}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
