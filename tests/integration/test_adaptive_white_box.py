"""Gradient masking and the adaptive attacker (Athalye, Carlini & Wagner, 2018), through the real runner: plain PGD
through a non-differentiable preprocessing defense reads zero gradients and reports the judge as robust; PGD with
BPDA on the same examples takes much of that robustness away. Compared with McNemar's test on the same examples.

Measured on the machine this was written on (100 examples, L-inf eps 0.1): bit_depth (2 bits) plain 0.000, BPDA
0.156 [0.097, 0.242]; jpeg (quality 50) plain 0.000, BPDA 0.351 [0.263, 0.450]. On spatial_smoothing, whose median
passes a sparse but true gradient, plain PGD does better than BPDA's identity (0.701 against 0.442)."""

from __future__ import annotations

import csv
import io

import mlflow
import numpy as np
import pytest
from helpers.cli import gavel_in_own_folder
from helpers.paired import enough_to_compare, less_success

from gavel.experiments import runner
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings


def white_box(*overrides: str, n_examples: int = 100) -> tuple[dict, dict[int, bool]]:
    args = ["attack=pgd", "access=open", f"n_examples={n_examples}", *overrides]
    settings = RunSettings.from_config(compose_config(args))
    metrics = runner.run(settings, runner.prepare(settings), overrides=args)
    text = mlflow.artifacts.load_text(f"runs:/{mlflow.last_active_run().info.run_id}/per_example.csv")
    rows = [row for row in csv.DictReader(io.StringIO(text)) if row["attacked"] == "1"]
    assert rows, "no example was attacked"
    return metrics, {int(row["index"]): row["success"] == "1" for row in rows}


@pytest.mark.slow
@pytest.mark.parametrize("defense", ["bit_depth", "jpeg"])
def test_bpda_takes_away_the_robustness_a_masking_defense_reports_to_plain_pgd(defense):
    plain_metrics, plain = white_box(f"defense={defense}")
    bpda_metrics, bpda = white_box(f"defense={defense}", "attack.bpda=true")
    assert plain.keys() == bpda.keys()  # the same examples: the defense's verdicts do not depend on the attacker
    assert plain_metrics["clean_accuracy"] == bpda_metrics["clean_accuracy"]
    shared = sorted(plain)
    fooled_plain, fooled_bpda = np.array([plain[i] for i in shared]), np.array([bpda[i] for i in shared])
    enough_to_compare(fooled_plain, fooled_bpda)
    less_success(fooled_plain, fooled_bpda)


@pytest.mark.parametrize(
    "args, says",
    [
        (["attack=square", "attack.bpda=true"], "attack.bpda: attack=square reads no gradients of the served model"),
        (["attack=transfer_pgd", "attack.bpda=true"], "attack.bpda: attack=transfer_pgd reads no gradients of the"),
        (["attack=boundary", "attack.eot_samples=4"], "attack.eot_samples: attack=boundary reads no gradients of"),
        (["defense=jpeg", "defense.quality=0"], "defense.quality=0: allowed:"),
        (["defense=bit_depth", "defense.bits=9"], "defense.bits=9: allowed:"),
        (["attack=pgd", "attack.eot_samples=0"], "attack.eot_samples=0: allowed:"),
    ],
)
def test_bad_adaptive_input_exits_2_in_one_line(tmp_path, args, says):
    done = gavel_in_own_folder(tmp_path, *args, "n_examples=5")
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gavel: {says}"), done.stderr[-2000:]
    assert not (tmp_path / "cache").exists()
