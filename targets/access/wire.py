"""The judge's API on the wire: what `gavel serve` accepts and answers, and what `target=remote` sends and reads.

Two request shapes, so that existing clients can call a gavel judge:

- the Open Inference Protocol v2 (KServe, Triton, MLServer): `POST /v2/models/{name}/infer` with
  `{"inputs": [{"name": "input", "shape": [n, C, H, W], "datatype": "FP32", "data": [...]}],
  "outputs": [{"name": "label"}]}`; the answer is `{"model_name": ..., "outputs": [{"name": "label", "shape": [n],
  "datatype": "INT64", "data": [...]}]}`. Output names: `logits`, `probabilities`, `label` (the service answers
  at most what its access policy shows; a request without `outputs` gets that).
- MLflow's scoring server: `POST /invocations` with `{"inputs": [[...], ...]}` (or `"instances"`), answered
  `{"predictions": [...]}` in the service's output.

gavel's own request parameter `"partial": true` (v2 only, what `target=remote` sends) asks for an answer row by
row when not every row can be answered: an extra output `gavel_row_status` (ROW_* codes) says which rows were
answered, rejected by the detector (charged, not answered), refused because the key is banned, or refused for the
key's quota or rate (neither charged). Without it a request is answered whole or refused whole (429, 403).

Errors are one line of JSON, `{"error": "...", "status": N}` (plus `"reason"` on 429: quota or rate, and
`"retry_after"` seconds, also sent as the `Retry-After` header).

Floats travel as JSON numbers: a float32 written by Python's repr of its float64 value reads back bit for bit, so
a remote judge answers exactly as the same judge in process.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import numpy as np

OUTPUTS = ("logits", "probabilities", "label")
ROW_ANSWERED, ROW_REJECTED, ROW_BANNED, ROW_REFUSED = 0, 1, 2, 3
ROW_STATUS = "gavel_row_status"
INPUT_NAME = "input"
API_KEY_HEADER = "Authorization"  # "Bearer <key>"; X-API-Key is read too
SIGNATURE_HEADERS = ("X-Gavel-Device", "X-Gavel-Timestamp", "X-Gavel-Nonce", "X-Gavel-Signature")


class WireError(ValueError):
    """A request or answer that does not follow the protocol; `status` is the HTTP status it earns."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InferRequest:
    x: np.ndarray
    output: str | None
    """The output asked for (one of OUTPUTS), or None: whatever the service shows."""
    partial: bool = False


def encode_v2_request(x: np.ndarray, output: str, *, partial: bool = True) -> dict:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return {
        "inputs": [{"name": INPUT_NAME, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
        "outputs": [{"name": output}],
        "parameters": {"partial": partial},
    }


def decode_v2_request(body: object, input_shape: tuple[int, ...]) -> InferRequest:
    """The rows of a v2 request, checked: one FP32 input of shape [n, *input_shape], finite, in [0, 1]."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or len(body["inputs"]) != 1:
        raise WireError('a v2 request has "inputs": a list of one tensor {"name", "shape", "datatype", "data"}', 400)
    tensor = body["inputs"][0]
    if not isinstance(tensor, dict) or not {"shape", "datatype", "data"} <= tensor.keys():
        raise WireError('inputs[0] needs "shape", "datatype" and "data"', 400)
    if tensor["datatype"] not in ("FP32", "FP64"):
        raise WireError(f"inputs[0].datatype={tensor['datatype']!r}: allowed: FP32 (FP64 is read as FP32)")
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise WireError("inputs[0].shape must be a list of integers")
    x = _array(tensor["data"], "inputs[0].data")
    if tuple(shape[1:]) != tuple(input_shape) or len(shape) != len(input_shape) + 1:
        raise WireError(f"inputs[0].shape={shape}: allowed: [n, {', '.join(map(str, input_shape))}]")
    if x.size != int(np.prod(shape)):
        raise WireError(f"inputs[0].data holds {x.size} values; shape {shape} needs {int(np.prod(shape))}")
    output = None
    outputs = body.get("outputs")
    if outputs is not None:
        names = [o.get("name") if isinstance(o, dict) else None for o in outputs] if isinstance(outputs, list) else []
        names = [name for name in names if name != ROW_STATUS]
        if len(names) != 1 or names[0] not in OUTPUTS:
            raise WireError(f'"outputs" names one output; allowed: {", ".join(OUTPUTS)}')
        output = names[0]
    parameters = body.get("parameters") or {}
    partial = isinstance(parameters, dict) and parameters.get("partial") is True
    return InferRequest(_checked(x.reshape(shape)), output, partial)


def decode_mlflow_request(body: object, input_shape: tuple[int, ...]) -> InferRequest:
    """MLflow's scoring shape: {"inputs": rows} or {"instances": rows}, each row the judge's input (or flat)."""
    if not isinstance(body, dict):
        raise WireError('an /invocations request is a JSON object with "inputs" (or "instances")', 400)
    rows = body.get("inputs", body.get("instances"))
    if rows is None:
        raise WireError('an /invocations request needs "inputs" (or "instances"): a list of rows', 400)
    x = _array(rows, "inputs")
    size = int(np.prod(input_shape))
    if x.ndim < 1 or x.size % size or (x.shape[1:] != tuple(input_shape) and x.shape[1:] != (size,)):
        raise WireError(f"inputs has shape {list(x.shape)}: allowed: [n, {', '.join(map(str, input_shape))}]")
    return InferRequest(_checked(x.reshape((-1, *input_shape))), None, False)


def _array(data: object, key: str) -> np.ndarray:
    """The numbers of `data` (nested lists), as float64; text, booleans, nulls or ragged lists are a 422."""
    try:
        x = np.asarray(data)
    except (TypeError, ValueError):  # ragged
        raise WireError(f"{key} must hold numbers only, in lists of one shape") from None
    if x.dtype.kind not in "iuf" or _holds_bool(data):  # "0.5" (text), true, null, a ragged list (object)
        raise WireError(f"{key} must hold numbers only (JSON numbers: not text, booleans or null)")
    return x.astype(np.float64)


def _holds_bool(data: object) -> bool:
    """Whether nested lists hold a boolean (numpy would read true among numbers as 1.0)."""
    if isinstance(data, list):
        return (
            any(_holds_bool(v) for v in data)
            if data and isinstance(data[0], list)
            else any(type(v) is bool for v in data)
        )
    return type(data) is bool


def _checked(x: np.ndarray) -> np.ndarray:
    if not np.isfinite(x).all():
        raise WireError("inputs hold NaN or infinite values: allowed: finite numbers in [0, 1]")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise WireError("inputs lie outside [0, 1]: allowed: values in [0, 1]")
    if not len(x):
        raise WireError("inputs hold no rows: allowed: one row or more")
    return x.astype(np.float32)


def encode_v2_response(
    model: str, output: str, values: np.ndarray, status: np.ndarray | None, *, key_banned: bool = False
) -> dict:
    """`values`: the answered rows' answers (zeros elsewhere); `status`: the ROW_* code of each row, sent when the
    request asked for partial answers, with whether the key is banned after it (`key_banned`: a flagged last row
    leaves no banned row to say so)."""
    label = output == "label"
    data = values.astype(np.int64 if label else np.float32)
    outputs = [
        {
            "name": output,
            "shape": list(data.shape),
            "datatype": "INT64" if label else "FP32",
            "data": data.ravel().tolist(),
        }
    ]
    if status is not None:
        outputs.append({"name": ROW_STATUS, "shape": [len(status)], "datatype": "INT8", "data": status.tolist()})
        return {"model_name": model, "outputs": outputs, "parameters": {"key_banned": key_banned}}
    return {"model_name": model, "outputs": outputs}


def decode_v2_response(body: object, output: str, n: int, n_classes: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(values, row status, whether the key is banned after it) of a v2 answer to `n` rows; every row answered when
    it carries no status."""
    try:
        tensors = {t["name"]: t for t in body["outputs"]}  # type: ignore[index]
        tensor = tensors[output]
        shape = (n,) if output == "label" else (n, n_classes)
        values = np.asarray(tensor["data"], dtype=np.int64 if output == "label" else np.float32).reshape(shape)
        status = tensors.get(ROW_STATUS)
        rows = np.zeros(n, dtype=np.int8) if status is None else np.asarray(status["data"], dtype=np.int8)
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"not an Open Inference Protocol v2 answer with output {output!r} ({error})", 502) from None
    if rows.shape != (n,):
        raise WireError(f"{ROW_STATUS} has {rows.size} rows; the request sent {n}", 502)
    parameters = body.get("parameters") if isinstance(body, dict) else None
    return values, rows, isinstance(parameters, dict) and parameters.get("key_banned") is True


def encode_mlflow_response(values: np.ndarray) -> dict:
    return {"predictions": values.tolist()}


def decode_mlflow_response(body: object, output: str, n: int, n_classes: int) -> np.ndarray:
    """The predictions of an MLflow scoring answer as `output`. The protocol cannot ask for an output: the service
    answers its own, and a caller that wants only labels keeps the arg-max of scores."""
    try:
        predictions = np.asarray(body["predictions"], dtype=np.float32)  # type: ignore[index]
        if output == "label" and predictions.shape == (n, n_classes):
            return predictions.argmax(axis=1).astype(np.int64)
        shape = (n,) if output == "label" else (n, n_classes)
        return predictions.astype(np.int64 if output == "label" else np.float32).reshape(shape)
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"not an MLflow scoring answer with {n} predictions ({error})", 502) from None


def signed_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """What a device signs: the protocol's tag, the time, a fresh nonce and the SHA-256 of the request's bytes."""
    return b"\n".join([b"gavel-signed-input-v1", timestamp.encode(), nonce.encode(), hashlib.sha256(body).digest()])


def encode_signature(signature: bytes) -> str:
    return base64.b64encode(signature).decode()


def decode_signature(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise WireError("X-Gavel-Signature is not base64", 401) from None
