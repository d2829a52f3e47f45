"""Open Inference Protocol (KServe v2, REST): metadata, infer request parsing (JSON and binary tensors), responses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from mycolens.serving.errors import ApiError

OUTPUTS = ("probabilities", "logits")
PLATFORM = "onnxruntime_onnx"
HEADER_LENGTH = "inference-header-content-length"


@dataclass
class InferRequest:
    """A parsed v2 infer request: the FP32 NCHW tensor, the request id, and the outputs wanted (name, binary)."""

    x: np.ndarray
    id: str | None
    outputs: list[tuple[str, bool]]


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "mycolens", "version": version, "extensions": ["binary_tensor_data"]}


def model_metadata(info: dict[str, Any]) -> dict[str, Any]:
    """GET /v2/models/{name}: the input and output tensors of the served model."""
    size, classes = int(info["input_size"]), int(info["num_classes"])
    return {
        "name": info["name"],
        "versions": [info["version"]],
        "platform": PLATFORM,
        "inputs": [{"name": info["input"]["name"], "datatype": "FP32", "shape": [-1, 3, size, size]}],
        "outputs": [{"name": name, "datatype": "FP32", "shape": [-1, classes]} for name in OUTPUTS],
        "parameters": {"variant": info["variant"], "temperature": info["temperature"]},
    }


def _bad(message: str) -> ApiError:
    return ApiError(422, "invalid_tensor", message)


def parse_infer(body: bytes, header_length: str | None, info: dict[str, Any], max_batch: int) -> InferRequest:
    """Validate a v2 infer body against the served model's input; ApiError 400 (not JSON) or 422 (bad tensor)."""
    if not body:
        raise ApiError(400, "empty", "empty request body: send a v2 inference request (JSON)")
    binary = b""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ApiError(400, "bad_request", f"invalid Inference-Header-Content-Length {header_length!r}") from None
        if not 0 < n <= len(body):
            raise ApiError(
                400, "bad_request", f"Inference-Header-Content-Length {n} does not fit a body of {len(body)} bytes"
            )
        body, binary = body[:n], body[n:]
    try:
        req = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_request", f"request body is not JSON: {exc}") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or len(req["inputs"]) != 1:
        raise _bad("a v2 request needs 'inputs': a list with exactly one tensor")
    spec = info["input"]
    size = int(info["input_size"])
    tensor = req["inputs"][0]
    if not isinstance(tensor, dict):
        raise _bad("each input must be an object with name, shape, datatype, data")
    if tensor.get("name") != spec["name"]:
        raise _bad(f"unknown input {tensor.get('name')!r}; the model's input is {spec['name']!r}")
    if tensor.get("datatype") != "FP32":
        raise _bad(f"input datatype must be FP32, got {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    want = [3, size, size]
    if not (
        isinstance(shape, list)
        and len(shape) == 4
        and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        and shape[1:] == want
    ):
        raise _bad(f"input shape must be [N, {', '.join(map(str, want))}], got {shape!r}")
    if not 1 <= shape[0] <= max_batch:
        raise _bad(f"batch size must be between 1 and {max_batch}, got {shape[0]}")
    count = int(np.prod(shape))
    params = tensor.get("parameters") or {}
    if "binary_data_size" in params:
        nbytes = params["binary_data_size"]
        if nbytes != count * 4 or len(binary) != nbytes:
            raise _bad(f"binary input of {len(binary)} bytes (declared {nbytes}) does not match shape {shape} in FP32")
        x = np.frombuffer(binary, dtype="<f4").reshape(shape)
    else:
        data = tensor.get("data")
        if data is None:
            raise _bad("input has no 'data'")
        try:
            arr = np.asarray(data, dtype=np.float32)
        except (ValueError, TypeError):
            raise _bad("input data must be numbers (a flat or nested list)") from None
        if arr.size != count:
            raise _bad(f"input data has {arr.size} values, shape {shape} needs {count}")
        x = arr.reshape(shape)
    if not np.isfinite(x).all():
        raise _bad("input data must be finite numbers")
    return InferRequest(np.ascontiguousarray(x, dtype=np.float32), req.get("id"), _outputs(req))


def _outputs(req: dict[str, Any]) -> list[tuple[str, bool]]:
    default_binary = bool((req.get("parameters") or {}).get("binary_data_output", False))
    wanted = req.get("outputs")
    if not wanted:
        return [(name, default_binary) for name in OUTPUTS]
    if not isinstance(wanted, list):
        raise _bad("'outputs' must be a list of {name}")
    out = []
    for o in wanted:
        name = o.get("name") if isinstance(o, dict) else None
        if name not in OUTPUTS:
            raise _bad(f"unknown output {name!r}; outputs are {', '.join(OUTPUTS)}")
        out.append((name, bool((o.get("parameters") or {}).get("binary_data", default_binary))))
    return out


def infer_response(req: InferRequest, result: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The v2 response body and headers; binary outputs follow the JSON header (binary tensor extension)."""
    outputs, blobs = [], []
    for name, binary in req.outputs:
        arr = np.ascontiguousarray(result[name], dtype="<f4")
        entry: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(arr.shape)}
        if binary:
            blob = arr.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        outputs.append(entry)
    body: dict[str, Any] = {
        "model_name": result["model"]["name"],
        "model_version": result["model"]["version"],
        "outputs": outputs,
    }
    if req.id is not None:
        body["id"] = req.id
    head = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
