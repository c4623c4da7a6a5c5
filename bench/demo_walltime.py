"""Wall time of `make demo` (gavel run experiment=hiding_vs_ratelimit): cold (judge and surrogate trained)
and warm (both loaded from the cache), each in a fresh folder with its own MLflow store. Printed, not asserted.
    python bench/demo_walltime.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fixtures import timed_gavel

TARGET_SECONDS = 45  # issue 7: make demo under 45 s on 2 cores after the install


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        for label in ("cold", "warm"):
            workdir = root / label
            seconds = timed_gavel(workdir, cache, "experiment=hiding_vs_ratelimit")
            share = seconds / TARGET_SECONDS
            print(f"demo wall time ({label} cache): {seconds:.1f} s = {share:.2f} of the {TARGET_SECONDS} s target")


if __name__ == "__main__":
    main()
