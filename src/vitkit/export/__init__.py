"""Export for serving: ONNX at a fixed resolution, verified with onnxruntime; int8 ONNX for CPUs."""

from .onnx import ExportResult, export_onnx, verify_onnx
from .quantize import QuantizeResult, export_onnx_int8, quantize_onnx_file

__all__ = ["ExportResult", "QuantizeResult", "export_onnx", "export_onnx_int8", "quantize_onnx_file", "verify_onnx"]
