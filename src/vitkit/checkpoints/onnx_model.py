"""A vitkit ONNX export as a model: ``load_model("vit.onnx")`` runs it with onnxruntime.

``vitkit export`` writes the model's config (with its class names), mean/std, image size and the evaluation
preprocessing into the file's ``metadata_props``; this reader rebuilds the :class:`~vitkit.models.ViTConfig` from
them, so ``vitkit eval``, ``predict`` and ``fewshot`` feed an ONNX file exactly what they feed its PyTorch source.
The graph has the logits as its first output and, where the model has a head, the pre-logits features as
``features`` (few-shot). An ONNX file vitkit did not write says nothing of its normalisation or classes, so it is
refused rather than guessed at. onnxruntime is an optional extra (``vitkit[export]``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..models.config import ViTConfig
from .errors import CheckpointError

META_CONFIG = "vitkit_config"  # ViTConfig JSON; the other keys are for people and other tools


def is_onnx(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".onnx"


class OnnxModel(nn.Module):
    """An ONNX file behind the model API the evaluation code uses: ``config``, ``forward`` (logits),
    ``forward_features`` + ``forward_head(pre_logits=True)`` (features). CPU, float32; no parameters."""

    fixed_precision = "fp32"  # the commands run it as exported, whatever --precision "auto" would pick

    def __init__(self, path: str | os.PathLike[str], config: ViTConfig, session: Any):
        super().__init__()
        self.path = Path(path)
        self.config = config
        self._session = session
        self._input = session.get_inputs()[0].name
        self._outputs = [o.name for o in session.get_outputs()]

    def _run(self, x: torch.Tensor, output: str) -> torch.Tensor:
        if output not in self._outputs:
            raise UserError(f"{self.path}: the graph has no '{output}' output (exported by an older vitkit); export "
                            "it again with `vitkit export`")
        h, w = self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.config.in_chans, h, w):
            raise UserError(f"{self.path}: the ONNX graph takes (batch, {self.config.in_chans}, {h}, {w}) inputs; "
                            f"got {tuple(x.shape)}")
        arr = x.detach().float().cpu().numpy()
        out = self._session.run([output], {self._input: np.ascontiguousarray(arr)})[0]
        return torch.from_numpy(out).to(x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self._outputs[0])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-logits features (what ``forward_head(..., pre_logits=True)`` returns)."""
        return self._run(x, "features" if self.config.num_classes else self._outputs[0])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if not pre_logits:
            raise UserError(f"{self.path}: an ONNX graph runs whole; call the model for logits")
        return x

    def reset_head(self, *args: Any, **kwargs: Any) -> None:
        raise UserError(f"{self.path}: an ONNX graph is fixed; its head cannot be changed (export the model again)")

    def set_image_size(self, image_size: tuple[int, int], method: str | None = None) -> None:
        if tuple(image_size) != tuple(self.config.image_size):
            h, w = self.config.image_size
            raise UserError(f"{self.path}: an ONNX file is fixed at its export resolution {h}x{w}; export it again "
                            f"with --image-size for {image_size[0]}x{image_size[1]}")


def read_onnx(path: str | os.PathLike[str], verify: bool = True, **hints: Any) -> nn.Module:
    """The :class:`OnnxModel` of a file ``vitkit export`` wrote (``verify`` and hints have nothing to act on)."""
    p = Path(path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(f"{p}: running ONNX files needs onnxruntime: pip install 'vitkit[export]'") from None
    if hints:
        raise UserError(f"{p}: an ONNX graph is fixed; {', '.join(sorted(hints))} cannot be changed (export again)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    try:
        session = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
        raise CheckpointError(f"{p}: onnxruntime cannot read the file ({str(e).splitlines()[0][:200]})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if META_CONFIG not in meta:
        raise CheckpointError(f"{p}: an ONNX file without vitkit's metadata (its normalisation, size and classes are "
                              "unknown); export the model with `vitkit export`")
    try:
        config = ViTConfig.from_dict(json.loads(meta[META_CONFIG]))
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{p}: metadata {META_CONFIG}: {e}") from None
    return OnnxModel(p, config, session).eval()
