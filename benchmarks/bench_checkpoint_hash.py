"""Cost of the integrity checks when loading a vitkit file (issue 20): ViT-B/16 by default.

Prints the median of ``--repeat`` runs of: the SHA-256 of the tensors (``tensor_digest``), the
NaN/inf scan (``check_finite``), ``load_model(verify=True)`` and ``load_model(verify=False)``,
and the resident-set growth of one verified load, as JSON. Run::

    .venv/bin/python benchmarks/bench_checkpoint_hash.py [--model ViT-B_16] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import vitkit
from vitkit.checkpoints.native import tensor_digest
from vitkit.checkpoints.validate import check_finite


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B_16")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = vitkit.create_model(args.model)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.safetensors"
        t = time.perf_counter()
        vitkit.save_model(model, path)
        save_s = time.perf_counter() - t
        del model
        rss0 = _rss_mb()
        loaded = vitkit.load_model(path)
        rss_growth = _rss_mb() - rss0
        del loaded
        res = {
            "model": args.model, "file_mb": path.stat().st_size / 2**20, "threads": args.threads,
            "save_s": save_s,
            "sha256_s": _median_s(lambda: tensor_digest(state), args.repeat),
            "finite_scan_s": _median_s(lambda: check_finite(state, "bench"), args.repeat),
            "load_verify_s": _median_s(lambda: vitkit.load_model(path), args.repeat),
            "load_no_verify_s": _median_s(lambda: vitkit.load_model(path, verify=False), args.repeat),
            "load_rss_growth_mb": rss_growth,
            "command": f"benchmarks/bench_checkpoint_hash.py --model {args.model} --repeat {args.repeat}",
        }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
