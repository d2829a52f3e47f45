"""ONNX Runtime static int8 quantization (QDQ, per channel) calibrated on training images."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from mycolens.export.onnx_export import quiet_loggers


def cpu_flags() -> set[str]:
    """CPU feature flags (as `lscpu` shows them); empty when unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    for line in out.splitlines():
        if line.startswith("Flags:"):
            return set(line.split(":", 1)[1].split())
    return set()


def avx2_without_vnni(flags: set[str]) -> bool:
    """x86 with AVX2 but no VNNI: int8 x int8 products can saturate unless the range is reduced."""
    return "avx2" in flags and not ({"avx512_vnni", "avx_vnni", "avx512vnni"} & flags)


@dataclass(frozen=True)
class QuantSettings:
    """Resolved quantization choices, recorded in model.json."""

    activation_type: str
    weight_type: str
    reduce_range: bool
    per_channel: bool
    calibrate_method: str
    calibration_images: int
    format: str = "QDQ"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_settings(
    activation_type: str = "auto",
    weight_type: str = "QInt8",
    reduce_range: bool | str = "auto",
    per_channel: bool = True,
    calibrate_method: str = "MinMax",
    calibration_images: int = 256,
    flags: set[str] | None = None,
) -> QuantSettings:
    """Turn "auto" into concrete types: QUInt8 activations on x86 (u8 x s8 is its int8 path), reduce_range on AVX2 without VNNI."""
    flags = cpu_flags() if flags is None else flags
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686") or "avx2" in flags
    if str(activation_type) == "auto":
        activation_type = "QUInt8" if x86 else "QInt8"
    if str(reduce_range) == "auto":
        reduce_range = avx2_without_vnni(flags)
    for name in (activation_type, weight_type):
        if not hasattr(QuantType, name):
            raise ValueError(f"unknown quantization type {name!r}; use QUInt8 or QInt8")
    if not hasattr(CalibrationMethod, calibrate_method):
        raise ValueError(f"unknown calibrate_method {calibrate_method!r}; use MinMax, Entropy or Percentile")
    return QuantSettings(
        str(activation_type),
        str(weight_type),
        bool(reduce_range),
        bool(per_channel),
        str(calibrate_method),
        int(calibration_images),
    )


class ImageReader(CalibrationDataReader):
    """Feeds preprocessed images to the calibrator in batches."""

    def __init__(self, images: np.ndarray, input_name: str = "input", batch_size: int = 32) -> None:
        self.images, self.input_name, self.batch_size = images, input_name, batch_size
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.images):
            return None
        batch = np.ascontiguousarray(self.images[self.pos : self.pos + self.batch_size], np.float32)
        self.pos += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.pos = 0


def score_nodes(model_path: str | Path, keep_output: str = "logits", write_names: bool = True) -> list[str]:
    """Names of the nodes that do not feed `keep_output` (the OOD score heads): they stay fp32.

    Nodes without a name get one, written back to `model_path` (unless `write_names` is false), so the quantizer
    can be told to skip them.
    """
    import onnx

    model = onnx.load(str(model_path))
    graph = model.graph
    named = False
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name, named = f"node_{node.op_type}_{i}", True
    producer = {out: node for node in graph.node for out in node.output}
    needed, stack = set(), [keep_output]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and node.name not in needed:
            needed.add(node.name)
            stack.extend(node.input)
    if named and write_names:
        onnx.save(model, str(model_path))
    return [n.name for n in graph.node if n.name not in needed]


def quantize_int8(
    fp32_path: str | Path, out_path: str | Path, calibration: np.ndarray, settings: QuantSettings, batch_size: int = 32
) -> Path:
    """quant_pre_process then quantize_static (QDQ) of `fp32_path` into `out_path` (one self-contained file)."""
    out_path = Path(out_path)
    if len(calibration) == 0:
        raise ValueError("int8 calibration needs at least one training image")
    pre = out_path.with_name(f".{out_path.stem}.pre.onnx")
    with quiet_loggers():
        try:
            quant_pre_process(
                str(fp32_path), str(pre), skip_symbolic_shape=True
            )  # ONNX shape inference suffices; the symbolic one fails on the score heads
            exclude = score_nodes(pre)  # only the classifier is quantized; score heads run in fp32
            quantize_static(
                str(pre),
                str(out_path),
                ImageReader(calibration, batch_size=batch_size),
                quant_format=QuantFormat.QDQ,
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                activation_type=getattr(QuantType, settings.activation_type),
                weight_type=getattr(QuantType, settings.weight_type),
                calibrate_method=getattr(CalibrationMethod, settings.calibrate_method),
                use_external_data_format=False,
                nodes_to_exclude=exclude,
            )
        finally:
            pre.unlink(missing_ok=True)
    return out_path
