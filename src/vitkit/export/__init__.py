"""Export for serving: ONNX at a fixed resolution, verified with onnxruntime."""

from .onnx import ExportResult, export_onnx, verify_onnx

__all__ = ["ExportResult", "export_onnx", "verify_onnx"]
