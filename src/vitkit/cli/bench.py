"""``vitkit bench``: images/s, GFLOP/s, fraction of the measured matmul peak, peak memory, and
(``--compare hf``) the same for Hugging Face transformers' ViT with the same weights, run
alternately in one process.

Examples::

    vitkit bench --model ViT-B_16 --mode infer --batch-size 16 --precision fp32 --compare hf --threads 2
    vitkit bench --model ViT-S_16 --mode train --batch-size 32 --precision bf16 --compare hf --threads 2
    vitkit bench --model ViT-B_16 --mode train --batch-size 32 --steps 0 --checkpointing   # memory only
    vitkit bench --mode data --data wds:../shared/data/imagenette/train-{000000..000004}.tar --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

from ..errors import UserError
from .common import (
    PRECISIONS,
    add_batch_size,
    add_command,
    add_data,
    add_device,
    add_image_size,
    add_json,
    add_model,
    add_num_workers,
    add_out,
    add_precision,
    add_split,
    check_out,
    hidden_alias,
    non_negative_int,
    positive_int,
    resolve_device_precision,
    size_label,
)

REFERENCE_HELP = ("time the plain model (model.set_fast_paths(False): nn.Linear's kernel, aten GELU, the "
                        "full last block, fp32 residual stream) instead of vitkit's fast paths")
MODES = ("infer", "train", "data")
DEFAULT_SIZE = 224  # --image-size of a registry-name model and of --mode data


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "bench", help="measure throughput, FLOP rate and memory (optionally against HF transformers)",
                    description=__doc__.split("\n\n")[0], examples=[
                        "vitkit bench --model vit.safetensors --mode infer --batch-size 2 --precision fp32",
                        "vitkit bench --model ViT-B_16 --mode train --batch-size 32 --precision bf16 --compare hf "
                        "--threads 2",
                        "vitkit bench --mode data --data wds:imagenette/train-{000000..000004}.tar --batch-size 32"])
    add_model(p, required=False, default="ViT-B_16",
              extra="; or a registry name (`vitkit models`), built with random weights")
    p.add_argument("--mode", choices=MODES, default="infer", help="infer, train (one optimiser step) or data "
                   "(the training loader alone)")
    add_batch_size(p, default=16, extra=" (per step)")
    hidden_alias(p, "--batch", dest="batch_size", type=positive_int)
    add_precision(p, extra=" (inference also packs bf16 weights)")
    hidden_alias(p, "--dtype", dest="precision", choices=PRECISIONS)
    add_image_size(p, default=None, extra=f"; a registry name is built at it and --mode data reads at it "
                   f"({DEFAULT_SIZE} when not given)")
    p.add_argument("--num-classes", type=positive_int, default=1000, help="head size of a registry-name model (a "
                   "weights file keeps its own; the result records the one measured)")
    p.add_argument("--compile", action="store_true", help="torch.compile the vitkit model (inductor; compile time "
                   "is reported separately and excluded from the rates)")
    p.add_argument("--compare", choices=("hf",), default=None, help="also run HF transformers' ViT, alternately")
    p.add_argument("--hf-optimizer", choices=("torch", "vitkit"), default="torch",
                   help="train --compare hf: the HF side's AdamW implementation: torch's default (as "
                        "transformers' Trainer) or vitkit's fused one (isolates the model's own speed)")
    p.add_argument("--reference", action="store_true", help=REFERENCE_HELP)
    p.add_argument("--steps", type=non_negative_int, default=5, help="timed steps per candidate (0: memory only)")
    p.add_argument("--warmup", type=non_negative_int, default=1, help="untimed rounds first")
    p.add_argument("--peak-size", type=positive_int, default=2048,
                   help="n of the n x n x n matmul that measures the peak")
    add_device(p)
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--checkpointing", action="store_true", help="train: activation checkpointing of every block")
    p.add_argument("--memory-steps", type=positive_int, default=1,
                   help="measure peak memory over each of the first N steps separately (train: step 1 also "
                        "allocates the optimiser state; step 2 is the steady state)")
    p.add_argument("--micro-batch", type=positive_int, default=None,
                   help="train: split each batch into micro-batches of this size (gradient accumulation)")
    add_data(p, required=False, extra="; --mode data reads it")
    add_num_workers(p)
    hidden_alias(p, "--workers", dest="num_workers", type=non_negative_int)
    add_split(p, default="train")
    add_out(p, what="folder to write the result JSON into")
    add_json(p, what="the result")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    p.set_defaults(func=run)


def kept_on_stop(args: argparse.Namespace) -> str:
    """main: stop.report."""
    return "nothing was written (the result is written at the end); run the same command again"


def _check(args: argparse.Namespace) -> None:
    if args.mode == "data":
        if not args.data:
            raise UserError("--mode data needs --data SPEC (e.g. wds:PATTERN or folder:PATH)")
        if args.compare:
            raise UserError("--compare hf applies to --mode infer/train, not data")
    if args.micro_batch is not None:
        if args.mode != "train":
            raise UserError("--micro-batch applies to --mode train")
        if args.batch_size % args.micro_batch:
            raise UserError(f"--micro-batch {args.micro_batch} must divide --batch-size {args.batch_size}")
    if args.checkpointing and args.mode != "train":
        raise UserError("--checkpointing applies to --mode train")


def _gb(n: int) -> float:
    return round(n / 2**30, 3)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..perf.allocator import tune_cpu_allocator

    _check(args)
    if args.mode == "data" and args.image_size is None:
        args.image_size = DEFAULT_SIZE
    if args.out:
        check_out(args.out, folder=True)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    res = bench_data(args) if args.mode == "data" else bench_model(args)
    res["command"] = "vitkit bench " + " ".join(_argv_of(args))
    import platform

    res["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "device": args.device if args.mode != "data" else "cpu",
                      # Process-wide, so both sides of --compare run with the same allocator.
                      "malloc_tuned": tune_cpu_allocator()}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if args.mode == "data":
            name = f"bench-data-b{args.batch_size}-r{size_label(res['image_size'])}-w{res['workers']}"
        else:
            model = re.sub(r"[^\w.+-]", "_", args.model)
            ran = res.get("precision", args.precision)
            name = f"bench-{args.mode}-{model}-{ran}-b{args.batch_size}-r{size_label(res['image_size'])}"
        if args.compile:
            name += "-compile"
        if args.checkpointing:
            name += "-ckpt"
        if args.micro_batch:
            name += f"-mb{args.micro_batch}"
        (out / f"{name}.json").write_text(json.dumps(res, indent=1))
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        _print(res)
    return 0


def _argv_of(args: argparse.Namespace) -> list[str]:
    out = []
    for k, v in sorted(vars(args).items()):
        if k in ("func", "command") or v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        out += [flag] if v is True else [flag, str(v)]
    return out


def _print(res: dict[str, Any]) -> None:
    for k, v in res.items():
        if isinstance(v, dict):
            print(f"{k}:")
            for kk, vv in v.items():
                print(f"  {kk}: {vv}")
        else:
            print(f"{k}: {v}")


def _load(args: argparse.Namespace) -> Any:
    """A registry name: that architecture with random weights (--num-classes, --image-size); anything else: the
    weights source, resampled to --image-size."""
    from ..models import create_model, list_models
    from ..models.registry import canonical_name

    try:
        name = canonical_name(args.model)
    except KeyError:
        name = None
    if name in list_models():
        return create_model(name, num_classes=args.num_classes, image_size=args.image_size or DEFAULT_SIZE)
    from ..evaluate.model import load_for_inference

    return load_for_inference(args.model, args.image_size).train()


def _make_model(args: argparse.Namespace) -> Any:
    import torch
    from torch import nn

    model = _load(args)
    # The official head starts at zero, which would make every logit 0 and the output comparison
    # meaningless; a small random head keeps the timing identical and the comparison informative.
    if isinstance(getattr(model, "head", None), nn.Linear):
        with torch.no_grad():
            model.head.weight.normal_(std=0.02)
    return model


def _fast_paths(model: Any, enable: bool) -> Any:
    """The model with its fast paths on or off (models without any, the BiT ResNet, are unchanged)."""
    if hasattr(model, "set_fast_paths"):
        model.set_fast_paths(enable)
    return model


def bench_model(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ..bench.measure import (
        alternate,
        infer_step,
        matmul_candidates,
        max_output_difference,
        memory_of,
        peak_from_samples,
    )
    from ..bench.memory import peak_memory_method
    from ..models.flops import count_flops
    from ..perf import autocast, inference_model, maybe_compile
    from ..progress import Progress
    from ..train.config import OptimConfig
    from ..train.optim import build_optimizer
    from ..train.step import fixed_batch_step

    dev, precision = resolve_device_precision(args.device, args.precision)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    model = _make_model(args).to(dev)
    cfg = model.config
    flops_img = count_flops(cfg)
    # The model's own resolution: --image-size resampled it; a weights file without it keeps the file's.
    x = torch.randn(args.batch_size, cfg.in_chans, *cfg.image_size, device=dev)
    y = torch.randint(0, max(cfg.num_classes, 1), (args.batch_size,), device=dev)
    res: dict[str, Any] = {
        "model": cfg.name, "mode": args.mode, "batch": args.batch_size, "image_size": list(cfg.image_size),
        "num_classes": cfg.num_classes,
        "precision": precision, "gflop_per_image_forward": round(flops_img / 1e9, 3),
    }
    hf = None
    if args.compare == "hf":
        from ..bench.hf_reference import hf_model_like

        hf = hf_model_like(model)
    compile_s = None
    if args.mode == "infer":
        with torch.inference_mode():
            ref_out = _fast_paths(model, False).eval()(x)  # the plain fp32 model: the exactness reference
        ours = inference_model(_fast_paths(model, not args.reference), precision)
        if args.compile:
            t0 = time.perf_counter()
            ours = maybe_compile(model.eval(), True)
            with torch.inference_mode():
                ours(x)
            compile_s = time.perf_counter() - t0
        fns = {"vitkit": infer_step(ours, x, precision)}
        if hf is not None:
            hf.eval()
            fns["hf"] = infer_step(hf, x, precision)
        flops_step = flops_img * args.batch_size
        outs = {k: f().float() for k, f in fns.items()}
        res["max_abs_diff_vs_fp32_reference"] = {k: max_output_difference(v, ref_out) for k, v in outs.items()}
        res["max_abs_reference_logit"] = float(ref_out.abs().max())
        if hf is not None:
            res["max_abs_diff_vitkit_vs_hf"] = max_output_difference(outs["vitkit"], outs["hf"])
    else:
        _fast_paths(model, not args.reference)
        if args.checkpointing:
            if not hasattr(model, "set_grad_checkpointing"):
                raise UserError(f"--checkpointing: {cfg.name} ({type(model).__name__}) does not support it")
            model.set_grad_checkpointing(True)
        # The optimiser and the step of `vitkit train` (train.optim.build_optimizer, train.step.train_step).
        optim = OptimConfig(name="adamw", lr=1e-4, weight_decay=0.05, clip_norm=1.0)
        ours_model = maybe_compile(model, args.compile)
        mb = args.micro_batch or args.batch_size
        fns = {"vitkit": fixed_batch_step(ours_model, build_optimizer(model, optim), x, y, precision=precision,
                                          micro_batch=mb, clip_norm=optim.clip_norm)}
        if hf is not None:
            # Same weights (HF was built from the model before any step) and hyper-parameters; HF gets
            # torch.optim.AdamW's default implementation (what its Trainer uses by default) unless
            # --hf-optimizer vitkit gives it the same optimiser as vitkit.
            hf_opt = build_optimizer(hf, optim) if args.hf_optimizer == "vitkit" else torch.optim.AdamW(
                [p for p in hf.parameters() if p.requires_grad], lr=optim.lr, weight_decay=optim.weight_decay)
            fns["hf"] = fixed_batch_step(hf, hf_opt, x, y, precision=precision, micro_batch=mb,
                                         clip_norm=optim.clip_norm)
            if args.checkpointing:
                hf.hf.gradient_checkpointing_enable()
        if hf is not None and args.steps:
            with torch.no_grad(), autocast(precision, dev):
                a, b = model(x[:mb]), hf(x[:mb])
            res["max_abs_diff_vitkit_vs_hf_first_forward"] = max_output_difference(a, b)
        if args.compile:
            t0 = time.perf_counter()
            fns["vitkit"]()
            compile_s = time.perf_counter() - t0
        flops_step = 3 * flops_img * args.batch_size  # backward ~ 2x forward
        res["checkpointing"] = bool(args.checkpointing)
        res["micro_batch"] = mb
        ours_opt = "vitkit.train.optim.build_optimizer (torch AdamW fused=True where available)"
        res["optimizer"] = {"vitkit": ours_opt}
        res["step_function"] = "vitkit.train.step.train_step"
        if hf is not None:
            res["optimizer"]["hf"] = ours_opt if args.hf_optimizer == "vitkit" else "torch.optim.AdamW default"
    if compile_s is not None:
        res["compile_seconds"] = round(compile_s, 1)
    # Peak memory of one step of each side, measured before timing (one at a time).
    res["peak_memory_method"] = peak_memory_method(dev)
    res["memory"] = {}
    for k, f in fns.items():
        ms = [memory_of(f, dev) for _ in range(args.memory_steps)]
        res["memory"][k] = {"peak_rss_gb": _gb(ms[-1]["peak_bytes"]), "step_increase_gb": _gb(ms[-1]["increase_bytes"])}
        if len(ms) > 1:
            res["memory"][k]["per_step"] = [
                {"peak_rss_gb": _gb(m["peak_bytes"]), "step_increase_gb": _gb(m["increase_bytes"]),
                 "rss_before_gb": _gb(m["before_bytes"])} for m in ms
            ]
    if args.steps == 0:
        return res
    # The matmul peak is measured inside the same alternation (A, B, matmul, A, B, matmul, ...), so
    # it sees the same machine load as the model steps it is compared with.
    mm = {f"matmul:{k}": f for k, f in matmul_candidates(dtype, args.peak_size, dev).items()}
    bar = Progress(args.warmup + args.steps, desc=f"bench {args.mode}", unit="round", leave=False)
    with torch.no_grad():
        mm_first = {k: f() for k, f in mm.items()}  # first-call setup outside the timing
    del mm_first
    times = alternate({**fns, **mm}, args.steps, args.warmup, dev, progress=lambda _msg: bar.update(1))
    bar.close()
    peak = peak_from_samples({k.split(":", 1)[1]: times.pop(k) for k in mm}, args.peak_size, dtype)
    res["matmul_peak"] = {"dtype": peak["dtype"], "n": peak["n"], "path": peak["path"],
                          "gflops": {k: round(v, 1) for k, v in peak["gflops"].items()},
                          "how": "median over the same rounds as the model steps"}
    res["results"] = {}
    for k, t in times.items():
        ips = args.batch_size / t.median
        gf = flops_step / t.median / 1e9
        res["results"][k] = {
            "images_per_s": round(ips, 3), "gflops": round(gf, 1),
            "fraction_of_matmul_peak": round(gf / peak["peak_gflops"], 3),
            "step_seconds_median": round(t.median, 4), "step_seconds": [round(s, 4) for s in t.seconds],
        }
    if "hf" in times:
        res["speedup_vs_hf"] = round(times["hf"].median / times["vitkit"].median, 3)
        # Per-round ratios show how steady the comparison was under the machine's load.
        per_round = sorted(h / v for h, v in zip(times["hf"].seconds, times["vitkit"].seconds))
        res["speedup_per_round"] = [round(r, 3) for r in per_round]
        # Robust to a load burst that hits one side's step only.
        import statistics

        res["speedup_median_of_rounds"] = round(statistics.median(per_round), 3)
    return res


def bench_data(args: argparse.Namespace) -> dict[str, Any]:
    """Decode + augment rate of the training loader: images/s in total and per worker."""
    import itertools

    from ..data import build_loader
    from ..progress import Progress

    steps = max(args.steps, 1)
    loader = build_loader(args.data, split=args.split, train=True, image_size=args.image_size,
                          batch_size=args.batch_size, num_workers=args.num_workers)
    workers = int(getattr(loader, "num_workers", args.num_workers or 0))
    it = iter(loader)
    t0 = time.perf_counter()
    for _ in range(args.warmup):  # worker start-up and first shard opens
        next(it)
    warm_s = time.perf_counter() - t0
    n = 0
    t0 = time.perf_counter()
    bar = Progress(steps, desc="bench data", unit="batch", leave=False)
    for images, _labels in bar.iterate(itertools.islice(it, steps)):
        n += int(images.shape[0])
    dt = time.perf_counter() - t0
    bar.close()
    if n == 0:
        raise UserError(f"--data {args.data}: no batches after {args.warmup} warm-up batches (too few images for "
                        f"--batch-size {args.batch_size}?)")
    ips = n / dt
    return {
        "mode": "data", "data": args.data, "split": args.split, "image_size": args.image_size, "batch": args.batch_size,
        "workers": workers, "images": n, "seconds": round(dt, 3), "warmup_seconds": round(warm_s, 3),
        "images_per_s": round(ips, 2),
        # With 0 workers the main process decodes: that is the one-worker rate.
        "images_per_s_per_worker": round(ips / max(workers, 1), 2),
    }
