"""Throughput and memory against resolution, batch size and model size, beside the cost model.

Cost model: a ViT with patch P at resolution R has T = (R/P)^2 (+1 class token) tokens. Per layer
the linear layers cost ~24*T*D^2 FLOPs (qkv 6, proj 2, MLP 16 with mlp_dim = 4D) and attention
~4*T^2*D (QK^T and AV): tokens grow with R^2, attention with T^2 = R^4. The FLOPs column is
``vitkit.models.flops.count_flops`` (PyTorch's counter on the real model).

The machine is shared, so each row's steps alternate with a 2048^3 matmul through the same
oneDNN path (A, M, A, M, ...): the row's GFLOP/s divided by the matmul's GFLOP/s *in the same
rounds* (the "fraction of peak") is insensitive to load from elsewhere. The table therefore
gives, besides the raw seconds, "s/img at peak": the time the row would take with the matmul
running at the median rate of all rounds (``nominal peak``) -- the load-corrected measurement --
and "cost model s/img" = FLOPs / nominal peak, the time if every FLOP ran at matmul speed.

Run (about 5 minutes on 2 busy cores)::

    .venv/bin/python benchmarks/scaling.py --threads 2

writes benchmarks/results/scaling.md, scaling.json and scaling.png. Each row times the
model as ``create_model`` makes it (its fast paths on) in fp32 unless the row says otherwise (training:
``vitkit.train.step.train_step`` with ``vitkit.train.optim.build_optimizer``, as ``vitkit train``);
memory is the process RSS high-water mark during one step minus the RSS before it
(VmHWM, reset through /proc/self/clear_refs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vitkit.bench.measure import alternate, infer_step, matmul_candidates, memory_of
from vitkit.models import create_model
from vitkit.models.flops import count_flops
from vitkit.perf import inference_model
from vitkit.train.config import OptimConfig
from vitkit.train.optim import build_optimizer
from vitkit.train.step import fixed_batch_step

PEAK_N = 2048

HERE = Path(__file__).resolve().parent

# (sweep, model, resolution, batch, mode)
ROWS = [
    ("resolution", "ViT-S_16", 224, 4, "infer"),
    ("resolution", "ViT-S_16", 384, 4, "infer"),
    ("resolution", "ViT-S_16", 512, 4, "infer"),
    ("batch", "ViT-S_16", 224, 1, "infer"),
    ("batch", "ViT-S_16", 224, 4, "infer"),
    ("batch", "ViT-S_16", 224, 16, "infer"),
    ("model", "ViT-Ti_16", 224, 8, "infer"),
    ("model", "ViT-S_16", 224, 8, "infer"),
    ("model", "ViT-B_16", 224, 8, "infer"),
    ("train-resolution", "ViT-Ti_16", 224, 8, "train"),
    ("train-resolution", "ViT-Ti_16", 384, 8, "train"),
]


def cost_model(cfg: Any, res: int) -> dict[str, float]:
    t = (res // cfg.patch_size[0]) ** 2 + cfg.num_prefix_tokens
    d, layers = cfg.hidden_size, cfg.num_layers
    linear = layers * 2 * t * (4 * d * d + 2 * d * cfg.mlp_dim)
    attn = layers * 4 * t * t * d
    return {"tokens": t, "linear_gflop": linear / 1e9, "attention_gflop": attn / 1e9}


def run_row(model_name: str, res: int, batch: int, mode: str, steps: int, precision: str) -> dict[str, Any]:
    model = create_model(model_name, image_size=res)
    cfg = model.config
    x = torch.randn(batch, 3, res, res)
    if mode == "infer":
        fn = infer_step(inference_model(model, precision), x, precision)
    else:
        y = torch.randint(0, cfg.num_classes, (batch,))
        opt = build_optimizer(model, OptimConfig(name="adamw", lr=1e-4, weight_decay=0.05))
        fn = fixed_batch_step(model, opt, x, y, precision=precision, clip_norm=1.0)
    fn()  # warm-up (and packing) outside the memory probe
    mem = memory_of(fn)
    mm = matmul_candidates(torch.float32 if precision == "fp32" else torch.bfloat16, PEAK_N)["oneDNN packed linear"]
    with torch.no_grad():
        mm()
    t = alternate({"m": fn, "mm": lambda: torch.no_grad()(mm)()}, steps, 0)
    flops = count_flops(cfg) * (3 if mode == "train" else 1)
    cm = cost_model(cfg, res)
    rate = flops * batch / t["m"].median / 1e9
    peak = 2 * PEAK_N**3 / t["mm"].median / 1e9
    return {
        "model": model_name, "resolution": res, "batch": batch, "mode": mode, "precision": precision,
        **cm, "gflop_per_image": flops / 1e9, "s_per_image": t["m"].median / batch,
        "images_per_s": batch / t["m"].median,
        "gflops_per_s": rate, "matmul_gflops_same_rounds": peak, "fraction_of_peak": rate / peak,
        "step_memory_gb": mem["increase_bytes"] / 2**30, "peak_rss_gb": mem["peak_bytes"] / 2**30,
    }


def write_outputs(rows: list[dict[str, Any]], out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(rows, indent=1))
    lines = [
        "# Throughput and memory vs resolution, batch and model size", "",
        f"Command: `{command}` (CPU, {torch.get_num_threads()} threads, torch {torch.__version__}). "
        "Shared machine: absolute rates are noisy; compare within a sweep.", "",
        "Cost model: tokens T = (R/P)^2 + 1; linear FLOPs ~ 24 T D^2 per layer, attention ~ 4 T^2 D per layer "
        "(GFLOP/img is count_flops; train = 3x forward). Each row alternates its steps with a 2048^3 oneDNN matmul; "
        "`s/img at peak` = GFLOP/img / (fraction of peak x nominal peak) is the load-corrected measurement, "
        "`cost model s/img` = GFLOP/img / nominal peak (every FLOP at matmul speed).", "",
        "| sweep | model | res | batch | mode | tokens | linear GFLOP | attn GFLOP | attn share | GFLOP/img "
        "| raw s/img | matmul GFLOP/s (same rounds) | fraction of peak | s/img at peak | cost model s/img "
        "| step mem GB | peak RSS GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    nominal = statistics.median(r["matmul_gflops_same_rounds"] for r in rows)
    for r in rows:
        r["nominal_peak_gflops"] = nominal
        r["s_per_image_at_peak"] = r["gflop_per_image"] / (r["fraction_of_peak"] * nominal)
        r["cost_model_s_per_image"] = r["gflop_per_image"] / nominal
        share = r["attention_gflop"] / (r["attention_gflop"] + r["linear_gflop"])
        lines.append(
            f"| {r['sweep']} | {r['model']} | {r['resolution']} | {r['batch']} | {r['mode']} {r['precision']} "
            f"| {r['tokens']} | {r['linear_gflop']:.2f} | {r['attention_gflop']:.2f} | {share:.1%} "
            f"| {r['gflop_per_image']:.2f} | {r['s_per_image']:.3f} | {r['matmul_gflops_same_rounds']:.0f} "
            f"| {r['fraction_of_peak']:.2f} | {r['s_per_image_at_peak']:.3f} | {r['cost_model_s_per_image']:.3f} "
            f"| {r['step_memory_gb']:.3f} | {r['peak_rss_gb']:.2f} |"
        )
    lines += ["", f"Nominal peak (median matmul rate over all rounds): {nominal:.0f} GFLOP/s."]
    (out / "scaling.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / "scaling.png")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = [("resolution", "resolution", "ViT-S/16, batch 4"), ("batch", "batch", "ViT-S/16, 224 px"),
              ("model", "gflop_per_image", "224 px, batch 8 (Ti, S, B)")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for col, (sweep, xkey, title) in enumerate(sweeps):
        rs = [r for r in rows if r["sweep"] == sweep]
        if not rs:
            continue
        xs = [r[xkey] for r in rs]
        ax = axes[0, col]
        ax.plot(xs, [r["s_per_image_at_peak"] for r in rs], "o-", label="measured (load-corrected)")
        ax.plot(xs, [r["cost_model_s_per_image"] for r in rs], "s--", label="cost model: FLOPs / matmul peak")
        ax.set_title(title)
        ax.set_xlabel(xkey.replace("_", " "))
        ax.set_ylabel("seconds per image")
        ax.legend()
        ax = axes[1, col]
        ax.plot(xs, [r["step_memory_gb"] for r in rs], "o-", color="C2")
        ax.set_xlabel(xkey.replace("_", " "))
        ax.set_ylabel("step memory (GB, RSS increase)")
    fig.suptitle("vitkit inference (fp32 fast path): time and memory vs resolution, batch, model size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--quick", action="store_true", help="only the first row of each sweep (a smoke run)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows: list[dict[str, Any]] = []
    todo = ROWS if not args.quick else [r for i, r in enumerate(ROWS) if i == 0 or ROWS[i - 1][0] != r[0]]
    t0 = time.time()
    for sweep, name, res, batch, mode in tqdm(todo, desc="scaling"):
        r = run_row(name, res, batch, mode, args.steps, args.precision)
        r["sweep"] = sweep
        rows.append(r)
    command = "python benchmarks/scaling.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if v not in (False, None) and k != "out"
    )
    write_outputs(rows, Path(args.out), command)
    print(f"done in {time.time() - t0:.0f} s; wrote {args.out}/scaling.md, scaling.json, scaling.png")


if __name__ == "__main__":
    main()
