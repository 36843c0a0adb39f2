"""int8 ONNX for CPU serving, with ONNX Runtime's own quantization tools (``onnxruntime.quantization``).

The model is exported in fp32 first (:func:`vitkit.export.export_onnx`, verified to 1e-4), then prepared with
``quant_pre_process`` (shape inference and graph optimisation, which ONNX Runtime's docs ask for before quantizing)
and quantized in one of two ways:

* ``dynamic`` (no data needed): weights int8 per output channel, activations quantized per batch at run time.
  Only the weight matrix products (``MatMul``/``Gemm`` with a constant weight: qkv, attention output, MLP, head)
  are quantized; attention's activation x activation products, softmax, LayerNorm and GELU stay fp32.
  Convolutions stay fp32 as well: ONNX Runtime's dynamic ``ConvInteger`` is slower than its fp32 convolution.
* ``static`` (QDQ format, calibration images required): activation ranges of the same products plus the
  convolutions (patch embedding, the hybrid's ResNet) are fixed by running calibration images through the model
  (MinMax); uint8 activations, int8 per-channel weights, the u8s8 pair that VNNI CPUs run fastest.

A quantized model is not bit-exact, so the check is not the fp32 export's 1e-4: its logits are compared with
PyTorch's on the check images (the calibration images when given, else random ones) and the export fails when
the largest difference exceeds ``tolerance`` times the spread of PyTorch's logits on that batch (a broken graph,
not rounding). Top-1 agreement on those images is reported; the top-1 change on real data is measured by
``benchmarks/int8_cpu.py``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..image_size import as_hw
from .onnx import _needs, export_onnx, write_metadata

METHODS = ("dynamic", "static")
INT8_TOLERANCE = 0.25  # max |int8 - fp32| logit difference as a fraction of the fp32 logits' spread
_WEIGHT_OPS = ["MatMul", "Gemm"]


@dataclass
class QuantizeResult:
    path: Path
    method: str
    image_size: tuple[int, int]
    exporter: str
    max_abs_diff: float  # int8 ONNX vs fp32 PyTorch logits on the check images
    logit_spread: float  # max - min of PyTorch's logits on the check images, the scale of max_abs_diff
    top1_agreement: float  # fraction of check images whose int8 top-1 equals PyTorch's
    num_checked: int
    checked_on: str  # "calibration images" or "random images"
    bytes: int
    fp32_bytes: int
    input_name: str = "images"
    output_name: str = "logits"


def _reader(images: np.ndarray, name: str, batch: int):  # noqa: ANN202 - onnxruntime's class, imported lazily
    """An ``onnxruntime.quantization.CalibrationDataReader`` over an array of images, in batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = (
                {name: images[i:i + batch]} for i in range(0, len(images), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    return Batches()


def quantize_onnx_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], method: str = "dynamic", *,
                       calibration: np.ndarray | None = None, calibration_batch: int = 16) -> None:
    """Quantize the fp32 ONNX file ``src`` (input ``images``) to int8 at ``dst`` (see the module docstring).

    ``calibration`` (N, C, H, W) float32 normalised images are required for ``static`` and refused for
    ``dynamic`` (which would ignore them).
    """
    if method not in METHODS:
        raise UserError(f"quantization method {method!r}; expected one of {', '.join(METHODS)}")
    if method == "static" and (calibration is None or len(calibration) == 0):
        raise UserError("static int8 quantization needs calibration images (--calibration SPEC in the CLI)")
    if method == "dynamic" and calibration is not None:
        raise UserError("dynamic int8 quantization uses no calibration images; pass method='static' to use them")
    _needs("onnxruntime")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=Path(dst).parent, prefix=".vitkit-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quiet = logging.getLogger()  # the quantizer logs one WARNING per skipped tensor on the root logger
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(str(src), str(pre))
                if method == "dynamic":
                    quantize_dynamic(str(pre), str(dst), op_types_to_quantize=_WEIGHT_OPS, per_channel=True,
                                     weight_type=QuantType.QInt8)
                else:
                    assert calibration is not None
                    reader = _reader(np.ascontiguousarray(calibration, dtype=np.float32), "images",
                                     calibration_batch)
                    # MatMulConstBOnly: attention's activation x activation products stay fp32, as in dynamic.
                    quantize_static(str(pre), str(dst), reader, quant_format=QuantFormat.QDQ,
                                    op_types_to_quantize=[*_WEIGHT_OPS, "Conv"], per_channel=True,
                                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                    extra_options={"MatMulConstBOnly": True})
        finally:
            quiet.setLevel(level)


def export_onnx_int8(
    model: nn.Module,
    path: str | os.PathLike[str],
    image_size: int | tuple[int, int] | None = None,
    *,
    method: str | None = None,
    calibration: torch.Tensor | None = None,
    opset: int | None = None,
    exporter: str = "auto",
    check_images: int = 8,
    tolerance: float = INT8_TOLERANCE,
) -> QuantizeResult:
    """Write ``model`` as an int8 ONNX file for ``image_size`` inputs (default: the model's) and check it.

    ``method``: "dynamic" or "static"; default "static" when ``calibration`` images (N, C, H, W, normalised as
    ``model.config`` says, at the export resolution) are given, else "dynamic". The graph's input and output are
    those of :func:`export_onnx` (float32 ``images`` -> ``logits``). Raises ValueError when the int8 logits differ
    from PyTorch's by more than ``tolerance`` times their spread on the check images.
    """
    method = method or ("static" if calibration is not None else "dynamic")
    if method not in METHODS:
        raise UserError(f"quantization method {method!r}; expected one of {', '.join(METHODS)}")
    if method == "static" and calibration is None:
        raise UserError("static int8 quantization needs calibration images (--calibration SPEC in the CLI)")
    if method == "dynamic" and calibration is not None:
        raise UserError("dynamic int8 quantization uses no calibration images; pass method='static' to use them")
    if not 0 < tolerance:
        raise UserError(f"tolerance must be positive, got {tolerance}")
    if check_images < 1:
        raise UserError(f"check_images must be positive, got {check_images}")
    out = Path(path)
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder; give the .onnx file name to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    size = None
    if image_size is not None:
        size = as_hw(image_size)
    want = size or tuple(model.config.image_size)
    calib = None
    if calibration is not None:
        shape = tuple(calibration.shape)
        if len(shape) != 4 or not shape[0] or shape[1:] != (model.config.in_chans, *want):
            raise UserError(f"calibration images have shape {tuple(calibration.shape)}; expected (N, "
                             f"{model.config.in_chans}, {want[0]}, {want[1]}) at the export resolution")
        calib = calibration.detach().float().cpu().numpy()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".vitkit-fp32-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        res = export_onnx(model, fp32, size, opset=opset, exporter=exporter)
        fp32_bytes = fp32.stat().st_size
        quantize_onnx_file(fp32, out, method, calibration=calib)
    m = _at_size(model, res.image_size)
    write_metadata(out, m.config)  # the quantizer may not carry metadata_props over: state them again
    if calib is not None:
        check, where = torch.from_numpy(calib[:check_images]), "calibration images"
    else:
        h, w = res.image_size
        gen = torch.Generator().manual_seed(1)
        check, where = torch.randn(check_images, m.config.in_chans, h, w, generator=gen), "random images"
    got = _run(out, check)
    with torch.no_grad():
        ref = m(check).float().numpy()
    diff = float(np.max(np.abs(got.astype(np.float64) - ref)))
    spread = float(np.ptp(ref))
    agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
    if spread > 0 and diff > tolerance * spread:
        raise ValueError(f"{out}: int8 ({method}) logits differ from PyTorch's by {diff:.3g} (max abs), more than "
                         f"{tolerance:g} x their spread {spread:.3g} on {len(check)} {where}")
    return QuantizeResult(path=out, method=method, image_size=res.image_size, exporter=res.exporter,
                          max_abs_diff=diff, logit_spread=spread, top1_agreement=agree, num_checked=len(check),
                          checked_on=where, bytes=out.stat().st_size, fp32_bytes=fp32_bytes)


def _at_size(model: nn.Module, size: tuple[int, int]) -> nn.Module:
    import copy

    m = copy.deepcopy(model).float().eval()
    if tuple(m.config.image_size) != tuple(size):
        m.set_image_size(size)
    return m


def _run(path: Path, images: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: images.numpy()})[0]
