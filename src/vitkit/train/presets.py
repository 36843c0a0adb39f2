"""Training presets, all declared here (as big_vision's ``configs/``).

Each preset is a small function returning a :class:`TrainConfig`; its docstring states what it
reproduces, the expected result and the cost. Change any field on the command line:
``vitkit train --preset vit_finetune --out runs/ft model.init=imagenet21k/ViT-B_16 optim.lr=0.003``.
Presets name their data: a named data set (``cifar10``, fetched once into ``$VITKIT_DATA``, see
``vitkit data list``) or a placeholder path to override with ``data.train=... data.test=...``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import DataConfig, ModelConfig, OptimConfig, ScheduleConfig, TrainConfig

if TYPE_CHECKING:
    from ..data.spec import DataSource

PRESETS: dict[str, Callable[[], TrainConfig]] = {}


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


def check_own_test_set(cfg: TrainConfig, train_data: DataSource | None = None,
                       test_data: DataSource | None = None) -> None:
    """A preset that names its test data tests on its own data: training on other data while ``data.test`` stays
    the preset's is a UserError (it would score a model of other classes, silently). ``train_data``/``test_data``:
    the data objects of ``vitkit.train.train`` in place of ``data.train``/``data.test``."""
    if not cfg.preset or cfg.preset not in PRESETS or test_data is not None:
        return
    own = PRESETS[cfg.preset]().data
    train = cfg.data.train if train_data is None else train_data
    if own.test is None or cfg.data.test != own.test or (isinstance(train, str) and train == own.train):
        return
    from ..data.spec import describe_data
    from ..errors import UserError

    fix = ("pass test_data= as well" if train_data is not None else
           f"give --data {train} (it sets both splits) or set data.test too")
    raise UserError(f"preset {cfg.preset!r} tests on its own data (data.test={own.test}) but data.train is "
                    f"{describe_data(train)}: {fix}")


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

    Pick ``optim.lr`` from {0.001, 0.003, 0.01, 0.03} on a held-out split; 10k steps for CIFAR (the default
    here) and 20k for ImageNet. ``model.init``: the catalogue's ``imagenet21k/ViT-B_16`` (394 MiB, downloaded
    once; ``vitkit models --pretrained`` lists the others) or any source ``load_model`` reads, at any resolution.
    Expected: ViT-B/16 (ImageNet-21k) -> CIFAR-10 98.1%, ImageNet 84.0% (paper Table 5 / 9).
    Cost: ViT-B/16 at 384 px, 10k steps x 512 images: about a day on one modern GPU.
    """
    return TrainConfig(
        model=ModelConfig(name="ViT-B_16", init="imagenet21k/ViT-B_16"),
        data=DataConfig(train="cifar10", image_size=384, batch_size=512, micro_batch_size=64,
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
    """CIFAR-10 from scratch in 30 minutes on 2 CPU cores: a ViT with a convolutional stem (ViT_C, Xiao et al. 2021).

    Recipe: four 3x3 conv + BatchNorm + ReLU (32, 64, 128, 128 channels; strides 1, 2, 2, 1), 1x1 patches on the
    8x8 map (64 tokens + class token), 4 blocks of width 128 (4 heads, MLP 512), class-token classifier; AdamW lr
    2e-3, weight decay 0.05, batch 128, warm-up then cosine over the time budget; padded crop (``crop_padding=4``)
    + flip, label smoothing 0.1; 24 px for the first 60% of the time (progressive resizing); flip-averaged
    evaluation beside single view; precision ``auto``, 2 threads. Data: the named data set ``cifar10``.
    Expected: 85.1% test top-1 single view, 86.0% flip-averaged (mean of seeds 0-2, on a JPEG q75 copy).
    Cost: 30 minutes on 2 cores (``python benchmarks/cifar10_cpu.py --minutes 30 --evals 3 seed=N``). Every run,
    the stem's choice and the presets before: ``benchmarks/results/README.md``.
    """
    return TrainConfig(
        model=ModelConfig(name="ViT-Ti_16", patch_size=1, hidden_size=128, mlp_dim=512, num_heads=4,
                          num_layers=4, classifier="token", representation_size=0, dropout_rate=0.0,
                          drop_path_rate=0.0, stem_channels=(32, 64, 128, 128), stem_strides=(1, 2, 2, 1)),
        data=DataConfig(train="cifar10", test="cifar10", image_size=32, batch_size=128,
                        crop_area=(1.0, 1.0), crop_padding=4, flip=True, label_smoothing=0.1, eval_batch_size=500,
                        shuffle_buffer=5000, num_workers=1, progressive_resize=(24, 0.6)),
        optim=OptimConfig(name="adamw", lr=2e-3, weight_decay=0.05, clip_norm=1.0),
        schedule=ScheduleConfig(steps=6000, warmup_steps=200, decay="cosine"),
        precision="auto", threads=2, eval_every=1000, log_every=50, checkpoint_every=1000, eval_flip=True,
    )


@preset
def mpp_pretrain() -> TrainConfig:
    """Masked patch prediction (paper Sec. 4.6, App. B.1.2), no labels: 50% of the patches corrupted (80% [mask],
    10% another patch, 10% kept); predict each one's 3-bit mean colour (512 classes). Fine-tune with model.init=RUN.
    Paper: ViT-B/16 on JFT, Adam lr 2e-4, 10k warm-up steps then cosine, batch 4096, 1M steps (79.9% ImageNet
    after fine-tuning). Scaled to 2 CPU cores: the cifar10_cpu model (conv stem: 4x4-pixel patches) on the CIFAR-10
    training images, batch 128 (what 2 cores step in ~0.3 s), 6000 steps with 200 warm-up, the paper's lr and decay;
    data.train may be any images, also a folder: without class sub-folders.
    Expected and cost: benchmarks/results/README.md (masked patch prediction); 6000 steps ~30 min on 2 cores.
    """
    cfg = cifar10_cpu()
    cfg.objective = "masked_patch"
    cfg.data = DataConfig(train=cfg.data.train, test=cfg.data.test, image_size=32, batch_size=128,
                          crop_area=(1.0, 1.0), crop_padding=4, flip=True, eval_batch_size=500, eval_limit=2000,
                          shuffle_buffer=5000, num_workers=1)
    cfg.optim = OptimConfig(name="adam", lr=2e-4, weight_decay=0.0, clip_norm=1.0)
    cfg.schedule = ScheduleConfig(steps=6000, warmup_steps=200, decay="cosine")
    cfg.eval_flip = False
    return cfg


@preset
def demo_pretrain() -> TrainConfig:
    """``vitkit demo`` step 1: pre-train a small ViT (width 64, 3 blocks, patch 4, the paper's tanh
    representation layer) on digits at 16 px (8x8 upsampled), Adam with decoupled weight decay,
    linear decay, label smoothing 0.1. Expected ~97.5% test top-1 (seeds 0-4: 96.7-97.8%). Cost: ~30 s on
    one core."""
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
    momentum 0.9 and cosine decay as the paper, 600 steps. Expected >= 97% test top-1 (seeds 0-4: 97.8-98.6%).
    Cost: ~35 s on one core. ``model.init`` is set by the demo."""
    return TrainConfig(
        model=ModelConfig(name="ViT-Ti_16", init=None),
        data=DataConfig(train="digits", image_size=32, batch_size=64, crop_area=(0.6, 1.0), flip=False,
                        label_smoothing=0.1, eval_batch_size=360, num_workers=0),
        optim=OptimConfig(name="sgd", lr=0.03, momentum=0.9, weight_decay=0.0, clip_norm=1.0),
        schedule=ScheduleConfig(steps=600, warmup_steps=30, decay="cosine"),
        precision="fp32", threads=1, eval_every=150, log_every=25, checkpoint_every=150, keep_last=1,
    )
