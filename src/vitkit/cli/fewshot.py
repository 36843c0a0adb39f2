"""``vitkit fewshot``: the paper's few-shot linear evaluation of the frozen representation."""

from __future__ import annotations

import argparse
import json
import time

from ..errors import UserError
from .common import (
    add_batch_size,
    add_command,
    add_data,
    add_device,
    add_image_size,
    add_json,
    add_limit,
    add_model,
    add_no_progress,
    add_num_workers,
    add_out,
    add_precision,
    add_preprocess,
    check_out,
    hidden_alias,
    load_command_model,
    positive_int,
)


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return vals


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "fewshot", help="few-shot linear evaluation (big_vision's fewshot_lsr)",
                    description="The paper's few-shot linear evaluation of the frozen representation: a "
                                "closed-form ridge regression on K examples per class, averaged over seeds.",
                    examples=["vitkit fewshot --model vit.safetensors --data digits --shots 1,5 --seeds 1 "
                              "--train-limit 200 --limit 100",
                              "vitkit fewshot --model imagenet21k/ViT-B_16 --data cifar:cifar-10-batches-py "
                              "--shots 1,5,10,25",
                              "vitkit fewshot --model runs/pretrain --train folder:pets/train --test folder:pets/test "
                              "--out runs/fewshot"])
    add_model(p)
    add_data(p, required=False, extra="; its train split gives the few-shot examples, its test split the accuracy "
             "(or give --train and --test)")
    p.add_argument("--train", default=None, metavar="SPEC", help="data spec the few-shot examples come from")
    p.add_argument("--test", default=None, metavar="SPEC", help="data spec to measure accuracy on")
    p.add_argument("--train-split", default="train", help="split of the few-shot data")
    p.add_argument("--test-split", default="test", help="split of the test data")
    p.add_argument("--shots", type=_ints, default=[1, 5, 10, 25], help="shots per class, comma-separated")
    p.add_argument("--seeds", type=positive_int, default=3, help="number of seeds 0..N-1 to average")
    p.add_argument("--l2-reg", type=float, default=1024.0, help="ridge regularisation")
    p.add_argument("--train-limit", type=positive_int, default=None, metavar="N",
                   help="draw the few-shot examples from the first N training examples only (faster; default all)")
    add_limit(p, extra=" of the test data")
    hidden_alias(p, "--test-limit", dest="limit", type=positive_int)
    add_image_size(p)
    add_preprocess(p)
    add_batch_size(p, default=64)
    add_precision(p)
    add_device(p)
    add_num_workers(p)
    add_out(p, what="folder to write fewshot.json into")
    add_no_progress(p)
    add_json(p, what="the record (fewshot.json's content)")
    p.set_defaults(func=run)


def _specs(args: argparse.Namespace) -> tuple[str, str]:
    train, test = args.train or args.data, args.test or args.data
    if not (train and test):
        raise UserError("give --data SPEC (its train and test splits), or both --train SPEC and --test SPEC")
    return train, test


def kept_on_stop(args: argparse.Namespace) -> str:
    """main: stop.report."""
    return "nothing was written (fewshot.json is written at the end); run the same command again"


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..evaluate import extract_features, fewshot_per_seed
    from ..evaluate.data import loader_stats, open_loader, report_skipped
    from .main import write_report

    if any(k < 1 for k in args.shots):
        raise UserError(f"--shots must be positive, got {args.shots}")
    if args.out:
        check_out(args.out, folder=True)
    train_spec, test_spec = _specs(args)
    model, device, precision = load_command_model(args)
    cfg = model.config
    common = {"batch_size": args.batch_size, "num_workers": args.num_workers,  # at the model's (h, w) size
              "preprocess": args.preprocess}
    t0 = time.perf_counter()
    tr_loader, tr_info, tr_batches = open_loader(train_spec, cfg, split=args.train_split, limit=args.train_limit,
                                                 **common)
    te_loader, te_info, te_batches = open_loader(test_spec, cfg, split=args.test_split, limit=args.limit, **common)
    if tr_info.num_classes != te_info.num_classes:
        raise UserError(f"the few-shot data {train_spec} has {tr_info.num_classes} classes but the test data "
                        f"{test_spec} has {te_info.num_classes}")
    kw = {"precision": precision, "device": device, "progress": True}
    xtr, ytr = extract_features(model, tr_loader, total=tr_batches, desc="train features", **kw)
    xte, yte = extract_features(model, te_loader, total=te_batches, desc="test features", **kw)
    t1 = time.perf_counter()
    num_classes = int(tr_info.num_classes)
    counts = np.bincount(ytr, minlength=num_classes)
    per_seed = fewshot_per_seed(xtr, ytr, xte, yte, args.shots, range(args.seeds), num_classes=num_classes,
                                l2_reg=args.l2_reg)
    t2 = time.perf_counter()
    res = {
        "model": str(args.model), "train": train_spec, "test": test_spec,
        "train_split": str(getattr(tr_info, "split", None) or args.train_split),
        "test_split": str(getattr(te_info, "split", None) or args.test_split),
        "image_size": list(cfg.image_size), "precision": precision, "device": str(device),
        "preprocess": te_loader.preprocess, "feature_dim": int(xtr.shape[1]), "num_classes": num_classes,
        "num_train": int(len(ytr)), "num_test": int(len(yte)), "l2_reg": args.l2_reg,
        "seeds": list(range(args.seeds)),
        "accuracy": {str(k): float(np.mean(v)) for k, v in per_seed.items()},
        "accuracy_per_seed": {str(k): v for k, v in per_seed.items()},
        "seconds": {"features": round(t1 - t0, 2), "solve": round(t2 - t1, 3)},
        "loader": {"train": loader_stats(tr_loader), "test": loader_stats(te_loader)},
    }
    report_skipped(res["loader"]["train"], train_spec)
    report_skipped(res["loader"]["test"], test_spec)
    short = [k for k in args.shots if counts.min() < k]
    if short:
        res["note"] = (f"some classes have fewer training images than {short} shots (min {int(counts.min())}); "
                       "they contribute all they have, as big_vision does")
    if args.out:
        write_report(args.out, "fewshot.json", res, quiet=args.quiet)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    if short:
        print("note: " + res["note"])
    for k, v in res["accuracy"].items():
        spread = ", ".join(f"{100 * a:.2f}" for a in per_seed[int(k)])
        print(f"{k:>3}-shot: {100 * v:.2f}%  (seeds: {spread})")
    return 0
