"""Shared by ``test_fuzz.py`` and ``scripts/fuzz_checkpoints.py``: pristine tiny files of the four
checkpoint formats, mutations of them, and a worker process that loads each case under a memory
limit (``RLIMIT_AS``) and a time limit (``SIGALRM``) and says how it ended.

Outcomes: ``error`` (a :class:`CheckpointError`; ``named`` tells whether the message names the
file), ``equal`` (the model equals the one loaded from the pristine file: config and every tensor),
``differs`` (it loaded, but not equal: only acceptable where the format has no checksum),
``crash`` (any other exception), ``timeout``.

Run as a script it is the worker: ``python fuzz_harness.py MANIFEST.json RESULTS.jsonl``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any

# Every case runs in a process limited to this much address space: importing torch maps ~0.8 GB,
# a tiny model needs a few MB; a config that makes the loader allocate for its own sake dies here.
MEMORY_LIMIT = 2 * 2**30
TIME_LIMIT_S = 20  # per case: a hang guard on a loaded 2-core machine, not a benchmark

TINY = dict(name="tiny", patch_size=4, hidden_size=64, mlp_dim=32, num_heads=1, num_layers=2, image_size=8,
            num_classes=3)
# What each pristine file is, and which kind of reader sees it.
FORMATS = {"vitkit": "tiny.safetensors", "npz": "tiny.npz", "hf": "hf", "timm_pth": "timm.pth",
           "timm_st": "timm.safetensors", "train": "step_00000001.pt"}


def make_pristine(root: Path) -> dict[str, Path]:
    """The same tiny model written in every format (random weights, non-zero head)."""
    import torch

    import vitkit
    from vitkit.checkpoints.hf import save_hf
    from vitkit.checkpoints.timm import save_timm
    from vitkit.models.config import ViTConfig
    from vitkit.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(ViTConfig(**TINY))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    root.mkdir(parents=True, exist_ok=True)
    paths = {k: root / v for k, v in FORMATS.items()}
    vitkit.save_model(model, paths["vitkit"])
    vitkit.save_model(model, paths["npz"])
    save_hf(model, paths["hf"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tanh-GELU model under timm's exact-GELU default: intended here
        save_timm(model, paths["timm_pth"])
        save_timm(model, paths["timm_st"])
    # A `vitkit train` checkpoint (checkpoints.training reads the model out of it).
    meta = {"step": 1, "model_config": model.config.to_json()}
    torch.save({"model": model.state_dict(), "optimizer": {}, "meta": meta}, paths["train"])
    return paths


# -- safetensors header surgery ------------------------------------------------------------------
def st_split(data: bytes) -> tuple[dict[str, Any], bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def st_join(header: dict[str, Any], body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def st_header_end(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


# -- the worker ---------------------------------------------------------------------------------
def _equal(a: Any, b: Any) -> tuple[bool, str]:
    import torch

    ca, cb = a.config.to_dict(), b.config.to_dict()
    if ca != cb:
        return False, "config differs: " + ", ".join(f"{k}: {ca[k]!r} vs {cb.get(k)!r}" for k in ca
                                                       if ca[k] != cb.get(k))[:300]
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return False, "different tensors"
    bad = [k for k in sa if sa[k].dtype != sb[k].dtype or sa[k].shape != sb[k].shape or not torch.equal(sa[k], sb[k])]
    return (not bad), ("values differ: " + ", ".join(bad[:5]) if bad else "")


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def run_worker(manifest: Path, results: Path) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    import torch

    import vitkit
    from vitkit.checkpoints import CheckpointError

    torch.set_num_threads(1)
    spec = json.loads(manifest.read_text())
    refs = {fmt: vitkit.load_model(p, **spec.get("hints", {}).get(fmt, {})) for fmt, p in spec["pristine"].items()}
    signal.signal(signal.SIGALRM, _alarm)
    with open(results, "a") as out:
        for case in spec["cases"]:
            out.write(json.dumps({"id": case["id"], "started": True}) + "\n")
            out.flush()
            rec: dict[str, Any] = {"id": case["id"]}
            t = time.perf_counter()
            signal.alarm(TIME_LIMIT_S)
            try:
                model = vitkit.load_model(case["path"], **spec.get("hints", {}).get(case["format"], {}))
                ok, why = _equal(model, refs[case["format"]])
                rec.update(outcome="equal" if ok else "differs", detail=why)
                del model
            except CheckpointError as e:
                rec.update(outcome="error", detail=str(e)[:600], named=case["name"] in str(e))
            except _Timeout:
                rec.update(outcome="timeout", detail=f"over {TIME_LIMIT_S} s")
            except BaseException as e:  # noqa: BLE001 - anything else is the finding
                rec.update(outcome="crash", detail=f"{type(e).__name__}: {str(e)[:400]}")
            finally:
                signal.alarm(0)
            rec["seconds"] = round(time.perf_counter() - t, 4)
            out.write(json.dumps(rec) + "\n")
            out.flush()


def read_results(results: Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Finished records by case id, and the id of a case that started but never finished (a kill)."""
    done: dict[str, dict[str, Any]] = {}
    started = None
    for line in results.read_text().splitlines() if results.exists() else []:
        rec = json.loads(line)
        if rec.get("started"):
            started = rec["id"]
        else:
            done[rec["id"]] = rec
            started = None
    return done, started


def run_cases(cases: list[dict[str, Any]], pristine: dict[str, Path], work: Path, timeout: float = 600,
              hints: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Run ``cases`` in worker processes; a worker killed mid-case (memory, signal) records that case
    as ``killed`` and the next worker goes on after it."""
    import subprocess

    results: dict[str, dict[str, Any]] = {}
    todo = list(cases)
    attempt = 0
    while todo:
        attempt += 1
        manifest, out = work / f"manifest{attempt}.json", work / f"results{attempt}.jsonl"
        manifest.write_text(json.dumps({"pristine": {k: str(v) for k, v in pristine.items()}, "cases": todo,
                                        "hints": hints or {}}))
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
        r = subprocess.run([sys.executable, __file__, str(manifest), str(out)], env=env, capture_output=True,
                           text=True, timeout=timeout)
        done, killed = read_results(out)
        results.update(done)
        if killed is not None:
            results[killed] = {"id": killed, "outcome": "killed",
                               "detail": f"worker exited {r.returncode}: {r.stderr[-600:]}"}
        elif r.returncode != 0:
            raise RuntimeError(f"fuzz worker failed before the cases ran (exit {r.returncode}):\n{r.stderr[-3000:]}")
        todo = [c for c in todo if c["id"] not in results]
    return results


def copy_target(fmt: str, pristine: dict[str, Path], dst: Path) -> Path:
    """A private copy of the pristine file (or directory) of ``fmt`` at ``dst``."""
    src = pristine[fmt]
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)
        side = src.with_suffix(".json")  # the timm export's NAME.json beside a .pth is part of the file
        if side.is_file():
            shutil.copyfile(side, dst.with_suffix(".json"))
    return dst


if __name__ == "__main__":
    run_worker(Path(sys.argv[1]), Path(sys.argv[2]))
