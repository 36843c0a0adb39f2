"""CUDA checks for a machine with a GPU: fidelity on the GPU, attention kernels, the training
paths (bf16, fp16 + loss scaling, torch.compile, EMA + accumulation, activation checkpointing),
host-device syncs per training step, and `vitkit bench --device cuda --compare hf`.

    PYTHONPATH=src python benchmarks/gpu_check.py --out DIR

Each section records its result (or its error) in DIR/gpu_check.json and goes on. Real timm
and transformers models are the references where they are installed (timm cannot be installed
beside the CPU torch of the development machine; GPU images often have it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch

RESULTS: dict[str, Any] = {}


def section(name: str):
    def wrap(fn):
        def run(*a: Any, **k: Any) -> None:
            t0 = time.time()
            try:
                RESULTS[name] = {"ok": True, **(fn(*a, **k) or {})}
            except Exception as e:  # record and go on: one broken path must not hide the others
                RESULTS[name] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                                 "traceback": traceback.format_exc()[-3000:]}
            RESULTS[name]["seconds"] = round(time.time() - t0, 1)
            print(f"== {name}: {json.dumps({k: v for k, v in RESULTS[name].items() if k != 'traceback'})}",
                  flush=True)
        return run
    return wrap


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max())


def exact_fp32() -> None:
    """No TF32 in fp32 matmuls and convolutions, for the sections that compare against fp32
    references (set for the rest of the run, as each such section did before)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@section("env")
def env() -> dict[str, Any]:
    p = torch.cuda.get_device_properties(0)
    out = {"torch": torch.__version__, "gpu": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
           "bf16": torch.cuda.is_bf16_supported(), "python": sys.version.split()[0]}
    for mod in ("transformers", "timm", "safetensors", "webdataset"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as e:
            out[mod] = f"missing ({e})"
    return out


@section("fidelity_cuda_fp32")
def fidelity(tmp: Path) -> dict[str, Any]:
    import vitkit
    from vitkit.checkpoints.hf import to_hf

    exact_fp32()
    torch.manual_seed(0)
    m = vitkit.create_model("ViT-B_16", num_classes=1000).eval()
    with torch.no_grad():
        m.head.weight.normal_(0, 0.02)  # a zero head would hide the encoder
        x = torch.randn(4, 3, 224, 224)
        cpu = m(x)
        mc = m.cuda()
        gpu = mc(x.cuda())
        hf = to_hf(m).cuda().eval()
        hf_out = hf(pixel_values=x.cuda()).logits
    out = {"vitkit_cpu_vs_cuda": maxdiff(cpu, gpu), "vitkit_vs_hf_cuda": maxdiff(gpu, hf_out),
           "max_abs_logit": float(cpu.abs().max())}
    try:
        import timm
    except ImportError:
        out["timm"] = "not installed"
        return out
    from safetensors.torch import save_file

    from vitkit.checkpoints.timm import to_timm_state_dict

    # timm -> vitkit: a real timm model (exact GELU), its weights read by vitkit.load_model.
    torch.manual_seed(1)
    t = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=1000).eval()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    save_file({k: v.contiguous() for k, v in t.state_dict().items()}, str(tmp / "timm.safetensors"))
    # A state dict does not store the head count: the timm config.json beside it names the architecture.
    (tmp / "config.json").write_text(json.dumps({"architecture": "vit_base_patch16_224", "num_classes": 1000}))
    ours = vitkit.load_model(tmp / "timm.safetensors").eval()
    with torch.no_grad():
        xt = torch.randn(4, 3, 224, 224)
        out["timm_to_vitkit_cpu"] = maxdiff(t(xt), ours(xt))
        out["timm_to_vitkit_cuda"] = maxdiff(t.cuda()(xt.cuda()), ours.cuda()(xt.cuda()))
    # vitkit -> timm: our (tanh-GELU) model in a timm model built with the same activation.
    t2 = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=1000, act_layer="gelu_tanh").eval()
    t2.load_state_dict(to_timm_state_dict(m.cpu()), strict=True)
    with torch.no_grad():
        out["vitkit_to_timm_cpu"] = maxdiff(m(xt), t2(xt))
    # A timm hybrid must be refused with a clear message, never half-loaded.
    h = timm.create_model("vit_small_r26_s32_224", pretrained=False)
    save_file({k: v.contiguous() for k, v in h.state_dict().items()}, str(tmp / "hybrid.safetensors"))
    try:
        vitkit.load_model(tmp / "hybrid.safetensors")
        out["timm_hybrid"] = "LOADED (unexpected)"
    except Exception as e:
        out["timm_hybrid"] = f"refused: {type(e).__name__}: {str(e)[:200]}"
    return out


@section("official_flax_vs_vitkit")
def official_flax(tmp: Path) -> dict[str, Any]:
    """The official Flax model (vit_jax/models_vit.py, on PYTHONPATH when available) against
    vitkit on the same random weights, saved as an official .npz and read by load_model."""
    from types import SimpleNamespace

    import jax
    import numpy as np
    from flax.traverse_util import flatten_dict
    from vit_jax import models_vit  # the official code, not shipped with vitkit

    import vitkit

    jax.config.update("jax_default_matmul_precision", "highest")  # no TF32 in the reference
    exact_fp32()  # nor in vitkit (cuDNN convolutions default to TF32)
    cases = {
        "token_repr": dict(patches=SimpleNamespace(size=(4, 4)), hidden_size=64, representation_size=32,
                           classifier="token", resnet=None, image=32),
        "gap": dict(patches=SimpleNamespace(size=(4, 4)), hidden_size=64, representation_size=None,
                    classifier="gap", resnet=None, image=32),
        "hybrid_r2": dict(patches=SimpleNamespace(size=(1, 1)), hidden_size=64, representation_size=None,
                          classifier="token", resnet=SimpleNamespace(num_layers=(1, 1), width_factor=1), image=64),
    }
    out: dict[str, Any] = {"jax": jax.__version__, "devices": str(jax.devices())}
    for name, c in cases.items():
        image = c.pop("image")
        model = models_vit.VisionTransformer(
            num_classes=10, transformer=dict(num_layers=2, mlp_dim=128, num_heads=4, dropout_rate=0.0,
                                             attention_dropout_rate=0.0), **c)
        x = np.random.default_rng(0).normal(size=(3, image, image, 3)).astype(np.float32)
        params = model.init(jax.random.PRNGKey(0), x, train=False)["params"]
        keys = jax.random.split(jax.random.PRNGKey(1), len(jax.tree_util.tree_leaves(params)))
        leaves, tree = jax.tree_util.tree_flatten(params)
        params = jax.tree_util.tree_unflatten(
            tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])  # non-zero head
        ref = np.asarray(model.apply({"params": params}, x, train=False))
        path = tmp / f"official_{name}.npz"
        np.savez(path, **{k: np.asarray(v) for k, v in flatten_dict(params, sep="/").items()})
        ours = vitkit.load_model(path).eval()
        with torch.no_grad():
            xt = torch.from_numpy(x).permute(0, 3, 1, 2)
            got_cpu = ours(xt)
            got_cuda = ours.cuda()(xt.cuda()) if torch.cuda.is_available() else got_cpu
        ref_t = torch.from_numpy(np.array(ref))
        out[name] = {"max_abs_diff_cpu": maxdiff(got_cpu, ref_t),
                     "max_abs_diff_cuda": maxdiff(got_cuda, ref_t) if torch.cuda.is_available() else None,
                     "max_abs_logit": float(np.abs(ref).max()), "keys": len(flatten_dict(params))}
    return out


@section("attention_kernels")
def attention() -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import vitkit

    torch.manual_seed(0)
    m = vitkit.create_model("ViT-S_16", num_classes=10).cuda()
    x = torch.randn(8, 3, 224, 224, device="cuda")
    out: dict[str, Any] = {}
    ref = {}
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32), sdpa_kernel(SDPBackend.MATH):
            ref[dtype] = m.forward_features(x) if hasattr(m, "forward_features") else m(x)
    for name, backend, dtype in (("flash_bf16", SDPBackend.FLASH_ATTENTION, torch.bfloat16),
                                 ("flash_fp16", SDPBackend.FLASH_ATTENTION, torch.float16),
                                 ("mem_efficient_fp32", SDPBackend.EFFICIENT_ATTENTION, torch.float32),
                                 ("cudnn_bf16", SDPBackend.CUDNN_ATTENTION, torch.bfloat16)):
        try:
            with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32), sdpa_kernel(backend):
                y = m.forward_features(x) if hasattr(m, "forward_features") else m(x)
                y.float().sum().backward()
            out[name] = {"runs_forward_backward": True, "max_diff_vs_math": maxdiff(y, ref[dtype])}
        except Exception as e:
            out[name] = {"runs_forward_backward": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        m.zero_grad(set_to_none=True)
    return out


@section("class_token_path")
def class_token_path() -> dict[str, Any]:
    """The last block for the class token only (the model's fast paths) vs the plain model on
    CUDA: logits and gradients, fp32 (TF32 off) and bf16 autocast (flash attention, 1 query row)."""
    import copy

    import vitkit
    from vitkit.perf import autocast

    torch.manual_seed(0)
    exact_fp32()
    full = vitkit.create_model("ViT-S_16", num_classes=10).cuda().train().set_fast_paths(False)
    with torch.no_grad():
        full.head.weight.normal_(std=0.05)
    x = torch.randn(8, 3, 224, 224, device="cuda")
    y = torch.randint(0, 10, (8,), device="cuda")
    out: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        fast = copy.deepcopy(full).set_fast_paths(True)
        res = {}
        for name, m in (("full", full), ("fast", fast)):
            m.zero_grad(set_to_none=True)
            with autocast(precision, "cuda"):
                logits = m(x)
            torch.nn.functional.cross_entropy(logits.float(), y).backward()
            res[name] = (logits.detach(), {n: p.grad for n, p in m.named_parameters()})
        grad_rel = max(float((res["fast"][1][n] - g).norm() / g.norm().clamp_min(1e-30))
                       for n, g in res["full"][1].items())
        out[precision] = {"fast_paths": fast.fast_paths, "max_logit_diff": maxdiff(res["fast"][0], res["full"][0]),
                          "max_grad_rel_diff": grad_rel}
    return out


def _train(tmp: Path, name: str, *over: str) -> dict[str, Any]:
    from vitkit.train import loop
    from vitkit.train.config import apply_overrides
    from vitkit.train.presets import get_preset

    base = ["data.train=digits", "data.image_size=32", "data.batch_size=256", "data.eval_batch_size=512",
            "model.patch_size=4", "model.hidden_size=192", "model.mlp_dim=768", "model.num_heads=3",
            "model.num_layers=6", "schedule.steps=60", "schedule.warmup_steps=10", "optim.lr=0.002",
            "eval_every=0", "log_every=10", "checkpoint_every=30", "device=cuda", "data.num_workers=2"]
    cfg = apply_overrides(get_preset("default"), [*base, f"out={tmp / name}", *over])
    s = loop.train(cfg, progress=False)
    return {k: s.get(k) for k in ("steps", "images_per_s", "final_loss", "eval_top1", "precision") if k in s} | {
        "files": sorted(p.name for p in (tmp / name).iterdir())}


@section("train_bf16")
def train_bf16(tmp: Path) -> dict[str, Any]:
    return _train(tmp, "bf16", "precision=bf16")


@section("train_fp16_grad_scaler")
def train_fp16(tmp: Path) -> dict[str, Any]:
    return _train(tmp, "fp16", "precision=fp16")


@section("train_fp32")
def train_fp32(tmp: Path) -> dict[str, Any]:
    return _train(tmp, "fp32", "precision=fp32")


@section("train_compile_bf16")
def train_compile(tmp: Path) -> dict[str, Any]:
    return _train(tmp, "compile", "precision=bf16", "compile=true")


@section("train_ema_accum_ckpt")
def train_ema(tmp: Path) -> dict[str, Any]:
    return _train(tmp, "ema", "precision=bf16", "ema=0.99", "data.micro_batch_size=64",
                  "activation_checkpointing=true")


@section("syncs_per_step")
def syncs(tmp: Path) -> dict[str, Any]:
    """Host-device synchronisations per training step (torch's sync debug mode), by source line.

    Two runs that differ only in their number of steps (20 and 40; one log line, no checkpoint,
    the same final evaluation and save): the difference is what the 20 extra steps cost.
    """
    from collections import Counter

    from vitkit.train import loop

    real_run = loop.Trainer.run

    def run(self, *a: Any, **k: Any) -> Any:
        torch.cuda.set_sync_debug_mode("warn")
        try:
            return real_run(self, *a, **k)
        finally:
            torch.cuda.set_sync_debug_mode(0)

    loop.Trainer.run = run
    where: dict[int, Counter] = {}
    try:
        for steps in (20, 40):
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                _train(tmp, f"syncs{steps}", "precision=bf16", f"schedule.steps={steps}", "log_every=1000",
                       "checkpoint_every=0")
            where[steps] = Counter(f"{Path(x.filename).name}:{x.lineno}" for x in w
                                   if "synchroniz" in str(x.message).lower())
    finally:
        loop.Trainer.run = real_run
    extra = where[40] - where[20]
    return {"syncs_20_steps": sum(where[20].values()), "syncs_40_steps": sum(where[40].values()),
            "per_extra_step": sum(extra.values()) / 20, "per_step_sources": dict(extra.most_common(10)),
            "run_total_sources": dict(where[40].most_common(8))}


def _cli(args: list[str], timeout: int) -> dict[str, Any]:
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "vitkit.cli.main", *args], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return {"rc": p.returncode, "seconds": round(time.time() - t0, 1), "tail": (p.stdout + p.stderr)[-1500:]}


@section("bench_infer_b16_bf16")
def bench_infer(out: Path) -> dict[str, Any]:
    return _cli(["bench", "--device", "cuda", "--model", "ViT-B_16", "--mode", "infer", "--batch", "128",
                 "--dtype", "bf16", "--compare", "hf", "--steps", "20", "--warmup", "3",
                 "--out", str(out / "bench_infer")], 240)


@section("bench_train_s16_bf16")
def bench_train(out: Path) -> dict[str, Any]:
    return _cli(["bench", "--device", "cuda", "--model", "ViT-S_16", "--mode", "train", "--batch", "128",
                 "--dtype", "bf16", "--compare", "hf", "--steps", "20", "--warmup", "3",
                 "--out", str(out / "bench_train")], 240)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="", help="comma-separated section-function names to run")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path("/tmp/vitkit_gpu_check")
    tmp.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device")
    steps = [("env", env, ()), ("fidelity", fidelity, (tmp,)), ("official", official_flax, (tmp,)),
             ("attention", attention, ()), ("class_token_path", class_token_path, ()),
             ("train_bf16", train_bf16, (tmp,)), ("train_fp16", train_fp16, (tmp,)),
             ("train_fp32", train_fp32, (tmp,)), ("syncs", syncs, (tmp,)), ("train_ema", train_ema, (tmp,)),
             ("train_compile", train_compile, (tmp,)), ("bench_infer", bench_infer, (out,)),
             ("bench_train", bench_train, (out,))]
    only = {s for s in a.only.split(",") if s}
    for name, fn, args in steps:
        if only and name not in only:
            continue
        fn(*args)
        (out / "gpu_check.json").write_text(json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    main()
