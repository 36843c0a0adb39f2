"""A plain ``vitkit.create_model`` model in a user's own loop against what ``vitkit bench`` /
``vitkit train`` run, side by side in one process (issue 17: within 3%, outputs unchanged).

Inference: ``model(x)`` under ``torch.inference_mode()`` and ``torch.autocast`` written by hand,
against ``vitkit bench``'s step (``vitkit.perf.inference_model`` + ``vitkit.perf.autocast``).
Training: a hand-written step (autocast forward, cross-entropy, backward, ``clip_grad_norm_``,
``opt.step()``, ``zero_grad``) against ``vitkit.train.step.train_step`` (what ``vitkit train`` and
``vitkit bench --mode train`` run). Both sides start from the same weights with the same optimiser
(``vitkit.train.optim.build_optimizer``: fused AdamW, lr 1e-4, wd 0.05), so their losses must stay
equal step by step. The two sides alternate round by round (A, B, A, B, ...): a burst of load from
elsewhere hits both alike, and the ratio per round is reported.

Run::

    .venv/bin/python benchmarks/user_loop.py --threads 2 [--out benchmarks/results/user_loop]

``--clock cpu`` times each call by the process's CPU time instead of the wall clock: on a machine
shared with other jobs, waiting for a core then does not count (both sides run the same kernels,
so their CPU time per step is what differs if anything does). ``--infer-model``/``--train-model``
and the batch options pick smaller configurations where a busy machine makes the defaults too slow.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import vitkit
from vitkit.bench.measure import Samples, alternate, infer_step
from vitkit.perf import inference_model, resolve_precision, tune_cpu_allocator
from vitkit.train.config import OptimConfig
from vitkit.train.optim import build_optimizer
from vitkit.train.step import fixed_batch_step

OPTIM = OptimConfig(name="adamw", lr=1e-4, weight_decay=0.05, clip_norm=1.0)
CASES = {  # the configurations of benchmarks/README.md's four `vitkit bench --compare hf` ratios
    "infer": ("ViT-B_16", 16),
    "train": ("ViT-S_16", 32),
}


def _model(name: str, image_size: int = 224) -> torch.nn.Module:
    torch.manual_seed(0)
    m = vitkit.create_model(name, num_classes=1000, image_size=image_size)
    with torch.no_grad():
        m.head.weight.normal_(std=0.02)  # the zero head would make every logit 0
    return m


def _autocast(precision: str) -> Any:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def _user_infer(model: torch.nn.Module, x: torch.Tensor, precision: str) -> Callable[[], torch.Tensor]:
    model.eval()

    def step() -> torch.Tensor:
        with torch.inference_mode(), _autocast(precision):
            return model(x)

    return step


def _user_train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                precision: str) -> Callable[[], torch.Tensor]:
    model.train()
    opt = build_optimizer(model, OPTIM)

    def step() -> torch.Tensor:
        with _autocast(precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM.clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def alternate_cpu(fns: dict[str, Callable[[], Any]], steps: int, warmup: int) -> dict[str, Samples]:
    """:func:`vitkit.bench.measure.alternate` timed by the process's CPU time (CPU only)."""
    out = {k: Samples() for k in fns}
    for r in range(warmup + steps):
        for k, fn in fns.items():
            t0 = time.process_time()
            fn()
            if r >= warmup:
                out[k].seconds.append(time.process_time() - t0)
    return out


def run_case(mode: str, precision: str, steps: int, warmup: int, clock: str = "wall",
             case: tuple[str, int] | None = None, image_size: int = 224) -> dict[str, Any]:
    name, batch = case or CASES[mode]
    ours, user = _model(name, image_size), _model(name, image_size)
    torch.manual_seed(1)
    x = torch.randn(batch, 3, image_size, image_size)
    y = torch.randint(0, 1000, (batch,))
    outputs: dict[str, list[torch.Tensor]] = {"vitkit": [], "user": []}
    if mode == "infer":
        user = ours  # the very same model object: `vitkit bench` runs it as a user would
        fns: dict[str, Callable[[], Any]] = {"vitkit": infer_step(inference_model(ours, precision), x, precision),
                                             "user": _user_infer(user, x, precision)}
    else:
        vk = fixed_batch_step(ours, build_optimizer(ours, OPTIM), x, y, precision=precision, clip_norm=OPTIM.clip_norm)
        fns = {"vitkit": lambda: vk().loss, "user": _user_train(user, x, y, precision)}
    recorded = {k: (lambda f=f, k=k: outputs[k].append(f().float())) for k, f in fns.items()}
    times = alternate_cpu(recorded, steps, warmup) if clock == "cpu" else alternate(recorded, steps, warmup)
    ratios = [u / v for u, v in zip(times["user"].seconds, times["vitkit"].seconds)]
    diffs = [float((a - b).abs().max()) for a, b in zip(outputs["vitkit"], outputs["user"])]
    res = {
        "mode": mode, "model": name, "batch": batch, "image_size": image_size, "precision": precision,
        "steps": steps, "warmup": warmup, "clock": clock,
        "seconds_median": {k: round(t.median, 4) for k, t in times.items()},
        "user_over_vitkit_time": round(times["user"].median / times["vitkit"].median, 4),
        "per_round": [round(r, 4) for r in ratios],
        "median_of_rounds": round(statistics.median(ratios), 4),
        # Inference: the logits of each call; training: the loss of each step (same weights, same updates).
        "max_abs_output_diff": max(diffs),
    }
    if mode == "train":
        res["max_abs_param_diff_at_end"] = max(float((p.detach() - q.detach()).abs().max())
                                               for p, q in zip(ours.parameters(), user.parameters()))
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--modes", default="infer,train")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--infer-model", default=CASES["infer"][0])
    p.add_argument("--infer-batch", type=int, default=CASES["infer"][1])
    p.add_argument("--train-model", default=CASES["train"][0])
    p.add_argument("--train-batch", type=int, default=CASES["train"][1])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--out", default=None, help="directory for user_loop.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tuned = tune_cpu_allocator()  # process-wide: both sides alike, as `vitkit bench`
    results = []
    for mode in args.modes.split(","):
        for precision in args.precisions.split(","):
            if resolve_precision(precision) != precision:
                continue
            case = (args.infer_model, args.infer_batch) if mode == "infer" else (args.train_model, args.train_batch)
            r = run_case(mode, precision, args.steps, args.warmup, args.clock, case, args.image_size)
            print(json.dumps(r), flush=True)
            results.append(r)
    doc = {"load_average_at_end": os.getloadavg(), "malloc_tuned": tuned, "threads": args.threads,
           "torch": torch.__version__, "results": results, "command": "benchmarks/user_loop.py " + " ".join(
               f"--{k} {v}" for k, v in vars(args).items() if v is not None)}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "user_loop.json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
