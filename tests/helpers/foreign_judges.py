"""One judge's weights in every form a user brings a judge in: TorchScript, a state dict with an importable class,
ONNX (one onnx2torch converts, one it cannot: ONNX Runtime runs it), and MLflow models (pt2, the legacy pickle,
a python_function model), each as the `gavel run` overrides that audit it."""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import torch
from torch import nn

TESTS_DIR = Path(__file__).resolve().parent.parent
"""On PYTHONPATH of a `gavel run` that loads `helpers.judge_nets` (an importable class, a pickled model's)."""


def save_torchscript(judge: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(judge), str(path))
    return path


def save_state_dict(judge: nn.Module, path: Path) -> Path:
    torch.save(judge.state_dict(), path)
    return path


def save_onnx(judge: nn.Module, path: Path, input_shape: tuple[int, ...]) -> Path:
    """TorchScript-based export (opset 17), which onnx2torch converts; torch.export's, at its opsets, it does not."""
    torch.onnx.export(
        judge, (torch.rand(2, *input_shape),), str(path), dynamo=False, input_names=["x"], output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
    )  # fmt: skip
    return path


def save_onnx_onnx2torch_cannot_convert(onnx_path: Path, path: Path) -> Path:
    """The same model with an identity Shrink (lambd=0, bias=0) after its logits: ONNX Runtime runs it unchanged,
    onnx2torch has no converter for Shrink."""
    import onnx

    model = onnx.load(str(onnx_path))
    output = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{name}_before" if name == output else name for name in node.output]
    model.graph.node.append(onnx.helper.make_node("Shrink", [f"{output}_before"], [output], lambd=0.0, bias=0.0))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def log_mlflow_models(judge: nn.Module, example: np.ndarray, name: str, state_dict: Path) -> dict[str, str]:
    """The judge registered three ways in the active MLflow store: -> each one's `target.uri`."""
    uris = {}
    with mlflow.start_run(run_name=f"{name} models"):
        for kind, format in (("pt2", "pt2"), ("pickle", "pickle")):
            info = mlflow.pytorch.log_model(
                judge, name=f"judge_{kind}", input_example=example, serialization_format=format,
                registered_model_name=f"{name}-{kind}",
            )  # fmt: skip
            uris[kind] = f"models:/{name}-{kind}/{info.registered_model_version}"
        from helpers.judge_nets import ProbabilityJudge

        info = mlflow.pyfunc.log_model(
            name="judge_pyfunc", python_model=ProbabilityJudge(), artifacts={"weights": str(state_dict)},
            input_example=example, registered_model_name=f"{name}-pyfunc",
        )  # fmt: skip
        uris["pyfunc"] = f"models:/{name}-pyfunc@champion"
        mlflow.MlflowClient().set_registered_model_alias(f"{name}-pyfunc", "champion", info.registered_model_version)
    return uris
