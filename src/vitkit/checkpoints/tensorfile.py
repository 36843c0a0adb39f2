"""Reading tensor files and small JSON configs safely: safetensors, or ``torch.load(weights_only=True)``
with the zip archive's CRC-32 checked, never arbitrary unpickling; every failure is a
:class:`CheckpointError` naming the file. Shared by the Hugging Face, timm and training-checkpoint readers.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .errors import CheckpointError


def _unpickler_detail(e: Exception) -> str:
    # torch's message advises weights_only=False (unsafe); keep only what the unpickler objected to.
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", text, re.S)
    detail = " ".join((m.group(1) if m else text.strip().splitlines()[0] if text.strip() else "").split())
    return detail[:200] or type(e).__name__


def check_zip_crc(path: Path) -> None:
    """A ``torch.save`` zip archive stores a CRC-32 per record that ``torch.load`` never checks;
    checking it (one more read of the file, ~1 GB/s) turns flipped bytes into an error."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    # NotImplementedError: zipfile's answer to a damaged version or compression-method field.
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error, NotImplementedError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch zip archive ({type(e).__name__}: {e})") from e
    if bad is not None:
        raise CheckpointError(f"{path}: record {bad!r} fails its CRC-32 check: the file is corrupt; copy it again")


def read_tensor_file(path: str | os.PathLike[str], mmap: bool = False, verify: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``torch.save`` file, never unpickling arbitrary objects.

    ``verify``: also check the CRC-32 of every record of a zip-format ``torch.save`` file (safetensors
    files have no checksum to check).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if verify and zipfile.is_zipfile(path):  # the legacy (pre-1.6) format has no checksum
        check_zip_crc(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refusing to unpickle: not a plain state dict of tensors ({_unpickler_detail(e)}); "
            "loading it any further could run arbitrary code"
        ) from e
    except Exception as e:  # noqa: BLE001 - garbage bytes make torch's legacy reader raise anything (KeyError, ...)
        if mmap:  # old (non-zip) torch.save files cannot be memory-mapped
            return read_tensor_file(path, mmap=False)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model", "module"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of named tensors")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {', '.join(map(str, bad[:10]))}")
    # weights_only still admits sparse, quantized and meta tensors: none of them is a ViT weight.
    odd = [f"{k} ({'quantized' if v.is_quantized else v.layout}, {v.device.type})" for k, v in obj.items()
           if v.layout != torch.strided or v.device.type != "cpu" or v.is_quantized]
    if odd:
        raise CheckpointError(f"{path}: tensors that are not dense CPU tensors: {', '.join(map(str, odd[:10]))}")
    out = {str(k): v for k, v in obj.items()}
    if out and all(k.startswith("module.") for k in out):  # saved from DistributedDataParallel
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def peek_keys(path: Path, strict: bool = False) -> list[str]:
    """Tensor names of a state-dict file ([] if it is none); ``strict``: raise when unreadable."""
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
        except (SafetensorError, OSError, ValueError) as e:
            if strict:
                raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
            return []
    if path.suffix in TORCH_SUFFIXES:
        try:
            return list(read_tensor_file(path, mmap=True))
        except CheckpointError:
            if strict:
                raise
            return []
    return []


# A config.json is a few kB; a bigger one is not a config (and must not be read into memory whole).
MAX_JSON_BYTES = 16 * 2**20


def read_json(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise CheckpointError(f"{path}: {size} bytes; a JSON config of at most {MAX_JSON_BYTES} bytes is expected")
        d = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: unreadable JSON ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: holds a JSON {type(d).__name__}; expected an object of fields")
    return d
