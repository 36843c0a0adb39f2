"""int8 inference on this CPU: ONNX Runtime int8 (``vitkit export --quantize int8``) against vitkit fp32 / bf16 and
ONNX Runtime fp32, in one process with interleaved rounds; and the top-1 change on a real validation set.

Throughput (``--arch``, default ViT-B/16 at 224 px, random weights: speed does not depend on the values): every
round times one batch of each variant in turn (the order reversed every other round), so a busy machine slows all
of them alike; the ratios are medians of the per-round ratios. Variants: ``vitkit-fp32`` / ``vitkit-bf16``
(``vitkit.perf.inference_model``, what ``vitkit eval``/``predict`` run), ``ort-fp32`` (the verified fp32 export),
``ort-int8-dynamic`` and ``ort-int8-static`` (QDQ, calibrated on random images for the speed test only).

Accuracy (``--checkpoint`` + ``--data``): the trained model's test top-1 in PyTorch fp32 and bf16, ONNX Runtime fp32,
int8 dynamic and int8 static (calibrated on ``--calibration-images`` images of the *train* split), and how often
each variant's top-1 equals PyTorch fp32's.

    python benchmarks/int8_cpu.py --out benchmarks/results/int8 \\
        --checkpoint runs/c10/model.safetensors \\
        --data cifar10
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import vitkit
from vitkit.export import export_onnx, quantize_onnx_file
from vitkit.perf import autocast, inference_model


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # onnxruntime's idle threads spin after each run by default, which would steal the cores from the variant
    # timed next in the interleaved rounds (vitkit's fp32 then measured ~10x slow); without spinning each variant
    # gets the cores it would get alone.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _torch_fn(model: torch.nn.Module, precision: str):
    fast = inference_model(model, precision)

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), autocast(precision, "cpu"):
            return fast(x).float().numpy()

    return run


def _ort_fn(path: Path, threads: int):
    sess = _session(path, threads)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x.numpy()})[0]


def _variants(model: torch.nn.Module, tmp: Path, threads: int, calib: torch.Tensor, log) -> tuple[dict, dict]:
    """(name -> callable(images) -> logits, name -> ONNX file size), exporting the ONNX files into ``tmp``.

    The fp32 export is made (and verified) once and quantized twice with the function ``vitkit export --quantize
    int8`` runs (:func:`vitkit.export.quantize_onnx_file`), instead of three exports."""
    fns = {"vitkit-fp32": _torch_fn(model, "fp32"), "vitkit-bf16": _torch_fn(model, "bf16")}
    t0 = time.time()
    export_onnx(model, tmp / "fp32.onnx")
    log(f"fp32 export {time.time() - t0:.0f} s")
    fns["ort-fp32"] = _ort_fn(tmp / "fp32.onnx", threads)
    for method, data in (("dynamic", None), ("static", calib.numpy())):
        t0 = time.time()
        quantize_onnx_file(tmp / "fp32.onnx", tmp / f"int8-{method}.onnx", method, calibration=data)
        log(f"int8 {method} quantization {time.time() - t0:.0f} s")
        fns[f"ort-int8-{method}"] = _ort_fn(tmp / f"int8-{method}.onnx", threads)
    sizes = {k: (tmp / f"{k[4:]}.onnx").stat().st_size for k in fns if k.startswith("ort-")}
    return fns, sizes


def throughput(args, log) -> dict:
    cfg_kw = {"image_size": args.image_size} if args.image_size else {}
    model = vitkit.create_model(args.arch, num_classes=1000, **cfg_kw).eval()
    torch.nn.init.normal_(model.head.weight, std=0.02)  # the registry's zero head would make the logits constant
    c = model.config
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, c.in_chans, *c.image_size, generator=gen)
    calib = torch.randn(32, c.in_chans, *c.image_size, generator=gen)
    with tempfile.TemporaryDirectory() as tmp:
        fns, sizes = _variants(model, Path(tmp), args.threads, calib, log)
        ref = fns["vitkit-fp32"](x)
        close = {k: float(np.mean(fn(x).argmax(1) == ref.argmax(1))) for k, fn in fns.items()}
        secs: dict[str, list[float]] = {k: [] for k in fns}
        for r in range(args.warmup + args.rounds):
            order = list(fns) if r % 2 == 0 else list(reversed(fns))  # no variant always follows the same one
            for k in order:
                t0 = time.perf_counter()
                fns[k](x)
                if r >= args.warmup:
                    secs[k].append(time.perf_counter() - t0)
            log(f"round {r + 1}/{args.warmup + args.rounds}: " +
                ", ".join(f"{k} {args.batch / secs[k][-1]:.1f}" for k in fns if secs[k]) + " img/s"
                if r >= args.warmup else f"warm-up round {r + 1}")
    ips = {k: args.batch / statistics.median(v) for k, v in secs.items()}

    def ratio(a: str, b: str) -> float:  # median over rounds of (time b / time a) = speed a / speed b
        return statistics.median(tb / ta for ta, tb in zip(secs[a], secs[b]))

    ratios = {f"{a} / {b}": ratio(a, b) for a in ("ort-int8-dynamic", "ort-int8-static")
              for b in ("vitkit-bf16", "vitkit-fp32", "ort-fp32")}
    return {"arch": args.arch, "image_size": list(c.image_size), "batch": args.batch, "rounds": args.rounds,
            "onnx_bytes": sizes, "images_per_s_median": ips, "seconds_per_batch": secs, "speed_ratios_median": ratios,
            "top1_agreement_with_vitkit_fp32_on_the_batch": close}


def accuracy(args, log) -> dict:
    from vitkit.evaluate.data import gather_images, open_loader

    model = vitkit.load_model(args.checkpoint).eval()
    c = model.config
    calib = gather_images(c, [args.data], args.calibration_images, split="train")
    loader, info, _ = open_loader(args.data, c, split=args.split, batch_size=args.eval_batch, limit=args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        fns, _ = _variants(model, Path(tmp), args.threads, calib, log)
        correct = {k: 0 for k in fns}
        agree = {k: 0 for k in fns}
        n = 0
        t0 = time.time()
        for x, y in loader:
            preds = {k: fn(x).argmax(1) for k, fn in fns.items()}
            y = y.numpy()
            for k, p in preds.items():
                correct[k] += int((p == y).sum())
                agree[k] += int((p == preds["vitkit-fp32"]).sum())
            n += len(y)
            if n % (args.eval_batch * 10) == 0:
                log(f"{n} images, {time.time() - t0:.0f} s: " + ", ".join(f"{k} {correct[k] / n:.4f}" for k in fns))
    top1 = {k: v / n for k, v in correct.items()}
    return {"checkpoint": str(args.checkpoint), "data": args.data, "split": args.split, "images": n,
            "calibration": f"{len(calib)} images of the train split", "top1": top1,
            "top1_change_vs_vitkit_fp32_points": {k: 100 * (v - top1["vitkit-fp32"]) for k, v in top1.items()},
            "prediction_agreement_with_vitkit_fp32": {k: v / n for k, v in agree.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the results JSON")
    p.add_argument("--arch", default="ViT-B_16", help="model for the speed test (default ViT-B_16)")
    p.add_argument("--image-size", type=int, default=None, help="speed test resolution (default: the model's)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads (default 2)")
    p.add_argument("--checkpoint", default=None, help="trained model for the accuracy test")
    p.add_argument("--data", default=None, help="data spec of its validation/test set (and train split for "
                   "calibration)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="evaluate only this many images")
    p.add_argument("--eval-batch", type=int, default=250)
    p.add_argument("--calibration-images", type=int, default=256)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--tag", default="", help="suffix of the results file name")
    args = p.parse_args(argv)
    if (args.checkpoint is None) != (args.data is None):
        p.error("--checkpoint and --data go together (the accuracy test needs both)")
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    import onnxruntime

    result: dict = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                    "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "cpu": platform.processor() or platform.machine(), "threads": args.threads,
                    "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                    "note": "shared 2-core machine, busy with other jobs: absolute images/s are low and noisy; "
                            "the interleaved per-round ratios are the result"}
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"int8-{args.arch if not args.skip_speed else 'accuracy'}{'-' + args.tag if args.tag else ''}.json"

    def save() -> None:  # after each part, so a long accuracy pass cannot lose the speed results
        (args.out / name).write_text(json.dumps(result, indent=1) + "\n")

    if not args.skip_speed:
        result["speed"] = throughput(args, log)
        save()
        for k, v in result["speed"]["images_per_s_median"].items():
            print(f"{k:18s} {v:8.2f} images/s")
        for k, v in result["speed"]["speed_ratios_median"].items():
            print(f"{k:34s} {v:5.2f}x")
    if args.checkpoint is not None:
        result["accuracy"] = accuracy(args, log)
        acc = result["accuracy"]
        for k, v in acc["top1"].items():
            print(f"{k:18s} top-1 {100 * v:6.2f}%  change {acc['top1_change_vs_vitkit_fp32_points'][k]:+.2f} points"
                  f"  same prediction as vitkit-fp32 {100 * acc['prediction_agreement_with_vitkit_fp32'][k]:.2f}%")
    save()
    print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
