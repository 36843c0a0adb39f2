"""``vitkit export``: ONNX at a fixed resolution, verified against PyTorch with onnxruntime."""

from __future__ import annotations

import argparse
import json

from ..errors import UserError
from ..image_size import as_hw
from .common import add_command, add_image_size, add_json, add_model, add_out, check_out, log, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "export", help="export a checkpoint to ONNX (verified with onnxruntime), fp32 or int8",
                    description="ONNX at a fixed input resolution; onnxruntime's logits are compared with PyTorch's "
                                "before the command succeeds.",
                    examples=["vitkit export --model vit.safetensors --out vit.onnx",
                              "vitkit export --model imagenet21k+imagenet2012/ViT-B_16 --out vit_b16_384.onnx "
                              "--image-size 384",
                              "vitkit export --model runs/c10 --out c10_int8.onnx --quantize int8 --calibration "
                              "cifar:cifar-10-batches-py"])
    add_model(p)
    add_out(p, what="the .onnx file to write")
    p.add_argument("out_positional", nargs="?", metavar="OUT", help=argparse.SUPPRESS)  # the old spelling
    p.add_argument("--format", default="onnx", choices=["onnx"], help="output format")
    add_image_size(p, extra=" (fixed in the exported graph)")
    p.add_argument("--opset", type=positive_int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--exporter", choices=["auto", "dynamo", "torchscript"], default="auto",
                   help="torch.onnx exporter: auto tries dynamo (needs onnxscript) and falls back to TorchScript, "
                        "saying why")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="int8 with onnxruntime's quantization tools, for CPU serving: dynamic (weights int8, "
                   "activations quantized per batch) by default, static QDQ when --calibration is given")
    p.add_argument("--calibration", default=None, metavar="DATA",
                   help="calibration images for static int8: a data spec (wds:..., folder:..., cifar:...), a folder "
                   "or image files; they get the model's eval preprocessing at the export resolution")
    p.add_argument("--calibration-split", default="train", help="split of a --calibration data spec")
    p.add_argument("--calibration-images", type=positive_int, default=128, metavar="N",
                   help="number of calibration images")
    add_json(p, what="what was written and checked (fp32 export)")
    p.set_defaults(func=run)


def kept_on_stop(args: argparse.Namespace) -> str:
    """main: stop.report. The .onnx appears only when written whole and verified (export_onnx renames it into
    place)."""
    out = args.out or args.out_positional
    if args.quantize:  # quantized straight into place, then checked
        return f"{out} may be left unfinished; run the same command again"
    return f"nothing was written to {out}; run the same command again"


def run(args: argparse.Namespace) -> int:
    from ..evaluate.model import load_for_inference
    from ..export import export_onnx

    if args.out and args.out_positional:
        raise UserError("give the output once: --out FILE (or the old positional OUT), not both")
    out = args.out or args.out_positional
    if not out:
        raise UserError("--out FILE.onnx is required")
    if args.quantize is None and args.calibration is not None:
        raise UserError("--calibration is for int8 export; add --quantize int8")
    check_out(out, folder=False, suffix=".onnx")
    model = load_for_inference(args.model)
    cfg = model.config
    log.info("vitkit export: exporting %s to %s and checking it with onnxruntime", args.model, out)
    if args.quantize == "int8":
        return _run_int8(args, model, out)
    res = export_onnx(model, out, args.image_size, opset=args.opset, exporter=args.exporter)
    h, w = res.image_size
    if res.fallback_reason:
        log.warning("vitkit export: note: exported with the TorchScript exporter: the dynamo exporter could not be "
                    "used (%s)", res.fallback_reason)
    record = {"out": str(res.path), "exporter": res.exporter, "fallback_reason": res.fallback_reason,
              "input": {"name": res.input_name, "shape": ["batch", cfg.in_chans, h, w], "mean": list(cfg.mean),
                        "std": list(cfg.std)},
              "output": {"name": res.output_name, "shape": ["batch", cfg.num_classes]},
              "max_abs_diff": res.max_abs_diff, "input_dependent": res.input_dependent}
    if args.json:
        print(json.dumps(record, indent=1))
        return 0
    print(f"wrote {res.path} ({res.exporter} exporter): input '{res.input_name}' (batch, "
          f"{cfg.in_chans}, {h}, {w}) normalised with mean {cfg.mean} std {cfg.std}, "
          f"output '{res.output_name}' (batch, {cfg.num_classes})")
    print(f"onnxruntime vs PyTorch: max abs diff {res.max_abs_diff:.3g} (tolerance 1e-4)")
    if not res.input_dependent:
        print("note: the model's logits do not depend on the input (an untrained, zero-initialised head?), so the "
              "check only compared the head bias")
    return 0


def _run_int8(args: argparse.Namespace, model, out: str) -> int:  # noqa: ANN001 - a vitkit model
    from ..export.quantize import INT8_TOLERANCE, export_onnx_int8

    cfg = model.config
    calib = None
    if args.calibration is not None:
        from ..evaluate.data import gather_images

        at = model
        if args.image_size is not None and tuple(cfg.image_size) != as_hw(args.image_size, "--image-size"):
            import copy

            at = copy.deepcopy(model)
            at.set_image_size(args.image_size)  # gather_images reads the resolution from the config
        calib = gather_images(at.config, [args.calibration], args.calibration_images, split=args.calibration_split)
    res = export_onnx_int8(model, out, args.image_size, calibration=calib, opset=args.opset,
                           exporter=args.exporter)
    h, w = res.image_size
    print(f"wrote {res.path} (int8, {res.method}{f', {len(calib)} calibration images' if calib is not None else ''}; "
          f"{res.bytes / 2**20:.1f} MiB, fp32 {res.fp32_bytes / 2**20:.1f} MiB): input '{res.input_name}' (batch, "
          f"{cfg.in_chans}, {h}, {w}) float32 normalised with mean {cfg.mean} std {cfg.std}, output "
          f"'{res.output_name}' (batch, {cfg.num_classes})")
    print(f"int8 vs PyTorch fp32 on {res.num_checked} {res.checked_on}: max abs diff {res.max_abs_diff:.3g} "
          f"(logit spread {res.logit_spread:.3g}, limit {INT8_TOLERANCE:g} x spread), "
          f"top-1 agreement {res.top1_agreement:.0%}")
    return 0
