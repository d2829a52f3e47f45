"""Pydantic models of the HTTP contract's bodies (they document /openapi.json; handlers return plain JSON)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(
        description=(
            "machine-readable reason, e.g. not_image, truncated, too_large, unsupported, invalid_parameter, "
            "rate_limited (429, with a Retry-After header in whole seconds)"
        )
    )
    message: str


class ErrorBody(BaseModel):
    """Every error outside /v2."""

    error: ErrorDetail


class V2ErrorBody(BaseModel):
    """Every error under /v2, as the Open Inference Protocol defines it: the message as a string."""

    error: str = Field(description="what went wrong, for people (the same statuses as the rest of the API)")


class TopK(BaseModel):
    species: str
    probability: float
    edibility: Literal["edible", "poisonous", "deadly"]


class Lookalike(BaseModel):
    species: str
    common_name: str
    edibility: Literal["edible", "poisonous", "deadly"]
    note: str


class ModelRef(BaseModel):
    name: str
    version: str
    variant: Literal["fp32", "int8"]


class Prediction(BaseModel):
    """POST /predict: the most likely species and the conservative verdict."""

    species: str
    common_name: str
    edibility: Literal["edible", "poisonous", "deadly"]
    verdict: Literal["edible", "do_not_eat", "uncertain"]
    confidence: float
    poisonous_probability: float
    abstained: bool
    abstain_reason: (
        Literal["greyscale", "not_a_photo", "bad_exposure", "blurry", "unlike_training_data", "low_confidence"] | None
    ) = Field(description="why the answer abstained (verdict uncertain); null otherwise")
    top_k: list[TopK]
    lookalikes: list[Lookalike]
    model: ModelRef


class ModelInfo(BaseModel):
    """GET /model: the served model's classes, input size, versions and evaluation metrics."""

    name: str
    version: str
    variant: str
    classes: list[dict[str, Any]]
    num_classes: int
    input_size: int
    preprocessing: dict[str, Any]
    input: dict[str, Any]
    output: dict[str, Any]
    versions: dict[str, Any]
    metrics: dict[str, Any] | None = Field(
        description="models/export/metrics.json of the served folder, null if absent"
    )
    model_config = {"extra": "allow"}


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    model: ModelRef


class ReloadRequest(BaseModel):
    model_dir: str = Field(description="model folder (absolute, or relative to the repository root)")
    variant: Literal["fp32", "int8"] | None = Field(default=None, description="default: the variant served now")


class ReloadResult(BaseModel):
    status: Literal["reloaded"]
    model: ModelRef


class V2Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor]
    outputs: list[dict[str, Any]] | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2Tensor]


class V2TensorMeta(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMeta]
    outputs: list[V2TensorMeta]
