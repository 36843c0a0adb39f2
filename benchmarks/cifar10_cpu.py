"""CIFAR-10 from scratch on this CPU with the ``cifar10_cpu`` preset: test accuracy vs wall-clock.

Data (``--data``): the named data set ``cifar10`` by default (the official python archive, fetched once into
``$VITKIT_DATA``), or any data spec, or a folder of CIFAR-10 WebDataset shards (``train-*``/``test-*``, read as
``wds:FOLDER?...&cache=memory``). The published results of this benchmark were measured on such a folder, the
project's shared JPEG (quality 75, 4:2:0) copy (``shared/data/cifar10`` beside the checkout), not the lossless
original, so they are not exactly comparable with published numbers.

The run is time-budgeted (``schedule.time_budget_s``): the cosine schedule follows the elapsed
training time and ends so that the whole run, its final evaluation included, takes about ``--minutes``.
Shards are decoded into memory once (``cache=memory``: ~7 s for the 60k images, then no JPEG
parsing per epoch). The curve's earlier points are the checkpoints the run saved at those times,
evaluated after the run (the same weights, so the same accuracy an in-run evaluation would give,
without taking its ~20 s per point out of the training budget). Writes to --out:
the training run (config.yaml, metrics.jsonl, tb/, summary.json, model.safetensors, checkpoints),
``curve.csv`` / ``curve.json`` (step, wall-clock seconds, train seconds, test top-1/top-5) and
``accuracy_vs_time.png``.

    python benchmarks/cifar10_cpu.py --minutes 30 --out runs/bench/cifar10_cpu
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

from vitkit.train.config import apply_overrides, copy_config
from vitkit.train.loop import train
from vitkit.train.presets import get_preset

CLASSES = "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck"  # batches.meta's label_names


def data_spec(data: str) -> str:
    """``--data``: a spec as given, or a folder of WebDataset shards as a ``wds:`` spec decoded into memory."""
    if Path(data).is_dir():
        return f"wds:{data}?num_classes=10&num_examples=train:50000,test:10000&classes={CLASSES}&cache=memory"
    return data


def calibrate(cfg, steps: int, out: Path) -> float:
    """Seconds per optimiser step of ``cfg`` on this machine, data loading included, timed from the
    10th step on (the start-up and the filling of the shuffle buffer would otherwise count, which
    made earlier estimates 30% long: evaluations were then spaced too closely)."""
    c = copy_config(cfg)
    c.out, c.eval_every, c.checkpoint_every, c.log_every = str(out), 0, 0, 10
    c.data.test = None  # evaluation only on a data set with a test split (eval_every=0: at the end, after timing)
    c.schedule.steps = steps
    shutil.rmtree(out, ignore_errors=True)
    train(c, progress=False, stop_at=steps)
    times = {r["step"]: r["time_s"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if "loss" in r}
    shutil.rmtree(out, ignore_errors=True)
    return (times[steps] - times[10]) / (steps - 10)


def evaluate_checkpoints(cfg, out: Path, step_time: dict[int, float]) -> list[dict]:
    """Test accuracy of the run's checkpoints, evaluated after the run (outside its budget), as
    curve rows at the training time each was written."""
    from vitkit import load_model
    from vitkit.data import build_loader
    from vitkit.evaluate.core import evaluate_accuracy
    from vitkit.training_checkpoint import list_checkpoints, load_checkpoint

    model = load_model(out / "model.safetensors")
    c = model.config
    loader = build_loader(cfg.data.test, split="test", train=False, image_size=cfg.data.image_size,
                          batch_size=cfg.data.eval_batch_size, mean=c.mean, std=c.std, num_workers=0)
    rows = []
    for step, path in list_checkpoints(out):
        model.load_state_dict(load_checkpoint(path)["model"])
        res = evaluate_accuracy(model, loader, precision=cfg.precision, flip=cfg.eval_flip, progress=False)
        t = step_time.get(step)  # the run's last step, ended by the clock, may not be a logged one
        rows.append({"step": step, "wall_s": None if t is None else round(t, 1),
                     "images": step * cfg.data.batch_size,
                     "top1": res["top1"], "top5": res["top5"],
                     **({"flip_top1": res["flip_top1"]} if "flip_top1" in res else {}), "evaluated": "after"})
    return rows


def plot_curve(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["wall_s"] / 60 for r in rows], [100 * r["top1"] for r in rows], "o-", label="test top-1")
    if all("flip_top1" in r for r in rows):
        ax.plot([r["wall_s"] / 60 for r in rows], [100 * r["flip_top1"] for r in rows], "s--",
                label="test top-1, flip-averaged")
    ax.axhline(80, color="grey", ls="--", lw=0.8, label="goal 80%")
    ax.axvline(30, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("wall-clock (minutes, 2-core CPU, final evaluation included)")
    ax.set_ylabel("CIFAR-10 test top-1 (%) [JPEG q75 copy]")
    ax.set_title("vitkit cifar10_cpu preset, from scratch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="cifar10",
                    help="data spec (default: the named data set cifar10), or a folder of CIFAR-10 WebDataset shards")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/cifar10_cpu"))
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget of the whole run")
    ap.add_argument("--evals", type=int, default=4,
                    help="points on the accuracy curve: checkpoints at equal step intervals, the last one the run's "
                         "final evaluation (the others are evaluated after the run)")
    ap.add_argument("--plot-only", action="store_true", help="re-draw --out's plot from its curve.json")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides of the preset")
    args = ap.parse_args()
    if args.plot_only:
        plot_curve(json.loads((args.out / "curve.json").read_text())["curve"], args.out / "accuracy_vs_time.png")
        return 0

    train_spec = test_spec = data_spec(args.data)
    cfg = apply_overrides(get_preset("cifar10_cpu"), [f"data.train={train_spec}", f"data.test={test_spec}",
                                                     *args.overrides])
    # The clock, not a step count, ends the run (schedule.time_budget_s): the cosine decay follows
    # the elapsed training time, so the run anneals at --minutes whatever the machine's load.
    # A short calibration estimates steps/s to space the checkpoints and to take the final
    # evaluation's cost (10k test images, forward only: ~1/2 of a training image each) out of the budget.
    calib_dir = args.out.with_name(args.out.name + "_calib")
    full = copy_config(cfg)
    full.data.progressive_resize = None
    sec = calibrate(full, 40, calib_dir)
    eval_s = 10_000 / cfg.data.batch_size * sec / 2 * (2 if cfg.eval_flip else 1)  # measured: ~1/2, not 1/3
    budget = args.minutes * 60 - eval_s - 30
    est_steps = int(budget / sec)
    if cfg.data.progressive_resize is not None:
        # The low-resolution phase's steps are cheaper: time them too.
        low = copy_config(cfg)
        low.data.progressive_resize = (cfg.data.progressive_resize[0], 0.999)  # all 40 steps low
        frac = cfg.data.progressive_resize[1]
        sec_low = calibrate(low, 40, calib_dir)
        print(f"calibration: low-resolution phase {sec_low * 1000:.0f} ms/step", file=sys.stderr)
        est_steps = int(budget * frac / sec_low + budget * (1 - frac) / sec)
    print(f"calibration: {sec * 1000:.0f} ms/step; training budget {budget:.0f} s (~{est_steps} steps)",
          file=sys.stderr)
    cfg.schedule.time_budget_s = budget
    cfg.schedule.steps = max(est_steps, 1)
    cfg.schedule.warmup_steps = min(cfg.schedule.warmup_steps, max(est_steps // 30, 1))
    cfg.eval_every = 0  # only the final evaluation runs inside the budget
    cfg.log_every = 50
    cfg.checkpoint_every = max(est_steps // args.evals // cfg.log_every, 1) * cfg.log_every
    cfg.keep_last = args.evals + 2
    cfg.out = str(args.out)
    shutil.rmtree(args.out, ignore_errors=True)
    t0 = time.time()
    summary = train(cfg, progress=True)
    wall = time.time() - t0

    rows = []
    eval_time = 0.0
    step_time = {}
    for line in (args.out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "loss" in r:
            step_time[r["step"]] = r["time_s"]
        if "eval/top1" in r:
            rows.append({"step": r["step"], "wall_s": round(r["time_s"], 1),
                         "images": r["step"] * cfg.data.batch_size,
                         "top1": r["eval/top1"], "top5": r["eval/top5"],
                         **({"flip_top1": r["eval/flip_top1"]} if "eval/flip_top1" in r else {})})
            eval_time = r["time_s"] - (step_time[max(step_time)] if step_time else 0.0)
    if not rows:
        print("no evaluation finished", file=sys.stderr)
        return 1
    rows[-1]["evaluated"] = "in run"
    after = evaluate_checkpoints(cfg, args.out, step_time)
    # The final checkpoint evaluated the same way: its numbers should be the in-run evaluation's.
    posthoc_final = next((r for r in after if r["step"] == rows[-1]["step"]), None)
    rows = [r for r in after if r["step"] < rows[-1]["step"]] + rows[-1:]
    with open(args.out / "curve.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    result = {"curve": rows, "wall_s": wall, "steps": summary["steps"], "train_budget_s": budget,
              "final_top1": summary["eval_top1"],
              "final_top5": summary["eval_top5"], "final_flip_top1": summary["eval"].get("flip_top1"),
              "images_per_s": summary["images_per_s"],
              "threads": cfg.threads, "loader_workers": cfg.data.num_workers,
              "data": train_spec,
              "skipped": summary["data"], "last_eval_s": eval_time,
              "final_evaluated_after_run": posthoc_final}
    (args.out / "curve.json").write_text(json.dumps(result, indent=1))

    plot_curve(rows, args.out / "accuracy_vs_time.png")
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
