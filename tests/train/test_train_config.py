import dataclasses

import pytest
import yaml

from vitkit.train import config as C
from vitkit.train.presets import PRESETS, get_preset


def test_overrides_convert_types():
    cfg = C.apply_overrides(C.TrainConfig(), [
        "optim.lr=0.01", "data.batch_size=256", "data.randaugment=2,10", "compile=true", "ema=0.999",
        "data.num_workers=none", "optim.name=sgd", "model.representation_size=0", "optim.betas=0.8,0.99",
        "model.resnet_layers=(3,4)",
    ])
    assert cfg.model.resnet_layers == (3, 4)
    assert C.apply_overrides(C.TrainConfig(), ["model.resnet_layers=()"]).model.resnet_layers == ()
    assert C.apply_overrides(C.TrainConfig(), ["model.resnet_layers=none"]).model.resnet_layers is None
    assert cfg.optim.lr == 0.01 and isinstance(cfg.optim.lr, float)
    assert cfg.data.batch_size == 256 and isinstance(cfg.data.batch_size, int)
    assert cfg.data.randaugment == (2, 10)
    assert cfg.compile is True and cfg.ema == 0.999
    assert cfg.data.num_workers is None
    assert cfg.optim.name == "sgd" and cfg.model.representation_size == 0
    assert cfg.optim.betas == (0.8, 0.99)
    # The original is untouched.
    assert C.TrainConfig().optim.lr != 0.01


@pytest.mark.parametrize("item, words", [
    ("optim.lrr=1", ["optim.lrr", "optim.lr", "optim.momentum"]),
    ("nosuch=1", ["nosuch", "optim", "seed"]),
    ("optim.name=lamb", ["'adam'", "'adamw'", "'sgd'"]),
    ("data.batch_size=12.5", ["data.batch_size", "int"]),
    ("compile=maybe", ["compile", "bool"]),
    ("data.randaugment=2", ["data.randaugment", "2"]),
    ("optim=1", ["section", "optim.lr"]),
    ("optim.lr", ["key=value"]),
    ("model.resnet_layers=1,x", ["model.resnet_layers", "tuple of int"]),
    ("optim.lr=-1", ["optim.lr"]),
])
def test_bad_overrides_name_the_key_and_choices(item, words):
    with pytest.raises(ValueError) as e:
        C.apply_overrides(C.TrainConfig(), [item])
    for w in words:
        assert w in str(e.value)


def test_yaml_round_trip(tmp_path):
    cfg = C.apply_overrides(get_preset("bigvision_s16_i1k"), ["out=x", "seed=3"])
    C.save_yaml(cfg, tmp_path / "config.yaml")
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert raw["optim"]["lr"] == cfg.optim.lr and raw["data"]["randaugment"] == [2, 10]
    back = C.load_yaml(tmp_path / "config.yaml")
    assert dataclasses.asdict(back) == dataclasses.asdict(cfg)


def test_yaml_unknown_key_rejected(tmp_path):
    (tmp_path / "c.yaml").write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match="optim.learning_rate"):
        C.load_yaml(tmp_path / "c.yaml")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_documented(name):
    cfg = get_preset(name)
    C.validate(cfg)
    doc = PRESETS[name].__doc__ or ""
    assert len(doc.split()) >= 10, f"preset {name} needs a docstring with expected result and cost"


def test_presets_match_their_sources():
    # Numbers from the paper (App. B.1) and big_vision/configs/vit_s16_i1k.py.
    p = get_preset("vit_pretrain")
    assert (p.optim.name, p.optim.betas, p.optim.weight_decay, p.optim.clip_norm) == ("adam", (0.9, 0.999), 0.1, 1.0)
    assert (p.data.batch_size, p.schedule.warmup_steps, p.schedule.decay) == (4096, 10_000, "linear")
    assert p.model.dropout_rate == 0.1 and p.model.representation_size
    f = get_preset("vit_finetune")
    assert (f.optim.name, f.optim.momentum, f.optim.weight_decay, f.data.batch_size) == ("sgd", 0.9, 0.0, 512)
    assert (f.schedule.warmup_steps, f.schedule.decay, f.data.image_size) == (500, "cosine", 384)
    assert f.optim.lr in (0.001, 0.003, 0.01, 0.03) and f.schedule.steps == 10_000
    b = get_preset("bigvision_s16_i1k")
    assert (b.model.classifier, b.data.randaugment, b.data.mixup_alpha) == ("gap", (2, 10), 0.2)
    assert (b.optim.lr, b.optim.weight_decay, b.optim.wd_mode, b.data.batch_size) == (1e-3, 1e-4, "schedule", 1024)
    assert (b.schedule.epochs, b.schedule.warmup_steps, b.schedule.decay) == (90, 10_000, "cosine")


def test_list_options_covers_every_field():
    keys = {k for k, _, _ in C.list_options()}
    assert {"optim.lr", "data.mixup_alpha", "schedule.warmup_steps", "dist.strategy", "ema"} <= keys



@pytest.mark.parametrize("value, words", [("32,0.5", "1 <= size < data.image_size=32"), ("16,1.0", "0 < fraction < 1"),
                                          ("16,0", "0 < fraction < 1")])
def test_progressive_resize_checked(value, words):
    with pytest.raises(ValueError, match="data.progressive_resize") as e:
        C.apply_overrides(C.TrainConfig(), ["data.image_size=32", f"data.progressive_resize={value}"])
    assert words in str(e.value)
    ok = C.apply_overrides(C.TrainConfig(), ["data.image_size=32", "data.progressive_resize=24,0.4"])
    assert ok.data.progressive_resize == (24, 0.4) and isinstance(ok.data.progressive_resize[0], int)


def test_vocabularies_are_the_consumers():
    """--list-options offers exactly what the consumers accept (one definition each)."""
    import typing

    from vitkit.data.spec import SPLIT_NAMES
    from vitkit.data.transforms import EVAL_RESIZE
    from vitkit.models.config import GELU_VARIANTS, POOLED_CLASSIFIERS
    from vitkit.perf import PRECISIONS

    hints = typing.get_type_hints(C.DataConfig)
    assert typing.get_args(hints["eval_resize"]) == EVAL_RESIZE
    assert typing.get_args(hints["test_split"]) == SPLIT_NAMES
    assert typing.get_args(typing.get_type_hints(C.TrainConfig)["precision"]) == PRECISIONS
    options = {k: tp for k, tp, _ in C.list_options()}
    assert options["model.classifier"] == "one of " + ", ".join(map(repr, POOLED_CLASSIFIERS)) + " or none"
    assert all(repr(g) in options["model.gelu"] for g in GELU_VARIANTS)
    with pytest.raises(ValueError, match="data.eval_resize='crop': expected one of 'resize', 'resize_crop'"):
        C.apply_overrides(C.TrainConfig(), ["data.eval_resize=crop"])


def test_model_options_are_the_model_config_fields():
    import dataclasses

    from vitkit.models import ViTConfig

    model_keys = {f.name for f in dataclasses.fields(C.ModelConfig)}
    vit_keys = {f.name for f in dataclasses.fields(ViTConfig)}
    # Decided by the data (classes, size) or given flat (the hybrid stem): everything else is an override.
    assert vit_keys - model_keys == {"name", "num_classes", "class_names", "image_size", "resnet", "extra"} - {"name"}
    assert model_keys - vit_keys == {"init", "resnet_layers", "resnet_width"}
    cfg = C.apply_overrides(C.TrainConfig(), ["model.gelu=exact", "model.patch_size=4,2", "model.layer_norm_eps=1e-5"])
    assert (cfg.model.gelu, cfg.model.patch_size, cfg.model.layer_norm_eps) == ("exact", (4, 2), 1e-5)


def test_steps_and_epochs_one_decides():
    epochs = get_preset("deit")
    assert epochs.schedule.epochs == 300 and epochs.schedule.steps == 0
    cfg = C.apply_overrides(epochs, ["schedule.steps=7"])  # an explicit steps is not overridden by the preset
    assert (cfg.schedule.steps, cfg.schedule.epochs) == (7, 0)
    cfg = C.apply_overrides(get_preset("default"), ["schedule.epochs=2"])
    assert (cfg.schedule.steps, cfg.schedule.epochs) == (0, 2)
    with pytest.raises(ValueError, match="schedule.steps and schedule.epochs both set"):
        C.apply_overrides(epochs, ["schedule.steps=7", "schedule.epochs=1"])
    with pytest.raises(ValueError, match="both set"):
        C.validate(C.from_dict({"schedule": {"steps": 5, "epochs": 1}}))


def test_image_size_is_a_pair_or_one_number():
    cfg = C.apply_overrides(C.TrainConfig(), ["data.image_size=16,24"])
    assert cfg.data.image_size == (16, 24) and C.image_hw(cfg.data) == (16, 24)
    assert C.from_dict(C.to_dict(cfg)).data.image_size == (16, 24)  # through config.yaml
    assert C.image_hw(C.apply_overrides(C.TrainConfig(), ["data.image_size=16"]).data) == (16, 16)
    with pytest.raises(ValueError, match="square"):
        C.apply_overrides(C.TrainConfig(), ["data.image_size=16,24", "data.progressive_resize=8,0.5"])


def test_init_drops_the_presets_architecture_but_keeps_explicit_fields():
    cfg = C.apply_overrides(get_preset("cifar10_cpu"), ["model.init=x.safetensors", "model.num_layers=4"])
    m = cfg.model
    assert (m.patch_size, m.hidden_size, m.classifier, m.resnet_layers) == (None, None, None, None)
    assert m.num_layers == 4  # explicit: checked against the file when the model is built
    assert m.dropout_rate == 0.0  # not architecture: the preset's regularisers stay
