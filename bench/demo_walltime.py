"""Wall time of `make demo` (gavel run experiment=hiding_vs_ratelimit): cold (judge and surrogate trained)
and warm (both loaded from the cache), each in a fresh folder with its own MLflow store. Printed, not asserted.
    python bench/demo_walltime.py [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fixtures import SMOKE_TRAINING, add_smoke_flag, timed_gavel

TARGET_SECONDS = 45  # issue 7: make demo under 45 s on 2 cores after the install
# --smoke: the same preset and sweep, 10 examples, one budget (6 jobs instead of 14), judges trained for 5 epochs
SMOKE = ("n_examples=10", "access.budget=10", *SMOKE_TRAINING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_smoke_flag(parser, "10 examples, budget 10 only: 6 jobs")
    args = parser.parse_args()
    overrides = ["experiment=hiding_vs_ratelimit", *(SMOKE if args.smoke else ())]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        for label in ("cold", "warm"):
            workdir = root / label
            seconds = timed_gavel(workdir, cache, *overrides)
            share = seconds / TARGET_SECONDS
            print(f"demo wall time ({label} cache): {seconds:.1f} s = {share:.2f} of the {TARGET_SECONDS} s target")


if __name__ == "__main__":
    main()
