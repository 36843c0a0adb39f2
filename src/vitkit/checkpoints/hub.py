"""Hugging Face Hub verbs: ``save_pretrained``, ``from_pretrained``, ``push_to_hub`` (also as model methods).

``save_pretrained(model, DIR)`` writes the folder a Hub repository holds:

- where transformers has the architecture (a plain ViT pooling its class token; :func:`~vitkit.checkpoints.hf.
  hf_config_dict` decides), a transformers ``save_pretrained`` folder (``config.json``, ``model.safetensors``,
  ``preprocessor_config.json``) that ``ViTForImageClassification.from_pretrained`` loads with the same logits;
- otherwise (hybrids, convolutional stems, gap, BiT ResNets) a vitkit folder: ``model.safetensors`` in vitkit's
  own format (config and content hash in its metadata) and a ``config.json`` naming the library;

and either way a model card (``README.md``: architecture, training data, result, license). ``load_model`` and
``from_pretrained`` read both kinds of folder, locally or as ``hf-hub:ORG/NAME``; ``push_to_hub`` uploads the
folder through ``huggingface_hub`` (its token, cache and endpoint settings).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UserError
from .errors import CheckpointError
from .hf import hf_config_dict, save_hf
from .native import save_native

VITKIT_FOLDER_KEY = "vitkit_config"  # config.json of a vitkit folder: {"library_name": "vitkit", KEY: {...}}


def _card(model: nn.Module, kind: str, card: Mapping[str, Any]) -> str:
    cfg = model.config  # type: ignore[attr-defined]
    params = sum(p.numel() for p in model.parameters())
    license_ = card.get("license", "other")
    arch = (f"{cfg.name}: patch {cfg.patch_size[0]}x{cfg.patch_size[1]}, width {cfg.hidden_size}, depth "
            f"{cfg.num_layers}, {cfg.num_heads} heads, MLP {cfg.mlp_dim}" if cfg.transformer else cfg.name)
    if cfg.resnet is not None:
        arch += f", BiT ResNet stem (stages {list(cfg.resnet.num_layers)}, width x{cfg.resnet.width_factor})"
    lines = [
        "---", f"library_name: {'transformers' if kind == 'transformers' else 'vitkit'}",
        "pipeline_tag: image-classification", f"license: {license_}", "tags: [vision-transformer, vitkit]", "---",
        "", f"# {card.get('title', cfg.name)}", "",
        "A Vision Transformer (Dosovitskiy et al., 2020) saved by vitkit.", "",
        "## Architecture", "", f"- {arch}", f"- {params:,} parameters; input {cfg.in_chans}x{cfg.image_size[0]}x"
        f"{cfg.image_size[1]}, normalised as (x / 255 - {list(cfg.mean)}) / {list(cfg.std)}",
        f"- classifier: {cfg.classifier}, {cfg.num_classes} classes" + (
            f" ({', '.join(cfg.class_names[:10])}{', ...' if len(cfg.class_names) > 10 else ''})"
            if cfg.class_names else ""),
        "", "## Training data", "", str(card.get("data", "Not stated (pass card={'data': ...}).")),
        "", "## Result", "", str(card.get("result", "Not stated (pass card={'result': ...}).")),
        "", "## License", "", "Not stated (pass card={'license': ...})." if license_ == "other" else license_,
        "", "## Use", "", "```python", "import vitkit",
        "model = vitkit.load_model('hf-hub:ORG/NAME')  # or transformers' ViTForImageClassification"
        if kind == "transformers" else "model = vitkit.load_model('hf-hub:ORG/NAME')",
        "x = vitkit.data.create_transform(model)(image)[None]", "logits = model(x)", "```", "",
    ]
    return "\n".join(lines)


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike[str], *,
                    card: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` as a Hub-ready folder (module docstring); ``card``: ``data``, ``result``, ``license``,
    ``title`` for the model card. Returns the folder."""
    cfg = model.config  # type: ignore[attr-defined]
    out = Path(save_directory)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; save_pretrained writes a folder")
    try:
        hf_config_dict(cfg)
        kind = "transformers"
    except CheckpointError:
        kind = "vitkit"
    if kind == "transformers":
        save_hf(model, out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        save_native(model, out / "model.safetensors")
        doc = {"library_name": "vitkit", VITKIT_FOLDER_KEY: json.loads(cfg.to_json())}
        (out / "config.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "README.md").write_text(_card(model, kind, card or {}))
    return out


def from_pretrained(source: str | os.PathLike[str], **overrides: Any) -> nn.Module:
    """A folder :func:`save_pretrained` wrote (or any ``load_model`` source), or a Hub repository id
    (``ORG/NAME[@REVISION]``, read as ``hf-hub:ORG/NAME``)."""
    from .api import load_model

    text = os.fspath(source)
    looks_like_repo = text.count("/") == 1 and not Path(text).exists() and "://" not in text and ":" not in text
    return load_model(f"hf-hub:{text}" if looks_like_repo else text, **overrides)


def push_to_hub(model: nn.Module, repo_id: str, *, private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload model saved by vitkit", card: Mapping[str, Any] | None = None,
                revision: str | None = None) -> str:
    """Upload :func:`save_pretrained`'s folder to the Hub repository ``repo_id`` (created if missing); returns the
    commit URL. Authentication, endpoint and proxies are huggingface_hub's (``HF_TOKEN``, ``huggingface-cli login``).
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="vitkit-push-") as tmp:
        folder = save_pretrained(model, Path(tmp) / "model", card=card)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                                 revision=revision, repo_type="model")
    return str(getattr(info, "commit_url", info))
