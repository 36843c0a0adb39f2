"""The paper's claim in miniature: pre-train on Imagenette at low resolution, fine-tune on CIFAR-10
at a higher one, and compare with CIFAR-10 from scratch at the same total cost.

Data: ``--pretrain-data`` (default: the named data set ``imagenette-160``) and ``--data`` (default ``cifar10``),
fetched once into ``$VITKIT_DATA``. The recorded run used the project's shared WebDataset copies beside the checkout
(``../shared/data``: Imagenette 112 px, re-encoded JPEG q90; CIFAR-10 JPEG q75, so accuracies are not those of the
lossless original): ``--pretrain-data 'wds:../shared/data/imagenette?num_classes=10&num_examples=train:9469,val:3925'
--data 'wds:../shared/data/cifar10?num_classes=10&num_examples=train:50000,test:10000'``.

Arms, all with the same small ViT (patch 4, width 128, 6 blocks) and the same wall-clock:
  A. pre-train on Imagenette at 32 px (``--pre-minutes``), then fine-tune on CIFAR-10 at 48 px
     (position embeddings interpolated 8x8 -> 12x12, fresh zero head, SGD momentum as the paper);
  B. CIFAR-10 from scratch at 48 px for the sum of A's two budgets.
The step budgets come from a short throughput calibration of each stage. Writes ``result.json``
with both test top-1 accuracies under --out.

    python benchmarks/pretrain_finetune.py --pre-minutes 15 --ft-minutes 10 --out runs/bench/ptft
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from vitkit.train.config import TrainConfig, apply_overrides, copy_config
from vitkit.train.loop import train
from vitkit.train.presets import get_preset


def seconds_per_step(cfg: TrainConfig, out: Path, steps: int = 30) -> float:
    c = copy_config(cfg)
    c.out, c.eval_every, c.checkpoint_every, c.data.test = str(out), 0, 0, None
    c.schedule.steps = steps
    shutil.rmtree(out, ignore_errors=True)
    s = train(c, progress=False, stop_at=steps)
    shutil.rmtree(out, ignore_errors=True)
    return s["time_s"] / steps


def fit_steps(cfg: TrainConfig, minutes: float, out: Path) -> TrainConfig:
    sec = seconds_per_step(cfg, out)
    cfg = copy_config(cfg)
    cfg.schedule.steps = max(int(minutes * 60 / sec), 10)
    cfg.schedule.warmup_steps = max(cfg.schedule.steps // 20, 1)
    cfg.eval_every = 0
    cfg.checkpoint_every = max(cfg.schedule.steps // 5, 1)
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/pretrain_finetune"))
    ap.add_argument("--pre-minutes", type=float, default=15.0)
    ap.add_argument("--ft-minutes", type=float, default=10.0)
    ap.add_argument("--pre-size", type=int, default=32)
    ap.add_argument("--ft-size", type=int, default=48)
    ap.add_argument("--data", default="cifar10", help="fine-tuning / from-scratch data spec (default: %(default)s)")
    ap.add_argument("--pretrain-data", default="imagenette-160",
                    help="pre-training data spec, with a val split (default: %(default)s)")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    # The plain patch-4 ViT of the run recorded in the README (the cifar10_cpu preset has since
    # moved to the R+ViT root-block hybrid); pinned so that the recorded numbers stay reproducible.
    base = apply_overrides(get_preset("cifar10_cpu"), [
        "model.name=ViT-Ti_16", "model.resnet_layers=none", "model.resnet_width=none", "model.patch_size=4",
        "model.mlp_dim=256", "data.crop_area=0.35,1", "precision=fp32", "threads=1",
        f"data.train={args.data}", f"data.test={args.data}"])

    # A1: pre-training on Imagenette (paper recipe in miniature: Adam, wd, linear decay, representation layer).
    pre = apply_overrides(base, [
        f"data.train={args.pretrain_data}", f"data.test={args.pretrain_data}", "data.test_split=val",
        f"data.image_size={args.pre_size}", "data.crop_area=0.08,1", "model.classifier=token",
        "model.representation_size=128", "optim.name=adam", "optim.weight_decay=0.1", "schedule.decay=linear",
    ])
    pre = fit_steps(pre, args.pre_minutes, out / "calib")
    pre.out = str(out / "A_pretrain_imagenette")
    shutil.rmtree(pre.out, ignore_errors=True)
    s_pre = train(pre)

    # A2: fine-tuning on CIFAR-10 at the higher resolution from the pre-trained weights.
    ft = apply_overrides(base, [
        f"data.image_size={args.ft_size}", f"model.init={s_pre['model']}", "model.patch_size=none",
        "model.hidden_size=none", "model.mlp_dim=none", "model.num_heads=none", "model.num_layers=none",
        "model.classifier=none", "model.representation_size=none", "optim.name=sgd", "optim.lr=0.03",
        "optim.weight_decay=0", "schedule.decay=cosine",
    ])
    ft = fit_steps(ft, args.ft_minutes, out / "calib")
    ft.out = str(out / "A_finetune_cifar10")
    shutil.rmtree(ft.out, ignore_errors=True)
    s_ft = train(ft)

    # B: from scratch on CIFAR-10 at the fine-tuning resolution, for the same total time.
    scratch = apply_overrides(base, [f"data.image_size={args.ft_size}"])
    scratch = fit_steps(scratch, args.pre_minutes + args.ft_minutes, out / "calib")
    scratch.out = str(out / "B_scratch_cifar10")
    shutil.rmtree(scratch.out, ignore_errors=True)
    s_b = train(scratch)

    result = {
        "data": {"pretrain": args.pretrain_data, "finetune": args.data},
        "A_pretrain_imagenette_val_top1": s_pre["eval_top1"], "A_pretrain_s": s_pre["time_s"],
        "A_finetune_cifar10_test_top1": s_ft["eval_top1"], "A_finetune_s": s_ft["time_s"],
        "B_scratch_cifar10_test_top1": s_b["eval_top1"], "B_scratch_s": s_b["time_s"],
        "pre_size": args.pre_size, "ft_size": args.ft_size,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
