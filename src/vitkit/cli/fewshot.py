"""``vitkit fewshot``: the paper's few-shot linear evaluation of the frozen representation."""

from __future__ import annotations

import argparse
import time


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return vals


def register(sub: argparse._SubParsersAction) -> None:
    from ..evaluate.data import add_common_arguments

    p = sub.add_parser("fewshot", help="few-shot linear evaluation (big_vision's fewshot_lsr)")
    add_common_arguments(p)
    p.add_argument("--train", required=True, metavar="SPEC", help="data spec the few-shot examples come from")
    p.add_argument("--test", required=True, metavar="SPEC", help="data spec to measure accuracy on")
    p.add_argument("--train-split", default="train", help="split of --train (default train)")
    p.add_argument("--test-split", default="test", help="split of --test (default test)")
    p.add_argument("--shots", type=_ints, default=[1, 5, 10, 25], help="shots per class (default 1,5,10,25)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds 0..N-1 to average (default 3)")
    p.add_argument("--l2-reg", type=float, default=1024.0, help="ridge regularisation (default 1024)")
    p.add_argument("--train-limit", type=int, default=None,
                   help="draw the few-shot examples from the first N training examples only (faster; default all)")
    p.add_argument("--test-limit", type=int, default=None, help="use only the first N test examples")
    p.add_argument("--out", default=None, metavar="DIR", help="write DIR/fewshot.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..evaluate import extract_features, fewshot_per_seed
    from ..evaluate.data import check_batch_size, load_for_inference, loader_stats, open_loader, report_skipped
    from .main import write_report

    check_batch_size(args.batch_size)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be positive, got {args.seeds}")
    if any(k < 1 for k in args.shots):
        raise ValueError(f"--shots must be positive, got {args.shots}")
    model = load_for_inference(args.model, args.image_size)
    cfg = model.config
    common = {"batch_size": args.batch_size, "num_workers": args.num_workers,  # at the model's (h, w) size
              "preprocess": args.preprocess}
    t0 = time.perf_counter()
    tr_loader, tr_info, tr_batches = open_loader(args.train, cfg, split=args.train_split, limit=args.train_limit,
                                                 **common)
    te_loader, te_info, te_batches = open_loader(args.test, cfg, split=args.test_split, limit=args.test_limit,
                                                 **common)
    if tr_info.num_classes != te_info.num_classes:
        raise ValueError(f"--train has {tr_info.num_classes} classes but --test has {te_info.num_classes}")
    kw = {"precision": args.precision, "device": args.device}
    xtr, ytr = extract_features(model, tr_loader, total=tr_batches, desc="train features", **kw)
    xte, yte = extract_features(model, te_loader, total=te_batches, desc="test features", **kw)
    t1 = time.perf_counter()
    num_classes = int(tr_info.num_classes)
    counts = np.bincount(ytr, minlength=num_classes)
    per_seed = fewshot_per_seed(xtr, ytr, xte, yte, args.shots, range(args.seeds), num_classes=num_classes,
                                l2_reg=args.l2_reg)
    t2 = time.perf_counter()
    res = {
        "model": str(args.model), "train": args.train, "test": args.test, "image_size": list(cfg.image_size),
        "preprocess": te_loader.preprocess,
        "feature_dim": int(xtr.shape[1]), "num_classes": num_classes,
        "num_train": int(len(ytr)), "num_test": int(len(yte)), "l2_reg": args.l2_reg,
        "seeds": list(range(args.seeds)),
        "accuracy": {str(k): float(np.mean(v)) for k, v in per_seed.items()},
        "accuracy_per_seed": {str(k): v for k, v in per_seed.items()},
        "seconds": {"features": round(t1 - t0, 2), "solve": round(t2 - t1, 3)},
        "loader": {"train": loader_stats(tr_loader), "test": loader_stats(te_loader)},
    }
    report_skipped(res["loader"]["train"], args.train)
    report_skipped(res["loader"]["test"], args.test)
    short = [k for k in args.shots if counts.min() < k]
    if short:
        res["note"] = (f"some classes have fewer training images than {short} shots (min {int(counts.min())}); "
                       "they contribute all they have, as big_vision does")
        print("note: " + res["note"])
    for k, v in res["accuracy"].items():
        spread = ", ".join(f"{100 * a:.2f}" for a in per_seed[int(k)])
        print(f"{k:>3}-shot: {100 * v:.2f}%  (seeds: {spread})")
    if args.out:
        write_report(args.out, "fewshot.json", res)
    return 0
