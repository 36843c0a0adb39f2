"""One way to name weights: every place that takes a model (``load_model``, ``create_model(...,
pretrained=...)``, each command's ``--model``, training's ``model.init=``) passes it through
:func:`resolve`, which turns it into a local file or folder.

A source is, in this order:

- a local file or folder (any format ``load_model`` reads); a *run folder* of ``vitkit train``
  (``config.yaml`` / ``checkpoints/``) stands for its ``model.safetensors``, else its newest
  ``checkpoints/step_N.pt``;
- an ``http://`` / ``https://`` URL, downloaded once into the cache (:mod:`.download`);
- ``hf-hub:ORG/NAME[@REVISION]``: a Hugging Face Hub repository (a transformers ViT or a timm
  model), fetched by ``huggingface_hub`` into its own cache with its token handling
  (``HF_TOKEN`` / ``huggingface-cli login``) and offline mode (``HF_HUB_OFFLINE=1``, or
  ``VITKIT_OFFLINE=1``); each LFS file is re-hashed against the SHA-256 the Hub published (the
  cache names the blob by it) on every use;
- a name of the official catalogue (:mod:`.catalogue`, ``vitkit models --pretrained``), e.g.
  ``imagenet21k/ViT-B_16``, downloaded from ``$VITKIT_WEIGHTS_URL`` into the cache.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..download import DownloadError, cache_path, is_url, offline, sha256_file
from ..download import download as _download
from .catalogue import Entry, looks_like_catalogue_name, lookup
from .errors import CheckpointDownloadError, CheckpointError

HF_PREFIX = "hf-hub:"
_HF_RE = re.compile(r"^hf-hub:(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")
_HF_WEIGHTS = ["model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors"]
_HF_META = ["config.json", "preprocessor_config.json"]


@dataclass
class Resolved:
    """A source turned into a local ``path``; ``hints`` are config fields the source states
    (a catalogue entry's model name); ``entry`` the catalogue entry, if any."""

    source: str
    path: Path
    hints: dict[str, Any] = field(default_factory=dict)
    entry: Entry | None = None


def download(url: str, **kw: Any) -> Path:
    """:func:`vitkit.download.download` for weights: its errors as CheckpointDownloadError (a CheckpointError)."""
    try:
        return _download(url, **kw)
    except DownloadError as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointDownloadError(str(e)) from e


def run_folder_weights(folder: Path) -> Path | None:
    """A run folder's ``model.safetensors``, else its newest ``checkpoints/step_N.pt``; None if the
    folder is not a run folder."""
    if not ((folder / "config.yaml").is_file() or (folder / "checkpoints").is_dir()):
        return None
    final = folder / "model.safetensors"
    if final.is_file():
        return final
    from ..training_checkpoint import FOLDER, PATTERN, latest_checkpoint

    newest = latest_checkpoint(folder)
    if newest is None:
        raise CheckpointError(f"{folder}: a run folder without model.safetensors or {FOLDER}/{PATTERN} "
                              "(the run saved nothing yet)")
    return newest


def vitkit_folder_weights(folder: Path) -> Path | None:
    """The weights of a folder ``save_pretrained`` wrote in vitkit's own format (its config.json says
    ``"library_name": "vitkit"``), or None for any other folder."""
    cfg = folder / "config.json"
    try:
        small = cfg.is_file() and cfg.stat().st_size < 1 << 20
        ours = small and json.loads(cfg.read_text())["library_name"] == "vitkit"
    except (OSError, ValueError, KeyError, TypeError, RecursionError):  # any config.json: a hostile one too
        return None
    return folder / "model.safetensors" if ours and (folder / "model.safetensors").is_file() else None


def _hf_cache_dir() -> str:
    # Read at each call (huggingface_hub reads its environment once, at import).
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return os.path.join(home, "hub")


def verify_hub_files(folder: Path) -> None:
    """Re-hash every LFS file of a Hub snapshot against the SHA-256 the Hub published for it
    (the cache names each LFS blob by it); a mismatch is a corrupt cache."""
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        blob = Path(os.path.realpath(f))
        if re.fullmatch(r"[0-9a-f]{64}", blob.name) and sha256_file(blob) != blob.name:
            raise CheckpointError(
                f"{f}: content does not match the SHA-256 the Hub published ({blob.name}); the Hugging Face "
                f"cache is corrupt: delete {blob} and load again"
            )


def resolve_hf_hub(source: str) -> Path:
    m = _HF_RE.match(source)
    if not m:
        raise CheckpointError(f"{source}: expected hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    repo, rev = m["repo"], m["rev"]
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as e:  # a runtime dependency; only a broken install lacks it
        raise CheckpointError(f"{source}: needs huggingface_hub ({e})") from e
    cache = _hf_cache_dir()
    local_only = offline()

    def fetch(patterns: list[str]) -> Path:
        return Path(snapshot_download(repo, revision=rev, cache_dir=cache, local_files_only=local_only,
                                      allow_patterns=patterns))

    try:
        folder = fetch(_HF_META + _HF_WEIGHTS)
        if not any((folder / w).is_file() for w in _HF_WEIGHTS[:2]) and not list(folder.glob(_HF_WEIGHTS[2])):
            folder = fetch(_HF_META + ["pytorch_model.bin"])  # older repos: torch.load(weights_only=True)
    except LocalEntryNotFoundError as e:
        raise CheckpointError(
            f"{source}: not in the Hugging Face cache {cache} and offline (HF_HUB_OFFLINE/VITKIT_OFFLINE)"
            if local_only else f"{source}: cannot reach the Hugging Face Hub and not cached in {cache} ({e})"
        ) from e
    except (HfHubHTTPError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{source}: {type(e).__name__}: {first}") from e
    verify_hub_files(folder)
    return folder


def resolve(source: str | os.PathLike[str], *, progress: bool = True, force: bool = False) -> Resolved:
    """The local file or folder a source names (downloading it if needed; ``force``: again); see the module
    docstring. A catalogue name is cached under its official URL's path whichever server (``VITKIT_WEIGHTS_URL``)
    it came from, so that it is found later without the variable."""
    text = os.fspath(source)
    p = Path(text)
    if not is_url(text) and not text.startswith(HF_PREFIX) and p.exists():
        if p.is_dir():
            weights = run_folder_weights(p) or vitkit_folder_weights(p)
            if weights is not None:
                return Resolved(text, weights)
        return Resolved(text, p)
    if is_url(text):
        return Resolved(text, download(text, progress=progress, force=force))
    if text.startswith(HF_PREFIX):
        folder = resolve_hf_hub(text)
        return Resolved(text, vitkit_folder_weights(folder) or folder)
    entry = lookup(text)
    if entry is not None:
        path = download(entry.url, progress=progress, force=force, dest=cache_path(entry.official_url))
        return Resolved(text, path, {"name": entry.model}, entry)
    raise FileNotFoundError(_not_found(text))


def _not_found(text: str) -> str:
    from ..errors import did_you_mean
    from .catalogue import CATALOGUE

    msg = f"checkpoint not found: {text}"
    near = did_you_mean(text.removeprefix("gs://vit_models/").removesuffix(".npz"), CATALOGUE)
    if looks_like_catalogue_name(text):
        return msg + f"{near}; not a catalogue name either: `vitkit models --pretrained` lists them"
    from ..models.registry import canonical_name

    try:
        name = canonical_name(text)
    except KeyError:
        name = None
    if name is not None:  # a model name ("ViT-B/16") before a near catalogue name: it says what was meant
        from .catalogue import default_for_model

        entry = default_for_model(name)
        hint = f"; its pre-trained weights: {entry.name}" if entry else ""
        return msg + f" ({text} is a model name: create_model({name!r}) builds it{hint})"
    if near and "/" in text:
        return msg + f"{near}; not a catalogue name either: `vitkit models --pretrained` lists them"
    if re.fullmatch(r"[A-Za-z][\w+-]*", text):  # a bare word (no folder, no suffix) was meant as a model name
        from ..models.registry import list_models

        return msg + (f" (no such file, and unknown model {text!r}{did_you_mean(text, list_models())}; "
                      "`vitkit models` lists the models, `vitkit models --pretrained` the weights)")
    if near and "/" in text:  # a misspelt catalogue prefix (imagenet21/ViT-B_16)
        return msg + f"{near}; not a catalogue name either: `vitkit models --pretrained` lists them"
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) and not text.startswith((".", "/")):
        return msg + f" (a Hugging Face repository? write hf-hub:{text})"
    return msg + " (a file, folder, run folder, http(s) URL, hf-hub:ORG/NAME or catalogue name)"
