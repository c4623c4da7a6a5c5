"""The strongest attacker on real runs: a tiny sweep of two score-based attacks at one budget, through `gavel run`;
its table's union row, the report's union column and `gavel gate` all say what the two runs' per-example tables
say when united by hand (whatever the weights this machine trains)."""

from __future__ import annotations

import csv
import io
import json
import os

import mlflow
import pytest
from helpers.cli import gavel_in_own_folder

from gavel.experiments.cli import gate_command, report_command
from gavel.experiments.statistics import rate_interval

pytestmark = pytest.mark.slow

EXPERIMENT = "strongest-attacker"
SWEEP = ("--multirun", "attack=square,simba", "access=hidden_probabilities", "access.budget=20", "n_examples=12",
         "attack.eps=0.3", f"experiment_name={EXPERIMENT}")  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, isolated_stores):
    folder = tmp_path_factory.mktemp("sweep")
    done = gavel_in_own_folder(folder, *SWEEP, timeout=600, cache_dir=os.environ["GAVEL_CACHE_DIR"])
    assert done.returncode == 0, done.stderr[-3000:]
    before = mlflow.get_tracking_uri()  # set_tracking_uri also sets the environment variable: saved first
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    runs = {}
    for run in mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list"):
        if "sweep_id" in run.data.tags:
            text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/per_example.csv")
            runs[run.data.tags["attack"]] = (run, list(csv.DictReader(io.StringIO(text))))
    yield folder, done.stdout, runs
    mlflow.set_tracking_uri(before)


def by_hand(runs: dict) -> tuple[int, int, float]:
    """(examples fooled by either attack, examples both attacked, the median of their summed queries)."""
    (_, square), (_, simba) = runs["square"], runs["simba"]
    assert [row["index"] for row in square] == [row["index"] for row in simba]
    both = [(a, b) for a, b in zip(square, simba) if a["attacked"] == b["attacked"] == "1"]
    fooled = sum(a["success"] == "1" or b["success"] == "1" for a, b in both)
    summed = sorted(int(a["queries"]) + int(b["queries"]) for a, b in both)
    middle = len(summed) // 2
    median = summed[middle] if len(summed) % 2 else (summed[middle - 1] + summed[middle]) / 2
    return fooled, len(both), median


def test_the_sweep_table_has_the_union_row_beside_each_attacks_own(sweep):
    _, printed, runs = sweep
    fooled, n, median = by_hand(runs)
    rows = [line.split() for line in printed.splitlines() if line.startswith("score_based")]
    assert [row[1] for row in rows] == ["simba", "square", "union(simba,square)"]
    union = rows[2]
    interval = rate_interval(fooled, n)
    assert union[6:10] == [f"{fooled / n:.3f}", f"[{interval.low:.3f},", f"{interval.high:.3f}]", f"{median:.0f}"]
    assert union[-1] == str(n)
    each = [run.data.metrics["attack_success_rate"] for run, _ in runs.values()]
    assert fooled / n >= max(each)  # the union never does worse than its best attack on the same examples


def test_the_report_shows_the_union_and_the_gate_binds_on_it(sweep, tmp_path):
    _, _, runs = sweep
    fooled, n, _ = by_hand(runs)
    out = tmp_path / "report"
    assert report_command(["--experiment", EXPERIMENT, "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    assert "score_based union(simba,square) @ 20" in markdown and "## The strongest attacker" in markdown
    assert f"union(simba,square) {fooled / n:.3f} [" in markdown

    high = rate_interval(fooled, n).high
    policy = tmp_path / "union.yaml"
    rule = "  - {where: {threat_model: score_based}, metric: attack_success_rate, max: %s}"
    policy.write_text(f"experiment: {EXPERIMENT}\nthresholds:\n{rule % (high - 1e-9)}\n")
    assert gate_command(["--policy", str(policy), "--out", str(tmp_path / "union")]) == 1
    (check,) = json.loads((tmp_path / "union" / "summary.json").read_text())["checks"]
    assert check["value"] == pytest.approx(high) and not check["passed"]
    assert set(check["run_id"].split("+")) == {run.info.run_id for run, _ in runs.values()}

    one = "  - {where: {threat_model: score_based, attack: square}, metric: attack_success_rate, max: 1.0}"
    policy.write_text(f"experiment: {EXPERIMENT}\nthresholds:\n{one}\n")
    assert gate_command(["--policy", str(policy), "--out", str(tmp_path / "square")]) == 0
    (check,) = json.loads((tmp_path / "square" / "summary.json").read_text())["checks"]
    square = runs["square"][0]
    assert check["run_id"] == square.info.run_id
    assert check["value"] == pytest.approx(square.data.metrics["attack_success_rate_ci_high"])
