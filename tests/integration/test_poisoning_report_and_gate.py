"""Poisoning runs as a security reviewer and a CI pipeline read them: real backdoor runs through the runner, then the
report's poisoning section (a row per poison, fraction and sanitiser, and the curve of backdoor success against the
fraction) and `gavel gate` selecting runs by their poison and sanitiser."""

from __future__ import annotations

import json
import uuid

import pytest
from helpers.poisoning import backdoor_run

from gavel.experiments.cli import gate_command, report_command
from gavel.reports.report import collect, poisoning

N = 60
JOBS = (
    ("badnets", "0.01", "none"),
    ("badnets", "0.05", "none"),
    ("badnets", "0.05", "spectral_signatures"),
)


@pytest.fixture(scope="module")
def experiment(isolated_stores) -> tuple[str, dict]:
    name = f"poisoning-{uuid.uuid4().hex[:8]}"
    runs = {}
    for poison, fraction, sanitiser in JOBS:
        runs[(poison, fraction, sanitiser)] = backdoor_run(
            f"experiment_name={name}", f"poison={poison}", f"poison.fraction={fraction}", f"sanitise={sanitiser}",
            "data.contributors=10", "poison.contributors=3", n_examples=N,
        )  # fmt: skip
    return name, runs


def test_the_report_has_a_row_per_poison_fraction_and_sanitiser_with_the_runs_own_figures(experiment, tmp_path):
    name, runs = experiment
    table, figure = poisoning(collect(name))
    header, *rows = table
    assert header[:4] == ["poison", "sanitiser", "fraction", "backdoor success [95% interval]"]
    assert len(rows) == len(JOBS)
    by_job = {(row[0], row[2], row[1]): row for row in rows}
    assert set(by_job) == set(JOBS)
    for job, run in runs.items():
        row = by_job[job]
        m = run.logged
        assert row[3] == (
            f"{m['backdoor_success_rate']:.3f} [{m['backdoor_success_rate_ci_low']:.3f}, "
            f"{m['backdoor_success_rate_ci_high']:.3f}]"
        )
        assert row[4] == f"{m['clean_accuracy']:.3f}" and row[5] == f"{m['clean_accuracy_clean_judge']:.3f}"
        sanitised = job[2] != "none"
        for cell, key in zip(row[6:], ("poison_recall", "poison_precision", "honest_removed_fraction")):
            assert cell == (f"{m[key]:.3f}" if key in m else "-")
            assert (key in m) == sanitised or key == "poison_precision"  # precision: only where it removed something
    (axes,) = figure.axes  # one poison: one panel, a line per sanitiser
    assert len(axes.containers) == len(axes.get_legend().get_texts()) == 2
    points = sorted((float(x), float(y)) for line in axes.containers for x, y in line.lines[0].get_xydata())
    assert points == sorted((float(job[1]), run.logged["backdoor_success_rate"]) for job, run in runs.items())

    out = tmp_path / "report"
    assert report_command(["--experiment", name, "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    assert "Poisoning by contributors" in markdown and (out / "poisoning.png").stat().st_size > 0
    for job, run in runs.items():
        assert f"{run.logged['backdoor_success_rate']:.3f}" in markdown


def test_a_report_without_poisoning_runs_has_no_poisoning_section():
    assert poisoning([]) == (None, None)


def test_the_gate_selects_backdoor_runs_by_poison_and_sanitiser(experiment, tmp_path):
    name, runs = experiment
    sanitised = runs[("badnets", "0.05", "spectral_signatures")]
    rule = (
        "  - {where: {threat_model: poisoning, poison: badnets, sanitise: spectral_signatures}, "
        "metric: backdoor_success_rate, max: 1.0}"
    )
    policy = tmp_path / "poisoning.yaml"
    policy.write_text(f"experiment: {name}\nthresholds:\n{rule}\n")
    assert gate_command(["--policy", str(policy), "--out", str(tmp_path / "pass")]) == 0
    (check,) = json.loads((tmp_path / "pass" / "summary.json").read_text())["checks"]
    assert check["value"] == pytest.approx(sanitised.logged["backdoor_success_rate_ci_high"])  # the upper bound

    # every unsanitised run, held to below its own upper bound: each fails
    strict = min(runs[job].logged["backdoor_success_rate_ci_high"] for job in JOBS if job[2] == "none") - 1e-9
    rule = f"  - {{where: {{poison: badnets, sanitise: none}}, metric: backdoor_success_rate, max: {strict}}}"
    policy.write_text(f"experiment: {name}\nthresholds:\n{rule}\n")
    assert gate_command(["--policy", str(policy), "--out", str(tmp_path / "fail")]) == 1
    checks = json.loads((tmp_path / "fail" / "summary.json").read_text())["checks"]
    assert len(checks) == 2 and not any(c["passed"] for c in checks)
