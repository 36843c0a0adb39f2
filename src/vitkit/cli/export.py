"""``vitkit export``: ONNX at a fixed resolution, verified against PyTorch with onnxruntime."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (verified with onnxruntime)")
    p.add_argument("--model", required=True, metavar="PATH", help="checkpoint to export")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="output format (default onnx)")
    p.add_argument("--image-size", type=int, default=None, metavar="R",
                   help="fixed input resolution; position embeddings are resampled before export "
                   "(default: the model's)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--exporter", choices=["auto", "dynamo", "torchscript"], default="auto",
                   help="torch.onnx exporter (default auto: dynamo, falling back to TorchScript)")
    p.add_argument("out", metavar="OUT", help="the .onnx file to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import load_model
    from ..export import export_onnx

    if args.image_size is not None and args.image_size < 1:
        raise ValueError(f"--image-size must be positive, got {args.image_size}")
    model = load_model(args.model)
    res = export_onnx(model, args.out, args.image_size, opset=args.opset, exporter=args.exporter)
    h, w = res.image_size
    print(f"wrote {res.path} ({res.exporter} exporter): input '{res.input_name}' (batch, "
          f"{model.config.in_chans}, {h}, {w}) normalised with mean {model.config.mean} std {model.config.std}, "
          f"output '{res.output_name}' (batch, {model.config.num_classes})")
    print(f"onnxruntime vs PyTorch: max abs diff {res.max_abs_diff:.3g} (tolerance 1e-4)")
    if not res.input_dependent:
        print("note: the model's logits do not depend on the input (an untrained, zero-initialised head?), so the "
              "check only compared the head bias")
    return 0
