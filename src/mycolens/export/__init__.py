"""Export a classifier checkpoint to the served model folder: model.onnx, model.int8.onnx, model.json."""

from mycolens.export.pipeline import ExportCheckFailed, ExportSettings, export_model

__all__ = ["ExportCheckFailed", "ExportSettings", "export_model"]
