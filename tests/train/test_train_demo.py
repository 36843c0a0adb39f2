import json

import vitkit
from vitkit.cli.demo import run_demo


def test_demo_pretrains_then_finetunes_at_twice_the_resolution(tmp_path):
    # The real recipe, cut to a few steps (the full demo's accuracy is measured outside the suite).
    s = run_demo(tmp_path, progress=False, overrides=[
        "pretrain.schedule.steps=6", "finetune.schedule.steps=3", "eval_every=0", "schedule.warmup_steps=1",
        "data.eval_limit=50"])
    for sub in ("pretrain", "finetune"):
        for name in ("config.yaml", "metrics.jsonl", "summary.json", "model.safetensors"):
            assert (tmp_path / sub / name).is_file(), f"{sub}/{name}"
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["finetune_top1"] == s["finetune_top1"]
    assert on_disk["pretrain_top1"] == json.loads((tmp_path / "pretrain" / "summary.json").read_text())["eval_top1"]
    assert on_disk["finetune_top1"] == json.loads((tmp_path / "finetune" / "summary.json").read_text())["eval_top1"]
    pre = vitkit.load_model(tmp_path / "pretrain" / "model.safetensors")
    ft = vitkit.load_model(tmp_path / "finetune" / "model.safetensors")
    assert pre.config.image_size == (16, 16) and ft.config.image_size == (32, 32)
    assert pre.config.representation_size and not ft.config.representation_size  # paper: rep layer dropped
    assert pre.pos_embedding.shape[1] == 1 + 4 * 4 and ft.pos_embedding.shape[1] == 1 + 8 * 8
    assert ft.config.class_names is not None and len(ft.config.class_names) == 10
    # Running it again replaces its own previous runs.
    run_demo(tmp_path, progress=False, overrides=["schedule.steps=2", "eval_every=0", "schedule.warmup_steps=1",
                                                  "data.eval_limit=20"])
