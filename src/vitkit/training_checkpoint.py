"""The training-checkpoint format, in one place: ``vitkit train``'s resumable checkpoints
``OUT/checkpoints/step_XXXXXXXX.pt`` (file names, write, read, detect).

It sits below both :mod:`vitkit.train` (which decides *what* a checkpoint holds: ``train.state``) and
:mod:`vitkit.checkpoints` (which builds a model out of one: ``checkpoints.training``), so neither reaches
into the other for the format.

A checkpoint is a ``torch.save`` of plain containers of tensors, numbers and strings (model,
optimiser, EMA, grad-scaler state, RNG states as uint8 tensors, data position, step), read
back with ``torch.load(weights_only=True)``: nothing is unpickled that could run code. The
write is atomic (temporary file in the same folder, fsync, rename, fsync of the folder), so a
kill at any moment leaves either the previous set of checkpoints or the new one; the last
``keep_last`` are kept, and also the newest *good* one (``train.health``), named in
``checkpoints/good.json``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .fileio import atomic_write_text, fsync_dir, writing

FOLDER = "checkpoints"  # under the run's --out
_NAME = re.compile(r"^step_(\d{8})\.pt$")
PATTERN = "step_*.pt"  # what _NAME matches, as a glob (for messages and people)


def checkpoint_path(out: Path, step: int) -> Path:
    return Path(out) / FOLDER / f"step_{step:08d}.pt"


def remove_stale_temporaries(out: Path) -> None:
    """Delete the temporary files of saves cut short (SIGKILL between write and rename)."""
    folder = Path(out) / FOLDER
    if folder.is_dir():
        for stale in folder.glob(".step_*.tmp*"):  # atomic_torch_save's temporary name
            stale.unlink(missing_ok=True)


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    folder = Path(out) / FOLDER
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out: Path) -> Path | None:
    found = list_checkpoints(out)
    return found[-1][1] if found else None


def atomic_torch_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")  # remove_stale_temporaries() knows this name
    try:
        with writing(path), open(tmp, "wb") as f:  # a full disk: DiskFull naming the checkpoint
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def last_good_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint that met the good-checkpoint rule (``checkpoints/good.json``), if it exists."""
    try:
        name = json.loads((Path(out) / FOLDER / "good.json").read_text())["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = Path(out) / FOLDER / str(name)
    return path if _NAME.match(path.name) and path.is_file() else None


def save_checkpoint(out: Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Write ``state`` for ``step`` atomically and delete all but the newest ``keep_last`` (and the
    newest good one: ``state["meta"]["good"]``)."""
    path = checkpoint_path(out, step)
    atomic_torch_save(state, path)
    folder = Path(out) / FOLDER
    if state.get("meta", {}).get("good"):
        atomic_write_text(folder / "good.json", json.dumps({"step": step, "file": path.name}))
    good = last_good_checkpoint(out)
    for _, old in list_checkpoints(out)[:-keep_last]:
        if old != good:
            old.unlink(missing_ok=True)
    # A readable sidecar: what the checkpoint holds, for people and scripts.
    meta = {"step": step, "file": path.name, **{k: v for k, v in state.get("meta", {}).items()
                                                  if isinstance(v, (int, float, str, bool))}}
    atomic_write_text(folder / "latest.json", json.dumps(meta, indent=1), durable=False)
    return path


def _torch_load(path: Path, mmap: bool) -> Any:
    # weights_only: plain containers of tensors, numbers and strings; nothing that could run code.
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return _torch_load(path, mmap=False)
    except Exception as e:  # a truncated or foreign file: say which one
        raise UserError(f"{path}: not a readable vitkit training checkpoint ({type(e).__name__}: {e})") from e


def is_training_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a training checkpoint (a ``.pt`` holding ``model``, ``optimizer`` and ``meta.step``)."""
    if not (path.is_file() and path.suffix == ".pt"):
        return False
    try:
        obj = _torch_load(path, mmap=True)
    except Exception:  # noqa: BLE001 - not ours (other formats say why they cannot read it)
        return False
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    return isinstance(meta, Mapping) and "model" in obj and "optimizer" in obj and "step" in meta


def rng_state() -> dict[str, Any]:
    import random

    import numpy as np

    st: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state()
    st["python"] = json.dumps(random.getstate())
    np_state = np.random.get_state()
    st["numpy"] = {"keys": torch.from_numpy(np_state[1].astype("int64")), "pos": int(np_state[2]),
                   "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])
    if "python" in st:
        v = json.loads(st["python"])
        random.setstate((v[0], tuple(v[1]), v[2]))
    if "numpy" in st:
        n = st["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
