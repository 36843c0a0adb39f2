"""``vitkit export``: ONNX at a fixed resolution, verified against PyTorch with onnxruntime; optionally int8."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (verified with onnxruntime), fp32 or int8")
    p.add_argument("--model", required=True, metavar="PATH", help="checkpoint to export")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="output format (default onnx)")
    p.add_argument("--image-size", type=int, default=None, metavar="R",
                   help="fixed input resolution; position embeddings are resampled before export "
                   "(default: the model's)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--exporter", choices=["auto", "dynamo", "torchscript"], default="auto",
                   help="torch.onnx exporter (default auto: dynamo, falling back to TorchScript)")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="int8 with onnxruntime's quantization tools, for CPU serving: dynamic (weights int8, "
                   "activations quantized per batch) by default, static QDQ when --calibration is given")
    p.add_argument("--calibration", default=None, metavar="DATA",
                   help="calibration images for static int8: a data spec (wds:..., folder:..., cifar:...), a folder "
                   "or image files; they get the model's eval preprocessing at the export resolution")
    p.add_argument("--calibration-split", default="train", help="split of a --calibration data spec (default train)")
    p.add_argument("--calibration-images", type=int, default=128, metavar="N",
                   help="number of calibration images (default 128)")
    p.add_argument("out", metavar="OUT", help="the .onnx file to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import load_model
    from ..export import export_onnx

    if args.image_size is not None and args.image_size < 1:
        raise ValueError(f"--image-size must be positive, got {args.image_size}")
    if args.quantize is None and args.calibration is not None:
        raise ValueError("--calibration is for int8 export; add --quantize int8")
    if args.calibration_images < 1:
        raise ValueError(f"--calibration-images must be positive, got {args.calibration_images}")
    model = load_model(args.model)
    cfg = model.config
    if args.quantize == "int8":
        return _run_int8(args, model)
    res = export_onnx(model, args.out, args.image_size, opset=args.opset, exporter=args.exporter)
    h, w = res.image_size
    print(f"wrote {res.path} ({res.exporter} exporter): input '{res.input_name}' (batch, "
          f"{cfg.in_chans}, {h}, {w}) normalised with mean {cfg.mean} std {cfg.std}, "
          f"output '{res.output_name}' (batch, {cfg.num_classes})")
    print(f"onnxruntime vs PyTorch: max abs diff {res.max_abs_diff:.3g} (tolerance 1e-4)")
    if not res.input_dependent:
        print("note: the model's logits do not depend on the input (an untrained, zero-initialised head?), so the "
              "check only compared the head bias")
    return 0


def _run_int8(args: argparse.Namespace, model) -> int:  # noqa: ANN001 - a vitkit model
    from ..export.quantize import INT8_TOLERANCE, export_onnx_int8

    cfg = model.config
    calib = None
    if args.calibration is not None:
        from ..evaluate.data import gather_images

        at = model
        if args.image_size is not None and tuple(cfg.image_size) != (args.image_size, args.image_size):
            import copy

            at = copy.deepcopy(model)
            at.set_image_size(args.image_size)  # gather_images reads the resolution from the config
        calib = gather_images(at.config, [args.calibration], args.calibration_images, split=args.calibration_split)
    res = export_onnx_int8(model, args.out, args.image_size, calibration=calib, opset=args.opset,
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
