"""``vitkit demo``: the end-to-end main job (build, save, load, classify) with no download."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="end-to-end run on scikit-learn's bundled digits, no download")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    from .. import create_model, load_model, save_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    x = torch.from_numpy(digits.images[:16].astype(np.float32) / 16.0 * 2 - 1)  # [-1, 1]
    x = x.unsqueeze(1).repeat(1, 3, 1, 1).repeat_interleave(2, -1).repeat_interleave(2, -2)  # 16x16 RGB
    model = create_model("ViT-Ti_16", num_classes=10, image_size=16, patch_size=4, num_layers=2)
    path = save_model(model, out / "model.safetensors")
    loaded = load_model(path)
    with torch.no_grad():
        pred = loaded(x).argmax(-1)
    summary = {"checkpoint": str(path), "predictions": pred.tolist(), "labels": digits.target[:16].tolist()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0
