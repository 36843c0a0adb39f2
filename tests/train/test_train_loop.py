import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

import vitkit
from vitkit.checkpoints import CheckpointError
from vitkit.train import loop
from vitkit.train.build import build_train_model
from vitkit.train.config import apply_overrides
from vitkit.train.guard import TrainingDiverged
from vitkit.train.presets import get_preset

TINY = ["model.patch_size=4", "model.hidden_size=32", "model.mlp_dim=64", "model.num_heads=2",
        "model.num_layers=2", "data.train=digits", "data.image_size=8", "data.batch_size=16",
        "data.eval_batch_size=128", "data.num_workers=0", "data.crop_area=0.6,1", "data.flip=false",
        "optim.lr=0.003", "schedule.warmup_steps=2", "log_every=2", "threads=1", "precision=fp32"]


def tiny(out, *extra):
    return apply_overrides(get_preset("default"), [*TINY, f"out={out}", *extra])


def params(path):
    return load_file(str(path))


def test_run_writes_everything(tmp_path):
    cfg = tiny(tmp_path / "r", "schedule.steps=6", "eval_every=3", "checkpoint_every=2", "keep_last=2",
               "data.eval_limit=64")
    s = loop.train(cfg, progress=False)
    out = tmp_path / "r"
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "model.safetensors"):
        assert (out / name).is_file(), name
    assert list((out / "tb").iterdir()), "no TensorBoard events"
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("step_*.pt"))
    assert ckpts == ["step_00000004.pt", "step_00000006.pt"]  # keep_last=2
    assert not list((out / "checkpoints").glob(".*tmp*"))
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 0.003 and saved["model"]["hidden_size"] == 32
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [2, 4, 6]
    evals = [r for r in lines if "eval/top1" in r]
    assert [r["step"] for r in evals] == [3, 6]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["finished"]
    assert summary["eval_top1"] == evals[-1]["eval/top1"] and 0 <= summary["eval_top5"] <= 1
    assert summary["eval"]["examples"] == 64
    assert "data" in summary and summary["images_per_s"] > 0
    model = vitkit.load_model(out / "model.safetensors")
    assert model.config.num_classes == 10 and model.config.image_size == (8, 8)
    assert model.config.class_names is not None and len(model.config.class_names) == 10
    assert s["eval_top1"] == summary["eval_top1"]


def test_existing_run_needs_resume(tmp_path):
    cfg = tiny(tmp_path / "r", "schedule.steps=2", "checkpoint_every=1")
    loop.train(cfg, progress=False)
    with pytest.raises(ValueError, match="--resume"):
        loop.train(cfg, progress=False)


@pytest.mark.parametrize("extra", [[], ["data.mixup_alpha=0.5", "model.dropout_rate=0.1", "ema=0.9"],
                                   ["data.progressive_resize=4,0.75"]])  # low-res phase ends after the resume
def test_resume_is_bitwise(tmp_path, extra):
    # 12 steps = several epochs of the 120-image subset, so the data position crosses epochs.
    over = ["schedule.steps=12", "checkpoint_every=5", "deterministic=true", "data.limit=48", "eval_every=0",
            *extra]
    straight = loop.train(tiny(tmp_path / "a", *over), progress=False)
    loop.train(tiny(tmp_path / "b", *over), progress=False, stop_at=7)
    assert not (tmp_path / "b" / "model.safetensors").exists()
    loop.train(tiny(tmp_path / "b", *over), progress=False, resume=True)
    a, b = params(tmp_path / "a" / "model.safetensors"), params(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = torch.load(tmp_path / "a/checkpoints/step_00000012.pt", weights_only=True)
    sb = torch.load(tmp_path / "b/checkpoints/step_00000012.pt", weights_only=True)
    for k, v in sa["optimizer"]["state"].items():
        for name, t in v.items():
            assert torch.equal(t, sb["optimizer"]["state"][k][name]), (k, name)
    if "ema=0.9" in extra:
        for k in sa["ema"]:
            assert torch.equal(sa["ema"][k], sb["ema"][k]), k
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if "loss" in r]
    assert steps == sorted(set(steps)), "metrics.jsonl has duplicated steps after resume"
    assert straight["steps"] == 12


def test_accumulation_equals_full_batch(tmp_path):
    # SGD: Adam would turn the rounding noise of near-zero gradients (the key bias) into lr-sized steps.
    over = ["schedule.steps=3", "eval_every=0", "checkpoint_every=0", "data.batch_size=16", "optim.clip_norm=0.5",
            "optim.name=sgd", "optim.lr=0.1"]
    loop.train(tiny(tmp_path / "full", *over), progress=False)
    loop.train(tiny(tmp_path / "acc", *over, "data.micro_batch_size=4"), progress=False)
    a, b = params(tmp_path / "full" / "model.safetensors"), params(tmp_path / "acc" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)


@pytest.mark.parametrize("name, layers, stages", [("ViT-Ti_16", "()", 0), ("R+ViT-Ti_16", "(1,)", 1),
                                                   ("R+ViT-Ti_16", None, 0)])
def test_hybrid_stem_from_config(name, layers, stages):
    over = [f"model.name={name}", "model.patch_size=1", "data.image_size=16"]
    if layers is not None:
        over.append(f"model.resnet_layers={layers}")
    model = build_train_model(apply_overrides(get_preset("default"), over), 10, None)
    assert model.config.resnet is not None and len(model.config.resnet.num_layers) == stages
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 10)
    # 16 px through the root block's /4 (the first ResNet stage keeps the stride) and 1x1 patches:
    # a 4x4 grid + the class token.
    assert model.embed(torch.zeros(1, 3, 16, 16)).shape[1] == 17


def test_activation_checkpointing_same_update(tmp_path):
    over = ["schedule.steps=2", "eval_every=0", "checkpoint_every=0", "model.drop_path_rate=0.2", "optim.name=sgd"]
    loop.train(tiny(tmp_path / "a", *over), progress=False)
    loop.train(tiny(tmp_path / "b", *over, "activation_checkpointing=true"), progress=False)
    a, b = params(tmp_path / "a" / "model.safetensors"), params(tmp_path / "b" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)


def _nan_at_fifth_loss(monkeypatch):
    real = loop.compute_loss
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] == 5 else out

    monkeypatch.setattr(loop, "compute_loss", flaky)


def test_nan_loss_stops_with_step_and_checkpoint(tmp_path, monkeypatch):
    _nan_at_fifth_loss(monkeypatch)
    cfg = tiny(tmp_path / "r", "schedule.steps=10", "checkpoint_every=2", "eval_every=0")
    with pytest.raises(TrainingDiverged) as e:
        loop.train(cfg, progress=False)
    msg = str(e.value)
    assert "step 5" in msg and "step_00000004.pt" in msg


def _lagged(monkeypatch):
    """Read the per-step flags one step late, as on CUDA, on this CPU."""
    monkeypatch.setattr(loop, "reads_flags_late", lambda device: True)


def test_lagged_flags_change_nothing_but_when_they_are_read(tmp_path, monkeypatch):
    over = ["schedule.steps=7", "eval_every=0", "checkpoint_every=3", "log_every=2"]
    loop.train(tiny(tmp_path / "a", *over), progress=False)
    _lagged(monkeypatch)
    loop.train(tiny(tmp_path / "b", *over), progress=False)
    a, b = params(tmp_path / "a" / "model.safetensors"), params(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[json.loads(x).get("loss") for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
              for r in ("a", "b")]
    assert losses[0] == losses[1] and len([x for x in losses[0] if x is not None]) == 4  # steps 2, 4, 6, 7


def test_lagged_flags_still_stop_at_the_bad_step_before_any_checkpoint(tmp_path, monkeypatch):
    _nan_at_fifth_loss(monkeypatch)
    _lagged(monkeypatch)
    # Step 5 diverges; its flags are read during step 6, before step 6's checkpoint is written.
    cfg = tiny(tmp_path / "r", "schedule.steps=10", "checkpoint_every=3", "eval_every=0", "log_every=100")
    with pytest.raises(TrainingDiverged) as e:
        loop.train(cfg, progress=False)
    assert "step 5" in str(e.value) and "step_00000003.pt" in str(e.value)
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").glob("step_*.pt")) == ["step_00000003.pt"]


def test_finetune_from_checkpoint_at_higher_resolution(tmp_path):
    loop.train(tiny(tmp_path / "pre", "schedule.steps=2", "eval_every=0", "model.representation_size=16"),
               progress=False)
    pre = vitkit.load_model(tmp_path / "pre" / "model.safetensors")
    assert pre.config.representation_size == 16
    init = tmp_path / "pre" / "model.safetensors"
    # The preset's architecture fields (patch 4, width 64 ...) give way to the checkpoint's: nothing to unset.
    data = [x for x in TINY if not x.startswith("model.")]
    over = ["schedule.steps=1", "eval_every=0", "data.image_size=16", f"model.init={init}", "optim.name=sgd"]
    cfg = apply_overrides(get_preset("default"), [*data, *over, f"out={tmp_path / 'ft'}"])
    assert cfg.model.hidden_size is None and cfg.model.patch_size is None
    # Before any step: the paper's recipe (new zero head, no representation layer, resampled posemb).
    m = build_train_model(cfg, 10, None)
    assert m.config.image_size == (16, 16) and m.pre_logits is None
    assert torch.count_nonzero(m.head.weight) == 0
    assert m.pos_embedding.shape[1] == 1 + 4 * 4
    torch.testing.assert_close(m.blocks[0].mlp.fc1.weight, pre.blocks[0].mlp.fc1.weight)
    loop.train(cfg, progress=False)
    ft = vitkit.load_model(tmp_path / "ft" / "model.safetensors")
    assert ft.config.image_size == (16, 16)


def test_finetune_checks_explicit_architecture_against_the_checkpoint(tmp_path):
    loop.train(tiny(tmp_path / "pre", "schedule.steps=1", "eval_every=0"), progress=False)
    init = f"model.init={tmp_path / 'pre' / 'model.safetensors'}"
    # TINY sets model.hidden_size=32 etc. explicitly: the same values as the file, so they are accepted.
    m = build_train_model(tiny(tmp_path / "ok", init), 10, None)
    assert m.config.hidden_size == 32
    cfg = tiny(tmp_path / "ft", init, "model.hidden_size=48")
    with pytest.raises(ValueError, match=r"model.hidden_size=48 contradicts model.init=.*hidden_size=32"):
        loop.train(cfg, progress=False)


def test_finetune_checks_an_explicit_model_name_against_the_checkpoint(tmp_path):
    # A ViT-Ti_16-shaped file (width 192, 12 blocks, patch 16; 2 blocks to stay small) and model.name given
    # explicitly: a name of another shape is an error naming model.name; the file's own name is accepted.
    pre = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=32)
    path = vitkit.save_model(pre, tmp_path / "ti.safetensors")
    data = [x for x in TINY if not x.startswith(("model.", "data.image_size"))]
    base = [*data, "data.image_size=32", f"model.init={path}", f"out={tmp_path / 'ft'}"]
    with pytest.raises(ValueError, match=r"model.hidden_size=384 \(implied by model.name=ViT-S_16\) contradicts "
                                         r"model.init=.*hidden_size=192.*drop model.hidden_size / model.name"):
        build_train_model(apply_overrides(get_preset("default"), [*base, "model.name=ViT-S_16"]), 10, None)
    cfg = apply_overrides(get_preset("default"), [*base, "model.name=ViT-Ti_16"])
    assert cfg.model.hidden_size == 192  # implied by the name, so checked (and recorded in config.yaml)
    assert build_train_model(cfg, 10, None).config.hidden_size == 192
    # A name whose head count cannot split the file's width is a one-line error, not an internal one.
    small = vitkit.save_model(vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=32, hidden_size=64,
                                                  num_heads=4, mlp_dim=128, num_layers=1), tmp_path / "w64.safetensors")
    small_base = [x.replace(f"model.init={path}", f"model.init={small}") for x in base]
    with pytest.raises(CheckpointError, match=r"num_heads=12.*does not fit the checkpoint.*not divisible"):
        build_train_model(apply_overrides(get_preset("default"), [*small_base, "model.name=ViT-B_16"]), 10, None)
    # Without an explicit name the preset's name (ViT-Ti_16 here, any other in vit_finetune) is not a check.
    cfg = apply_overrides(get_preset("vit_finetune"), base)
    assert cfg.model.hidden_size is None and build_train_model(cfg, 10, None).config.num_layers == 12


def test_time_budget_ends_the_run_and_anneals(tmp_path):
    cfg = tiny(tmp_path / "r", "schedule.time_budget_s=1.5", "schedule.steps=20", "eval_every=0", "log_every=1",
               "checkpoint_every=0")
    s = loop.train(cfg, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in lines if "lr" in r]
    assert s["finished"] and s["steps"] == s["total_steps"] == len(lrs) > 2
    # Cosine over the clock: the last step's lr is a small fraction of the peak (0.003).
    assert lrs[-1] < 0.3 * 0.003 and max(lrs) > 0.5 * 0.003


def test_evaluation_builds_no_autograd_graph(tmp_path, monkeypatch):
    seen = []
    real = loop.build_train_model

    def build(*a, **k):
        m = real(*a, **k)
        m.register_forward_hook(lambda mod, i, o: seen.append((mod.training, o.requires_grad)))
        return m

    monkeypatch.setattr(loop, "build_train_model", build)
    loop.train(tiny(tmp_path / "r", "schedule.steps=2", "eval_every=1", "data.eval_limit=32"), progress=False)
    assert {g for t, g in seen if t} == {True}  # training forwards keep their graph
    assert {g for t, g in seen if not t} == {False}  # evaluation forwards do not


def test_progressive_resize_trains_low_then_full_and_evaluates_full(tmp_path, monkeypatch):
    seen = []
    real = loop.build_train_model

    def build(*a, **k):
        m = real(*a, **k)
        m.register_forward_pre_hook(lambda mod, args: seen.append((mod.training, tuple(args[0].shape[-2:]))))
        return m

    monkeypatch.setattr(loop, "build_train_model", build)
    loop.train(tiny(tmp_path / "r", "schedule.steps=6", "eval_every=0", "data.eval_limit=32",
                    "data.progressive_resize=4,0.5"), progress=False)
    assert [s for t, s in seen if t] == [(4, 4)] * 3 + [(8, 8)] * 3  # steps 0-2 of 6 at 4 px
    assert {s for t, s in seen if not t} == {(8, 8)}
    model = vitkit.load_model(tmp_path / "r" / "model.safetensors")
    assert model.config.image_size == (8, 8) and model.pos_embedding.shape[1] == 1 + 4  # stored at full size


def test_progressive_resize_must_fit_the_stride(tmp_path):
    with pytest.raises(ValueError, match=r"progressive_resize size 6: image_size=\(6, 6\) is not divisible by the"):
        loop.train(tiny(tmp_path / "r", "schedule.steps=1", "data.progressive_resize=6,0.5"), progress=False)


def test_eval_flip_scores_the_mean_of_both_views(tmp_path):
    from vitkit.data import build_loader

    s = loop.train(tiny(tmp_path / "r", "schedule.steps=8", "eval_every=0", "data.eval_limit=96", "eval_flip=true"),
                   progress=False)
    model = vitkit.load_model(tmp_path / "r" / "model.safetensors").eval()
    loader = build_loader("digits", split="test", train=False, image_size=8, batch_size=40, num_workers=0,
                          limit=96, mean=model.config.mean, std=model.config.std)
    single = both = n = 0
    with torch.no_grad():
        for x, y in loader:
            a, b = model(x), model(torch.flip(x, dims=[3]))
            single += int((a.argmax(1) == y).sum())
            both += int(((a + b).argmax(1) == y).sum())
            n += len(y)
    assert n == 96 == s["eval"]["examples"] and single != both  # the two scores differ here, so both are checked
    assert s["eval_top1"] == pytest.approx(single / n) and s["eval"]["flip_top1"] == pytest.approx(both / n)
    assert 0 <= s["eval"]["flip_top5"] <= 1


def test_time_budget_refused_with_several_processes(tmp_path, monkeypatch):
    from vitkit.train.dist import DistInfo

    monkeypatch.setattr(loop, "init_distributed", lambda *a, **k: DistInfo(rank=0, world_size=2))
    with pytest.raises(ValueError, match="time_budget_s=5.0 is for single-process benchmarks; with 2 processes"):
        loop.train(tiny(tmp_path / "r", "schedule.time_budget_s=5"), progress=False)
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_non_square_image_size_end_to_end(tmp_path):
    s = loop.train(tiny(tmp_path / "r", "data.image_size=8,12", "schedule.steps=1", "data.eval_limit=16"),
                   progress=False)
    model = vitkit.load_model(tmp_path / "r" / "model.safetensors")
    assert model.config.image_size == (8, 12) and model.pos_embedding.shape[1] == 1 + 2 * 3
    assert s["eval"]["examples"] == 16
    with pytest.raises(ValueError, match=r"image_size=\(8, 10\) is not divisible by the total stride 4"):
        loop.train(tiny(tmp_path / "bad", "data.image_size=8,10", "schedule.steps=1"), progress=False)


def test_model_options_beyond_the_usual_train(tmp_path):
    """Options --list-options offers because ViTConfig has them: a grey-input model, a plain BiT ResNet."""
    loop.train(tiny(tmp_path / "grey", "model.in_chans=1", "model.mean=0.5", "model.std=0.5", "schedule.steps=1",
                    "data.eval_limit=16"), progress=False)
    assert vitkit.load_model(tmp_path / "grey" / "model.safetensors").config.in_chans == 1
    with pytest.raises(ValueError, match=r"need in_chans=1 entries"):
        loop.train(tiny(tmp_path / "bad", "model.in_chans=1", "schedule.steps=1"), progress=False)
    s = loop.train(tiny(tmp_path / "bit", "model.name=R+ViT-Ti_16", "model.transformer=false", "schedule.steps=1",
                        "data.eval_limit=16", "model.resnet_layers=()"), progress=False)
    assert s["steps"] == 1 and not vitkit.load_model(tmp_path / "bit" / "model.safetensors").config.transformer


def test_resume_needs_no_init_file_and_checks_what_it_is_told(tmp_path):
    """A resume rebuilds the model from the training checkpoint: model.init is not read again (a download, or a
    file since deleted), weight-free options still apply, contradictions are errors."""
    loop.train(tiny(tmp_path / "pre", "schedule.steps=1", "eval_every=0"), progress=False)
    init = tmp_path / "pre" / "model.safetensors"
    data = [x for x in TINY if not x.startswith("model.")]
    cfg = apply_overrides(get_preset("default"), [*data, f"model.init={init}", "schedule.steps=4", "eval_every=0",
                                                  "checkpoint_every=2", f"out={tmp_path / 'ft'}"])
    loop.train(cfg, progress=False, stop_at=2)
    init.unlink()
    again = apply_overrides(cfg, ["model.drop_path_rate=0.1"])
    s = loop.train(again, progress=False, resume=True)
    assert s["steps"] == 4 and vitkit.load_model(tmp_path / "ft" / "model.safetensors").config.drop_path_rate == 0.1
    for bad, words in (("model.hidden_size=48", "model.hidden_size=48 but"), ("data.image_size=16", "image_size")):
        with pytest.raises(ValueError, match=words):
            loop.train(apply_overrides(cfg, ["schedule.steps=6", bad]), progress=False, resume=True)


def test_convolutional_stem_from_options_trains_and_fine_tunes(tmp_path):
    stem = ["model.stem_channels=8,16", "model.stem_strides=2,2", "model.patch_size=1"]
    loop.train(tiny(tmp_path / "pre", *stem, "schedule.steps=2", "eval_every=0"), progress=False)
    pre = vitkit.load_model(tmp_path / "pre" / "model.safetensors")
    assert (pre.config.stem_channels, pre.config.stem_strides, pre.config.num_tokens) == ((8, 16), (2, 2), 2 * 2 + 1)
    # Training moved the stem's BatchNorm statistics away from their initial (0, 1).
    assert not torch.equal(pre.conv_stem.layers[0].norm.running_mean, torch.zeros(8))
    init = f"model.init={tmp_path / 'pre' / 'model.safetensors'}"
    m = build_train_model(tiny(tmp_path / "ft", init, *stem), 10, None)  # the file's own stem: accepted
    torch.testing.assert_close(m.conv_stem.layers[1].conv.weight, pre.conv_stem.layers[1].conv.weight)
    with pytest.raises(ValueError, match=r"model.stem_channels=\(8, 32\) contradicts model.init=.*"
                                         r"stem_channels=\(8, 16\)"):
        build_train_model(tiny(tmp_path / "ft2", init, "model.patch_size=1", "model.stem_channels=8,32"), 10, None)
