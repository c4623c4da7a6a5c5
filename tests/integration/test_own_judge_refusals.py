"""A judge or data of the user's own that gavel cannot use, as a new user brings it: one line naming the key, what
it got and what is allowed, exit status 2, nothing trained or recorded."""

from __future__ import annotations

import os
from contextlib import contextmanager

import mlflow
import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import pytest
import torch
from helpers.cli import gavel_in_own_folder
from helpers.foreign_judges import TESTS_DIR, save_onnx, save_torchscript
from helpers.image_files import write_image_folder
from helpers.judge_nets import ProbabilityJudge
from PIL import Image
from torch import nn


@contextmanager
def tracking_at(uri: str):
    """MLflow's tracking URI set to `uri` for a while (it sets MLFLOW_TRACKING_URI too: the session's comes back)."""
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def mlp(inputs: int, outputs: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, 16), nn.ReLU(), nn.Linear(16, outputs)).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits) -> dict:
    folder = tmp_path_factory.mktemp("refused")
    rng = np.random.default_rng(0)
    (folder / "notes.txt").write_text("not a model\n")
    torch.save(digits.judge, folder / "whole_model.pt")  # a pickled module, not a state dict
    empty = write_image_folder(folder / "empty", rng.random((4, 1, 8, 8)), np.array([0, 0, 1, 1]), ["a", "b"])
    (empty / "c").mkdir()
    mixed = folder / "mixed"
    (mixed / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(mixed / "a" / "small.png")
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(mixed / "a" / "large.png")
    registry = f"sqlite:///{folder / 'registry.db'}"
    with tracking_at(registry), mlflow.start_run(experiment_id=mlflow.create_experiment("own judges")):
        mlflow.pytorch.log_model(
            digits.judge, name="judge", input_example=digits.data.eval.x[:2], serialization_format="pickle",
            registered_model_name="pickled-judge",
        )  # fmt: skip
        state_dict = folder / "state.pt"
        torch.save(digits.judge.state_dict(), state_dict)
        mlflow.pyfunc.log_model(
            name="pyfunc", python_model=ProbabilityJudge(), artifacts={"weights": str(state_dict)},
            input_example=digits.data.eval.x[:2], registered_model_name="pyfunc-judge",
        )  # fmt: skip
    return {
        "registry": registry,
        "missing": folder / "missing.pt",
        "text": folder / "notes.txt",
        "whole_model": folder / "whole_model.pt",
        "flat_8x8": save_torchscript(mlp(64, 10), folder / "flat_8x8.pt"),
        "five_classes": save_torchscript(mlp(64, 5), folder / "five_classes.pt"),
        "onnx": save_onnx(digits.judge, folder / "judge.onnx", digits.data.input_shape),
        "empty_class": empty,
        "mixed_sizes": mixed,
    }


def cases(f) -> list[tuple[list[str], str]]:
    own = ["target=torchscript", f"target.path={f['flat_8x8']}"]
    return [
        (["target=torchscript", f"target.path={f['missing']}"], f"target.path={f['missing']}: no such file; allowed"),
        (["target=torchscript", f"target.path={f['text']}"], f"target.path={f['text']}: not a TorchScript file"),
        (["target=onnx", f"target.path={f['text']}"], f"target.path={f['text']}: not an ONNX model file"),
        (
            [
                "target=state_dict",
                f"target.path={f['whole_model']}",
                "target.architecture=helpers.judge_nets:DigitsCNN",
            ],
            f"target.path={f['whole_model']}: holds Python objects that would run code when unpickled",
        ),
        (
            [*own, "target.input_shape=[1,16,16]", "data=image_folder", f"data.eval={f['mixed_sizes']}"],
            f"target.input_shape=[1, 16, 16]: the model in target.path={f['flat_8x8']} does not take 3 input(s)",
        ),
        (
            ["target=torchscript", f"target.path={f['five_classes']}"],
            f"target.path={f['five_classes']}: the model returns [3, 5] for 3 input(s) of [1, 8, 8]; allowed: one "
            "score per class, [3, 10] (data=digits has 10 classes)",
        ),
        (
            [
                "target=mlflow",
                "target.uri=models:/pickled-judge/1",
                f"target.tracking_uri={f['registry']}",
            ],
            "target.uri=models:/pickled-judge/1: a pickled PyTorch model (MLflow's legacy format), which runs "
            "code when loaded; allowed: target.trust_pickle=true",
        ),
        (
            ["target=state_dict", f"target.path={f['whole_model']}", "target.architecture=no_such_net"],
            "target.architecture='no_such_net': not a torchvision classifier's name; allowed: a torchvision "
            "classifier's name",
        ),
        (
            ["target=state_dict", f"target.path={f['whole_model']}", "target.architecture=helpers.nowhere:Net"],
            "target.architecture=helpers.nowhere:Net: not importable",
        ),
        (
            ["target=mlflow", "target.uri=models:/pyfunc-judge/1", f"target.tracking_uri={f['registry']}"],
            "target.uri=models:/pyfunc-judge/1: a python_function model, whose loader runs its own Python code",
        ),
        (
            [*own, "data=image_folder", f"data.eval={f['empty_class']}"],
            f"data.eval={f['empty_class']}: the class folder 'c' holds no image",
        ),
        (
            [*own, "data=image_folder", f"data.eval={f['mixed_sizes']}", "data.resize=false"],
            "data.resize=false: the images differ in size (16x16 in",
        ),
        (
            ["target=onnx", f"target.path={f['onnx']}", "target.engine=onnxruntime", "attack=pgd"],
            "attack=pgd: a white_box attack needs the judge's gradients, but target=onnx (an ONNX model run by "
            "onnxruntime (judge.onnx)) offers none; allowed: a transfer, score-based or decision-based attack",
        ),
        (
            [*own, "data=npz", f"data.eval={TESTS_DIR}", "attack=square", "access=hidden_probabilities"],
            f"data.eval={TESTS_DIR}: not an .npz file of plain arrays",
        ),
    ]


CASE_IDS = [
    "a missing file", "a text file as TorchScript", "a text file as ONNX", "a pickled model as a state dict",
    "a shape the model does not take", "another number of classes", "a pickle without trust_pickle",
    "an unknown torchvision architecture", "an architecture that does not import", "a pyfunc without trust_pickle",
    "an empty class folder",
    "images of mixed sizes, resizing off", "white box on a judge without gradients", "a folder as an npz file",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(CASE_IDS)), ids=CASE_IDS)
def test_a_judge_or_data_gavel_cannot_use_exits_2_with_one_line_and_nothing_recorded(tmp_path, files, case):
    args, message = cases(files)[case]
    env_path = os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p)
    os.environ["PYTHONPATH"], saved = env_path, os.environ.get("PYTHONPATH")
    try:
        done = gavel_in_own_folder(tmp_path, *args, "n_examples=5")
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gavel: {message}"), done.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "cache").exists()
    assert not (tmp_path / "out").exists()
