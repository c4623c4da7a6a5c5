"""A judge of the user's own, from a file or a registry, audited through the demo preset: with the same weights as
the judge gavel trains, every table is the in-process judge's, to the last digit of every metric and every row of
every run's per-example table, except the rows the judge's capabilities refuse (no gradients: the white-box row),
which the sweep leaves out and says so."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from helpers.foreign_judges import (
    TESTS_DIR,
    log_mlflow_models,
    save_onnx,
    save_onnx_onnx2torch_cannot_convert,
    save_state_dict,
    save_torchscript,
)
from helpers.image_files import write_image_folder
from helpers.paired import agree

GAVEL = str(Path(sys.executable).with_name("gavel"))
PRESET = ("experiment=hiding_vs_ratelimit", "n_examples=20")
WHITE_BOX_ROW = ("pgd", "logits", "null")


@pytest.fixture(scope="module")
def judge_files(digits, tmp_path_factory) -> dict[str, list[str]]:
    """The digits judge gavel trains (the session's), saved in each form: -> the overrides that audit each."""
    folder = tmp_path_factory.mktemp("judge-files")
    judge, shape = digits.judge, digits.data.input_shape
    onnx_file = save_onnx(judge, folder / "judge.onnx", shape)
    state_dict = save_state_dict(judge, folder / "judge_state.pt")
    uris = log_mlflow_models(judge, digits.data.eval.x[:2], "foreign-judge", state_dict)
    return {
        "torchscript": ["target=torchscript", f"target.path={save_torchscript(judge, folder / 'judge.pt')}"],
        "state_dict": [
            "target=state_dict",
            f"target.path={state_dict}",
            "target.architecture=helpers.judge_nets:DigitsCNN",
        ],
        "onnx2torch": ["target=onnx", f"target.path={onnx_file}"],
        "mlflow_pt2": ["target=mlflow", f"target.uri={uris['pt2']}"],
        "mlflow_pickle": ["target=mlflow", f"target.uri={uris['pickle']}", "target.trust_pickle=true"],
        "onnxruntime": ["target=onnx", f"target.path={onnx_file}", "target.engine=onnxruntime"],
        "onnx_fallback": [
            "target=onnx",
            f"target.path={save_onnx_onnx2torch_cannot_convert(onnx_file, folder / 'shrink.onnx')}",
        ],
        "mlflow_pyfunc": ["target=mlflow", f"target.uri={uris['pyfunc']}", "target.trust_pickle=true"],
    }


def audit(tmp_path: Path, name: str, *overrides: str) -> tuple[dict, str]:
    """The demo preset on the judge `overrides` name, into experiment `name`: -> its table, keyed by (attack,
    output, budget), each run's metrics (less those of the judge's training, which only a judge gavel trained has)
    and per-example table; and what the sweep printed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(
        [GAVEL, "run", *PRESET, f"experiment_name={name}", *overrides, f"hydra.sweep.dir={tmp_path / name}"],
        env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {}
    for run in mlflow.search_runs(experiment_names=[name], output_format="list"):
        if "sweep_parent_of" in run.data.tags:
            continue
        tags = run.data.tags
        per_example = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/per_example.csv")
        metrics = {key: value for key, value in run.data.metrics.items() if not key.startswith("judge_train_")}
        rows[(tags["attack"], tags["access.output"], tags["access.budget"])] = (metrics, per_example)
    return rows, done.stdout


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits) -> dict:
    rows, _ = audit(tmp_path_factory.mktemp("reference"), "foreign-reference")
    assert len(rows) == 14 and WHITE_BOX_ROW in rows
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("source", ["torchscript", "state_dict", "onnx2torch", "mlflow_pt2", "mlflow_pickle"])
def test_the_same_weights_from_a_file_or_a_registry_give_the_same_table(tmp_path, judge_files, reference, source):
    rows, _ = audit(tmp_path, f"foreign-{source}", *judge_files[source])
    assert set(rows) == set(reference)
    for row, (metrics, per_example) in reference.items():
        assert rows[row][0] == metrics, f"{source}: {row} differs"
        assert rows[row][1] == per_example, f"{source}: {row}'s per-example table differs"


def columns(per_example: str, *names: str) -> list[tuple[str, ...]]:
    rows = list(csv.DictReader(io.StringIO(per_example)))
    return [tuple(row[name] for name in names) for row in rows]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["onnxruntime", "onnx_fallback", "mlflow_pyfunc"])
def test_a_judge_without_gradients_leaves_out_the_white_box_row_and_agrees_on_the_rest(
    tmp_path, judge_files, reference, source
):
    """ONNX Runtime's kernels, and a probability's logarithm, answer as the torch judge does to its last few bits
    (1e-6), not to the bit: the clean verdicts and the transfer row are the same to the last digit, and each query
    attack fools the same examples as far as McNemar's test on them can tell. (On the machine these tests were
    written on every per-example table was the same; a near-tie another CPU's rounding decides may move one.)"""
    rows, printed = audit(tmp_path, f"foreign-{source}", *judge_files[source])
    assert set(rows) == set(reference) - {WHITE_BOX_ROW}
    assert "not run: attack=pgd access=open" in printed and "offers none; allowed: a transfer" in printed
    verdicts = ("index", "label", "initial_prediction", "attacked")
    for row, (metrics, per_example) in rows.items():
        expected_metrics, expected = reference[row]
        assert set(metrics) == set(expected_metrics), row
        assert columns(per_example, *verdicts) == columns(expected, *verdicts), row
        if row[0] == "transfer_pgd":
            assert per_example == expected
        else:
            fooled = [s == "1" for (s,) in columns(per_example, "success")]
            agree(fooled, [s == "1" for (s,) in columns(expected, "success")])


def gate(tmp_path: Path, policy: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    return subprocess.run(
        [GAVEL, "gate", "--policy", str(policy), "--out", str(tmp_path / "gate"), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip


@pytest.mark.slow
def test_a_team_gates_its_own_model_on_its_own_images_pinned_by_the_files_sha256(tmp_path, judge_files, digits):
    """The CI recipe: `gavel gate --run` with the team's TorchScript file and image folders; the policy pins the
    file's SHA-256, and a gate whose runs judged another file is an error (exit 2), whatever the thresholds say."""
    model = Path(judge_files["torchscript"][1].removeprefix("target.path="))
    sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
    images = {}
    for pool in ("eval", "attacker"):
        x, y = getattr(digits.data, pool).x, getattr(digits.data, pool).y
        images[pool] = write_image_folder(tmp_path / "images" / pool, x[:60], y[:60], [str(d) for d in range(10)])
    policy = tmp_path / "robustness.yaml"
    policy.write_text(
        "experiment: own-judge\n"
        "run: experiment=hiding_vs_ratelimit experiment_name=own-judge n_examples=10\n"
        f"judge:\n  sha256: {sha256}\n"
        "thresholds:\n"
        "  - {name: a placeholder any run passes (the pin is what is tested), where: {threat_model: transfer}, "
        "metric: robust_accuracy, min: 0.0, bound: point}\n"
    )
    own = ["target=torchscript", f"target.path={model}", "data=image_folder", f"data.eval={images['eval']}",
           f"data.attacker={images['attacker']}"]  # fmt: skip
    done = gate(tmp_path, policy, "--run", *own)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "gate" / "summary.json").read_text())
    assert summary["verdict"] == "pass" and len(summary["checks"]) == 1
    before = mlflow.get_tracking_uri()  # set_tracking_uri also sets the environment variable: saved first
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        runs = [r for r in mlflow.search_runs(experiment_names=["own-judge"], output_format="list")
                if "sweep_id" in r.data.tags]  # fmt: skip
    finally:
        mlflow.set_tracking_uri(before)
    assert len(runs) == 14 and {r.data.tags["judge.sha256"] for r in runs} == {sha256}
    assert {r.data.tags["dataset"] for r in runs} == {"image_folder"}
    policy.write_text(policy.read_text().replace(sha256, "0" * 64))
    refused = gate(tmp_path, policy)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.startswith("gavel: policy.judge: run ") and f"judge.sha256={sha256}" in refused.stderr
