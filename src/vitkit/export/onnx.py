"""ONNX export at a fixed resolution, verified against PyTorch with onnxruntime.

The position embeddings are resampled to the export resolution *before* tracing
(``set_image_size`` on a copy), so the graph holds the resampled table as a constant and no
interpolation op; the batch dimension stays dynamic. torch >= 2.9 exports through
``torch.export`` (the "dynamo" exporter, which needs ``onnxscript``); if that path fails the
TorchScript exporter is tried, and the result is verified either way.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import warnings
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..image_size import as_hw

TOLERANCE = 1e-4


@dataclass
class ExportResult:
    path: Path
    image_size: tuple[int, int]
    exporter: str
    max_abs_diff: float
    input_name: str = "images"
    output_name: str = "logits"
    # False when PyTorch's logits are the same for every input (e.g. an untrained zero head): then the
    # comparison only checked the head bias, and a faithful graph is not demonstrated.
    input_dependent: bool = True
    # Why exporter="auto" used TorchScript instead of the dynamo exporter (onnxscript missing, or the dynamo
    # exporter's error); None when dynamo ran or TorchScript was asked for.
    fallback_reason: str | None = None


def _needs(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"ONNX export needs the '{module}' package; install it with "
            "`pip install onnx onnxruntime onnxscript` (or vitkit's [test] extra)"
        )


class _LogitsAndFeatures(nn.Module):
    """The exported graph: logits, and the pre-logits features (few-shot on the ONNX file) as a second output."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return self.model.get_classifier()(features), features


def _outputs(model: nn.Module) -> list[str]:
    return ["logits", "features"] if model.config.num_classes else ["logits"]


def onnx_metadata(cfg: Any) -> dict[str, str]:
    """``metadata_props`` of an export: the config (read back by :mod:`vitkit.checkpoints.onnx_model`) and, for other
    tools, the class names, normalisation, image size and evaluation preprocessing."""
    from ..data.preprocess import default_preprocess

    return {
        "vitkit_config": cfg.to_json(), "class_names": json.dumps(list(cfg.class_names or ())),
        "mean": json.dumps(list(cfg.mean)), "std": json.dumps(list(cfg.std)),
        "image_size": json.dumps(list(cfg.image_size)), "input_layout": "NCHW float32, (x / 255 - mean) / std",
        "preprocessing": default_preprocess(cfg.mean, cfg.std, cfg.in_chans),
    }


def write_metadata(path: str | os.PathLike[str], cfg: Any) -> None:
    """Store :func:`onnx_metadata` in the file's ``metadata_props`` (rewritten in place, atomically)."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, onnx_metadata(cfg))
    tmp = Path(f"{path}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def _export(model: nn.Module, example: torch.Tensor, path: Path, opset: int | None, dynamo: bool) -> None:
    names = _outputs(model)
    if len(names) == 2:
        # in the model's mode: the TorchScript exporter restores the top module's mode afterwards, recursively, and a
        # fresh wrapper's default (training) would leave the model's BatchNorm and dropout in training mode
        model = _LogitsAndFeatures(model).train(model.training)
    kwargs: dict = {"input_names": ["images"], "output_names": names}
    if opset is not None:
        kwargs["opset_version"] = opset
    if dynamo:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
        kwargs["external_data"] = False
        # The dynamo exporter narrates its steps on stdout and warns about absent torchvision ops.
        log = logging.getLogger("torch.onnx._internal.exporter._registration")
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            with redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (example,), str(path), dynamo=True, verbose=False, **kwargs)
        finally:
            log.setLevel(level)
    else:
        kwargs["dynamic_axes"] = {"images": {0: "batch"}, **{n: {0: "batch"} for n in names}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings from the input checks (constant at a fixed size)
            torch.onnx.export(model, (example,), str(path), dynamo=False, **kwargs)


def verify_onnx(model: nn.Module, path: str | os.PathLike[str], inputs: torch.Tensor) -> tuple[float, bool]:
    """(max absolute difference between onnxruntime's and PyTorch's outputs on ``inputs``,
    whether PyTorch's outputs vary across the inputs at all)."""
    _needs("onnxruntime")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {sess.get_inputs()[0].name: inputs.numpy()})[0]
    with torch.no_grad():
        want = model(inputs).float().numpy()
    if got.shape != want.shape:
        raise ValueError(f"{path}: ONNX output shape {got.shape} differs from PyTorch's {want.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    return diff, bool(len(want) > 1 and np.ptp(want, axis=0).max() > 0)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    image_size: int | tuple[int, int] | None = None,
    *,
    opset: int | None = None,
    exporter: str = "auto",
    check_batch: int = 2,
    tolerance: float = TOLERANCE,
) -> ExportResult:
    """Write ``model`` as ONNX for ``image_size`` inputs (default: the model's) and verify it.

    Input ``images`` (batch, C, H, W) float32, normalised as ``model.config`` says; output
    ``logits`` (batch, classes). ``exporter``: "auto" (dynamo, falling back to TorchScript),
    "dynamo" or "torchscript". Raises ValueError if onnxruntime's logits differ from PyTorch's by
    more than ``tolerance`` (max absolute difference) on a random batch of ``check_batch`` images.
    """
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise UserError(f"exporter={exporter!r}; expected auto, dynamo or torchscript")
    _needs("onnx")
    out = Path(path)
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder; give the .onnx file name to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(model).float().eval()
    if image_size is not None:
        size = as_hw(image_size)
        if tuple(m.config.image_size) != size:
            m.set_image_size(size)  # validates divisibility by the patch size; resamples posemb
    cfg = m.config
    h, w = cfg.image_size
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(check_batch, cfg.in_chans, h, w, generator=gen)

    # Written under a temporary name and renamed into place once verified: an export stopped half-way (Ctrl-C) or
    # failed leaves no .onnx that looks finished.
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}{out.suffix}")
    try:
        res = _export_verified(m, example, gen, tmp, out, opset, exporter, check_batch, tolerance)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return res


def _export_verified(m: nn.Module, example: torch.Tensor, gen: torch.Generator, tmp: Path, out: Path,
                     opset: int | None, exporter: str, check_batch: int, tolerance: float) -> ExportResult:
    cfg = m.config
    h, w = cfg.image_size
    errors = []
    used = None
    order = {"auto": [True, False], "dynamo": [True], "torchscript": [False]}[exporter]
    for dynamo in order:
        if dynamo:
            try:
                _needs("onnxscript")
            except ValueError as e:
                errors.append(str(e))
                continue
        try:
            _export(m, example, tmp, opset, dynamo)
            used = "dynamo" if dynamo else "torchscript"
            break
        except Exception as e:  # noqa: BLE001 - exporter internals raise many types; report them in one line
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {e.__class__.__name__}: {e}")
    if used is None:
        raise ValueError(f"ONNX export of {cfg.name!r} failed: " + " | ".join(str(e).splitlines()[0] for e in errors))
    check = torch.randn(check_batch, cfg.in_chans, h, w, generator=gen)
    diff, varies = verify_onnx(m, tmp, check)
    if not diff <= tolerance:
        raise ValueError(
            f"{out}: onnxruntime's logits differ from PyTorch's by {diff:.3g} (max abs), more than {tolerance:g}"
        )
    write_metadata(tmp, cfg)  # before the rename: what appears at out is complete
    fallback = errors[0].splitlines()[0] if exporter == "auto" and used == "torchscript" and errors else None
    return ExportResult(path=out, image_size=(h, w), exporter=used, max_abs_diff=diff, input_dependent=varies,
                        fallback_reason=fallback)
