"""Wall time of `make demo` (gavel run experiment=hiding_vs_ratelimit): cold (judge and surrogate trained)
and warm (both loaded from the cache), each in a fresh folder with its own MLflow store. Printed, not asserted.
    python bench/demo_walltime.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 45  # issue 7: make demo under 45 s on 2 cores after the install


def timed_demo(workdir: Path, cache: Path) -> float:
    env = {**os.environ, "GAVEL_CACHE_DIR": str(cache), "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    gavel = str(Path(sys.executable).with_name("gavel"))
    start = time.perf_counter()
    subprocess.run(
        [gavel, "run", "experiment=hiding_vs_ratelimit"],
        cwd=workdir,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        for label in ("cold", "warm"):
            workdir = root / label
            workdir.mkdir()
            seconds = timed_demo(workdir, cache)
            share = seconds / TARGET_SECONDS
            print(f"demo wall time ({label} cache): {seconds:.1f} s = {share:.2f} of the {TARGET_SECONDS} s target")


if __name__ == "__main__":
    main()
