"""Masked patch prediction in miniature (paper Section 4.6 / issue 32), on this machine: CIFAR-10 top-1 after

* ``scratch``: ``cifar10_cpu`` trained for P + F steps;
* ``mpp``: ``mpp_pretrain`` for P steps on the CIFAR-10 training images (labels ignored), then ``cifar10_cpu``
  fine-tuned from that run (``model.init=RUN``: encoder kept, mask embedding and patch head dropped, fresh head)
  for F steps.

Both arms run the same model and batch, so equal steps are equal compute (the patch head is 0.1% of a step);
the wall-clock of each is recorded beside it. Results (JSON, with the commands) go to ``--out``.

    python benchmarks/mpp_cifar10.py --pretrain-steps 800 --finetune-steps 800 --out benchmarks/results/mpp
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_data() -> str:
    from vitkit.train.presets import get_preset

    return get_preset("cifar10_cpu").data.train  # the preset's own data (a named set, or the shared shards)


def run(name: str, argv: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "vitkit", "train", "--no-progress", *argv]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{name} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    summary = json.loads((Path(argv[argv.index("--out") + 1]) / "summary.json").read_text())
    rec = {"arm": name, "command": " ".join(cmd[1:]), "wall_s": wall, "steps": summary["steps"],
           "eval": summary.get("eval"), "top1": summary.get("eval_top1")}
    (out / f"{name}.json").write_text(json.dumps(rec, indent=1))
    print(json.dumps({k: rec[k] for k in ("arm", "steps", "top1", "wall_s")}), flush=True)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pretrain-steps", type=int, default=800)
    ap.add_argument("--finetune-steps", type=int, default=800)
    ap.add_argument("--data", default=None, help="CIFAR-10 spec (default: the cifar10_cpu preset's)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "mpp_bench")
    ap.add_argument("--arms", default="scratch,mpp")
    args = ap.parse_args()
    data = args.data or default_data()
    args.out.mkdir(parents=True, exist_ok=True)
    p, f = args.pretrain_steps, args.finetune_steps
    common = [f"data.train={data}", f"data.test={data}", "eval_every=0", "checkpoint_every=100000"]
    res = {"cpu": _cpu(), "pretrain_steps": p, "finetune_steps": f, "data": data, "arms": {}}
    arms = args.arms.split(",")
    if "scratch" in arms:
        res["arms"]["scratch"] = run("scratch", ["--preset", "cifar10_cpu", "--out", str(args.out / "scratch"),
                                                 *common, f"schedule.steps={p + f}"], args.out)
    if "mpp" in arms:
        pre = run("mpp_pretrain", ["--preset", "mpp_pretrain", "--out", str(args.out / "mpp_pretrain"), *common,
                                   "data.eval_limit=1000", f"schedule.steps={p}"], args.out)
        ft = run("mpp_finetune", ["--preset", "cifar10_cpu", "--out", str(args.out / "mpp_finetune"), *common,
                                  f"model.init={args.out / 'mpp_pretrain'}", f"schedule.steps={f}"], args.out)
        res["arms"]["mpp"] = {"pretrain": pre, "finetune": ft, "top1": ft["top1"],
                              "wall_s": pre["wall_s"] + ft["wall_s"]}
    (args.out / "results.json").write_text(json.dumps(res, indent=1))


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    except OSError:
        return os.uname().machine


if __name__ == "__main__":
    main()
