"""`gavel run` as a user types it, in a folder of its own: its MLflow store (and, unless told otherwise, its
model cache) live there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GAVEL = str(Path(sys.executable).with_name("gavel"))


def gavel_in_own_folder(
    tmp_path: Path, *args: str, timeout: int = 300, cache_dir: str | Path | None = None
) -> subprocess.CompletedProcess:
    """`cache_dir`: a model cache to share (the test session's), instead of one in `tmp_path`."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "GAVEL_CACHE_DIR": str(cache_dir or tmp_path / "cache"),
    }
    return subprocess.run(
        [GAVEL, "run", *args, f"hydra.run.dir={tmp_path / 'out'}", f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
