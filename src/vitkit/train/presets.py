"""Training presets, all declared here (as big_vision's ``configs/``).

Each preset is a small function returning a :class:`TrainConfig`; its docstring states what it
reproduces, the expected result and the cost. Change any field on the command line:
``vitkit train --preset vit_finetune --out runs/ft model.init=imagenet21k/ViT-B_16 optim.lr=0.003``.
Data paths in the presets are placeholders to override with ``data.train=... data.test=...``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .config import DataConfig, ModelConfig, OptimConfig, ScheduleConfig, TrainConfig

PRESETS: dict[str, Callable[[], TrainConfig]] = {}
# The shared CIFAR-10 WebDataset copy (JPEG q75!): a directory of train-*/test-* shards, decoded into
# memory once (cache=memory: 180 MB; the stream would re-parse every JPEG each epoch).
_CIFAR10 = ("wds:/work/shared/data/cifar10?num_classes=10&num_examples=train:50000,test:10000"
            "&classes=airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck&cache=memory")


def preset(fn: Callable[[], TrainConfig]) -> Callable[[], TrainConfig]:
    PRESETS[fn.__name__] = fn
    return fn


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        from ..errors import unknown_name

        raise unknown_name("preset", name, PRESETS, f"available presets: {', '.join(sorted(PRESETS))}")
    cfg = PRESETS[name]()
    cfg.preset = name
    return cfg


def describe(name: str) -> str:
    """The first sentence of the preset's docstring, whole (it may span lines), as plain text (no ``code``
    backticks)."""
    doc = " ".join((PRESETS[name].__doc__ or "").split("\n\n", 1)[0].split())
    doc = re.sub(r"`+([^`]*)`+", r"\1", doc)
    # The first ". " that ends a sentence: not after "e.g."/"i.e."/"cf."/"vs."/"Sec."/"App."/"al."/"No."/"Fig."
    m = re.search(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bcf)(?<!\bvs)(?<!\bSec)(?<!\bApp)(?<!\bal)(?<!\bNo)(?<!\bFig)"
                  r"\.(\s|$)", doc)
    return doc[: m.start() + 1] if m else doc


@preset
def default() -> TrainConfig:
    """A tiny ViT on scikit-learn's digits (no download), a smoke test: ~89% test top-1, ~20 s on 1 CPU core."""
    return TrainConfig(
        model=ModelConfig(name="ViT-Ti_16", patch_size=4, hidden_size=64, mlp_dim=128, num_heads=4, num_layers=2),
        data=DataConfig(train="digits", image_size=16, batch_size=64, crop_area=(0.5, 1.0), flip=False),
        optim=OptimConfig(name="adamw", lr=3e-3, weight_decay=0.05),
        schedule=ScheduleConfig(steps=300, warmup_steps=30, decay="cosine"),
        eval_every=100, log_every=20, checkpoint_every=100,
    )


@preset
def vit_pretrain() -> TrainConfig:
    """The paper's pre-training (Dosovitskiy et al. 2020, Sec. 4.1 and App. B.1): ViT-B/16 at 224 px.

    Adam (0.9, 0.999), decoupled weight decay 0.1 (relative to the learning rate, as the
    official Flax Adam), batch 4096 reached by gradient accumulation (128 images per process
    per pass), 10k linear warm-up steps then linear decay, gradient clipping at global norm 1,
    dropout 0.1, a 768-wide tanh representation layer, softmax cross-entropy (sigmoid for
    multi-label data with ``loss=auto``). Inception crop + flip.
    Expected: on ImageNet-21k for 90 epochs the paper's ViT-B/16 reaches 84.0% ImageNet top-1
    after fine-tuning at 384 px. Cost: ~230 TPUv3-core-days (Table 2 scale), i.e. weeks of one
    8-GPU node; not feasible on a CPU. Set ``data.train`` to your shards.
    """
    return TrainConfig(
        model=ModelConfig(name="ViT-B_16", representation_size=768, dropout_rate=0.1),
        data=DataConfig(train="wds:imagenet21k/train-{000000..009999}.tar", test=None, image_size=224,
                        batch_size=4096, micro_batch_size=128, crop_area=(0.05, 1.0), flip=True),
        optim=OptimConfig(name="adam", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.1, wd_mode="lr", clip_norm=1.0),
        schedule=ScheduleConfig(epochs=90, steps=0, warmup_steps=10_000, decay="linear"),
        precision="auto", eval_every=10_000, log_every=100, checkpoint_every=2_000, keep_last=3,
    )


@preset
def vit_finetune() -> TrainConfig:
    """The paper's fine-tuning (App. B.1.1): SGD momentum 0.9, no weight decay, batch 512, clip 1,
    500 warm-up steps then cosine decay, 384 px, a fresh zero-initialised head.

    Pick ``optim.lr`` from {0.001, 0.003, 0.01, 0.03} on a held-out split; 10k steps for
    CIFAR (``schedule.steps=10000``, the default here) and 20k for ImageNet. ``model.init``
    expects the catalogue name ``imagenet21k/ViT-B_16`` (the paper's ImageNet-21k ViT-B/16,
    ``gs://vit_models/imagenet21k/ViT-B_16.npz``, 394 MiB, downloaded once into ``$VITKIT_CACHE``;
    ``vitkit models --pretrained`` lists the others); any source ``load_model`` reads works
    (a local ``.npz``, a URL, ``hf-hub:...``, a run folder), at any resolution: the position
    embeddings are interpolated in 2D.
    Expected: ViT-B/16 (ImageNet-21k) -> CIFAR-10 98.1%, ImageNet 84.0% (paper Table 5 / 9).
    Cost: ViT-B/16 at 384 px, 10k steps x 512 images: about a day on one modern GPU.
    """
    return TrainConfig(
        model=ModelConfig(name="ViT-B_16", init="imagenet21k/ViT-B_16"),
        data=DataConfig(train="cifar:cifar-10-batches-py", image_size=384, batch_size=512, micro_batch_size=64,
                        crop_area=(0.05, 1.0), flip=True, eval_resize="resize"),
        optim=OptimConfig(name="sgd", lr=0.01, momentum=0.9, weight_decay=0.0, clip_norm=1.0),
        schedule=ScheduleConfig(steps=10_000, warmup_steps=500, decay="cosine"),
        eval_every=1000, log_every=50, checkpoint_every=1000,
    )


@preset
def bigvision_s16_i1k() -> TrainConfig:
    """big_vision's plain ViT-S/16 on ImageNet-1k (``configs/vit_s16_i1k.py``, Beyer et al. 2022).

    As in that file: global-average pooling, a representation layer (``rep_size=True``, i.e.
    384 wide), inception crop 224 + flip + RandAugment(2, 10), mixup alpha 0.2, Adam with
    decoupled weight decay 1e-4 scaled by the schedule only (big_vision's ``wd``), lr 0.001,
    batch 1024, 90 epochs, 10k warm-up steps then cosine, clip 1, softmax cross-entropy,
    evaluation resize 256 + centre crop 224. Difference: big_vision uses fixed sin-cos 2D
    position embeddings; vitkit's are learned.
    Expected (big_vision): 76.5% ImageNet top-1 after 90 epochs (79.8% for 300 epochs).
    Cost: 6-7 h on a TPUv3-8; roughly a day on 8 A100s with this PyTorch code.
    """
    return TrainConfig(
        model=ModelConfig(name="ViT-S_16-gap-norep", classifier="gap", representation_size=384),
        data=DataConfig(train="wds:imagenet/train-{000000..001023}.tar", test="wds:imagenet/val-{000000..000063}.tar",
                        image_size=224, batch_size=1024, micro_batch_size=128, crop_area=(0.05, 1.0), flip=True,
                        randaugment=(2, 10), mixup_alpha=0.2, mixup_prob=1.0, eval_resize="resize_crop",
                        shuffle_buffer=25_000),
        optim=OptimConfig(name="adamw", lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4, wd_mode="schedule",
                          clip_norm=1.0),
        schedule=ScheduleConfig(epochs=90, steps=0, warmup_steps=10_000, decay="cosine"),
        eval_every=2_500, log_every=50, checkpoint_every=1_000,
    )


@preset
def deit() -> TrainConfig:
    """DeiT-S (Touvron et al. 2021, Table 9) from scratch on ImageNet-1k, without distillation.

    AdamW lr 5e-4 x batch/512 (1e-3 at batch 1024), weight decay 0.05, 300 epochs, 5 warm-up
    epochs (6,250 steps) then cosine, label smoothing 0.1, RandAugment(2, 9), mixup 0.8,
    cutmix 1.0 (switch 0.5), stochastic depth 0.1, no dropout, no gradient clipping, class
    token, evaluation resize + centre crop. Not included: random erasing, repeated augmentation.
    Expected: 79.8% ImageNet top-1 (DeiT-S). Cost: ~3 days on one 8-V100 node in the paper.
    """
    return TrainConfig(
        model=ModelConfig(name="ViT-S_16", dropout_rate=0.0, drop_path_rate=0.1),
        data=DataConfig(train="wds:imagenet/train-{000000..001023}.tar", test="wds:imagenet/val-{000000..000063}.tar",
                        image_size=224, batch_size=1024, micro_batch_size=128, crop_area=(0.08, 1.0), flip=True,
                        randaugment=(2, 9), mixup_alpha=0.8, cutmix_alpha=1.0, mixup_prob=1.0,
                        mixup_switch_prob=0.5, label_smoothing=0.1, eval_resize="resize_crop", shuffle_buffer=25_000),
        optim=OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05, wd_mode="lr", clip_norm=0.0),
        schedule=ScheduleConfig(epochs=300, steps=0, warmup_steps=6_250, decay="cosine", end_lr_ratio=0.01),
        eval_every=5_000, log_every=50, checkpoint_every=1_000,
    )


@preset
def cifar10_cpu() -> TrainConfig:
    """CIFAR-10 from scratch on a 2-core CPU: a ViT with a convolutional stem (ViT_C of Xiao et al.
    2021, "Early Convolutions Help Transformers See Better"): four 3x3 convolutions with BatchNorm and
    ReLU (32, 64, 128, 128 channels; strides 1, 2, 2, 1), then 1x1 patches on the 8x8 map at 32 px:
    64 tokens + the class token.

    4 blocks of width 128 (4 heads, MLP 512), the class token as the classifier (as the paper's
    ViT), AdamW lr 2e-3 with weight decay 0.05, batch 128, short warm-up then cosine over the time
    budget, the CIFAR ResNets' crop (``data.crop_padding=4``: a random 32x32 window of the image
    reflect-padded by 4 px) + flip, label smoothing 0.1, no Mixup or RandAugment.
    Why the class token and not global-average pooling: the last block then runs on
    one token (the model's ``fast_paths``, exact), 5-18% more steps in the same time. Progressive
    resizing: the first 60% of the training time runs on batches downsampled to 24 px (6x6 tokens,
    position embeddings resampled on the fly), the rest at 32 px. Each evaluation also scores the
    mirrored test images (``eval_flip``: ``eval/flip_top1`` beside the single-view ``eval/top1``).
    precision ``auto``: bf16 on CPUs with native bf16. Two torch threads for the model, one loader
    process; the shards are decoded into memory once (``cache=memory`` in the spec).
    Set ``data.train``/``data.test`` to the shards, e.g. the JPEG (q75) copy in
    ``/work/shared/data/cifar10`` (the default here; ``benchmarks/cifar10_cpu.py`` uses it, with a
    30-minute ``schedule.time_budget_s``). Goal: 85% test top-1 within 30 minutes on 2 cores
    (``python benchmarks/cifar10_cpu.py --minutes 30 --evals 3 seed=N``; results in
    ``benchmarks/results/cifar10_cpu/`` and the README).
    How the stem was chosen (2026-12-03, without the test set): a prototype with this transformer
    trained on the first 45,000 training images and scored on the other 5,000
    (``benchmarks/results/cifar10_cpu/stem_choice_2026-12-03/``). 6 minutes: the BiT root + one
    bottleneck stage of the preset before (below) 74.5%, this stem 79.2% (1.4x its images/s),
    a heavier 5-convolution stem (64, 64, 128, 128, 256) 79.8%; 12 minutes: this stem 83.5%, the
    heavier one 81.3%.
    Measured, 30-minute runs (``python benchmarks/cifar10_cpu.py --minutes 30 --evals 3 seed=N``, JPEG q75 copy,
    single-view / flip-averaged test top-1, 2026-12-03, Xeon/AMX): seed 0 **85.46%** / 86.10% (14,012 steps, 36
    epochs), seed 1 **84.73%** / 85.76% (14,122 steps), seed 2 (2026-12-04) **85.16%** / 86.12% (13,089 steps); mean
    **85.12%** / 85.99% over the three seeds. The prototype's choice included its crop (the padded window); the
    first port used the inception crop (90-100% of the area) instead, and gave 83.34% / 84.72% on seed 0 (14,226
    steps), so the port now uses the crop the prototype chose on the held-out split.
    The preset before, the paper's hybrid (the official R+ViT root, 7x7/2 StdConv + GroupNorm + 3x3/2
    max-pool, width 128, plus one bottleneck unit, 512 channels), same transformer and recipe: mean
    81.37% over five 30-minute runs (81.51 / 81.19 / 81.21 / 81.59 / 81.35%; 8,056-8,483 steps), and
    81.40% over three with ``compile=true``. Every recipe change tried on it moved it by tenths (lr,
    batch 64/256, AdamW beta2, crop area, 5 blocks, width 192, global-average pooling: 80.63%);
    the stem was what held it.
    """
    return TrainConfig(
        model=ModelConfig(name="ViT-Ti_16", patch_size=1, hidden_size=128, mlp_dim=512, num_heads=4,
                          num_layers=4, classifier="token", representation_size=0, dropout_rate=0.0,
                          drop_path_rate=0.0, stem_channels=(32, 64, 128, 128), stem_strides=(1, 2, 2, 1)),
        data=DataConfig(train=_CIFAR10, test=_CIFAR10, image_size=32, batch_size=128,
                        crop_area=(1.0, 1.0), crop_padding=4, flip=True, label_smoothing=0.1, eval_batch_size=500,
                        shuffle_buffer=5000, num_workers=1, progressive_resize=(24, 0.6)),
        optim=OptimConfig(name="adamw", lr=2e-3, weight_decay=0.05, clip_norm=1.0),
        schedule=ScheduleConfig(steps=6000, warmup_steps=200, decay="cosine"),
        precision="auto", threads=2, eval_every=1000, log_every=50, checkpoint_every=1000, eval_flip=True,
    )


@preset
def demo_pretrain() -> TrainConfig:
    """``vitkit demo`` step 1: pre-train a small ViT (width 64, 3 blocks, patch 4, the paper's tanh
    representation layer) on digits at 16 px (8x8 upsampled), Adam with decoupled weight decay,
    linear decay, label smoothing 0.1. Expected ~97.5% test top-1 (measured, seeds 0-4: 97.2%,
    96.7%, 97.8%, 97.2%, 97.8% on the 359 test images). Cost: measured 30-32 s on one core."""
    return TrainConfig(
        model=ModelConfig(name="ViT-Ti_16", patch_size=4, hidden_size=64, mlp_dim=128, num_heads=4, num_layers=3,
                          representation_size=64),
        data=DataConfig(train="digits", image_size=16, batch_size=64, crop_area=(0.6, 1.0), flip=False,
                        label_smoothing=0.1, eval_batch_size=360, num_workers=0),
        optim=OptimConfig(name="adam", lr=2e-3, weight_decay=0.05, wd_mode="lr", clip_norm=1.0),
        schedule=ScheduleConfig(steps=1500, warmup_steps=50, decay="linear"),
        precision="fp32", threads=1, eval_every=750, log_every=25, checkpoint_every=500, keep_last=1,
    )


@preset
def demo_finetune() -> TrainConfig:
    """``vitkit demo`` step 2: fine-tune the pre-trained model at twice the resolution (32 px,
    position embeddings interpolated, representation layer dropped, fresh zero head) with SGD
    momentum 0.9 and cosine decay as the paper. Expected >= 97% test top-1 (measured, seeds 0-4:
    98.3%, 97.8%, 98.3%, 98.3%, 98.6%; one test image is 0.28%). 600 steps: with 300 the same seeds
    gave 97.2%, 98.6%, 97.8%, 97.5%, seed 0 one image above the goal. Cost: measured 34-35 s on one
    core. ``model.init`` is set by the demo."""
    return TrainConfig(
        model=ModelConfig(name="ViT-Ti_16", init=None),
        data=DataConfig(train="digits", image_size=32, batch_size=64, crop_area=(0.6, 1.0), flip=False,
                        label_smoothing=0.1, eval_batch_size=360, num_workers=0),
        optim=OptimConfig(name="sgd", lr=0.03, momentum=0.9, weight_decay=0.0, clip_norm=1.0),
        schedule=ScheduleConfig(steps=600, warmup_steps=30, decay="cosine"),
        precision="fp32", threads=1, eval_every=150, log_every=25, checkpoint_every=150, keep_last=1,
    )
