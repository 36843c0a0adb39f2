"""Runs as users see them: `train --config` round-trips a run's config.yaml and layers sources in order, limits are
exact, records state what ran, time accumulates across resumes, a finished run re-resumed logs nothing twice."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import vitkit
from vitkit.cli.main import build_parser, main
from vitkit.cli.train import build_config
from vitkit.errors import UserError
from vitkit.train import config as C

TINY = ["model.num_layers=1", "model.hidden_size=16", "model.mlp_dim=32", "model.num_heads=2", "data.image_size=8",
        "model.patch_size=4", "data.batch_size=16", "schedule.warmup_steps=1", "data.num_workers=0", "threads=1",
        "data.eval_limit=50", "data.eval_batch_size=32", "log_every=1"]


def _args(argv):
    from vitkit.cli.train import _split_remainder

    return _split_remainder(build_parser().parse_args(["train", *argv]))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "a"
    assert main(["train", "--out", str(out), "--no-progress", "schedule.steps=2", "eval_every=0", *TINY]) == 0
    return out


def test_config_round_trips_a_runs_own_config(run_dir, tmp_path):
    saved = C.load_yaml(run_dir / "config.yaml")
    cfg = build_config(_args(["--config", str(run_dir / "config.yaml"), "--out", str(tmp_path / "b")]))
    assert C.to_dict(cfg) == {**C.to_dict(saved), "out": str(tmp_path / "b")}
    # and it trains from it (the new run writes the same config, but for out)
    assert main(["train", "--config", str(run_dir / "config.yaml"), "--out", str(tmp_path / "b"), "--no-progress",
                 "--quiet"]) == 0
    again = C.load_yaml(tmp_path / "b" / "config.yaml")
    assert C.to_dict(again) == {**C.to_dict(saved), "out": str(tmp_path / "b")}


def test_later_sources_override_earlier_ones(tmp_path):
    f1, f2 = tmp_path / "one.yaml", tmp_path / "two.yaml"
    f1.write_text("optim:\n  lr: 0.5\n  weight_decay: 0.25\ndata:\n  batch_size: 4\n")
    f2.write_text("optim:\n  lr: 0.125\n")
    cfg = build_config(_args(["--config", str(f1), "--config", str(f2), "--batch-size", "8", "--out", "x"]))
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.data.batch_size) == (0.125, 0.25, 8)
    cfg = build_config(_args(["--config", str(f1), "--batch-size", "8", "data.batch_size=2", "--out", "x"]))
    assert cfg.data.batch_size == 2  # key=value last
    assert cfg.preset == "default"


def test_config_file_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lrr: 0.5\n")
    with pytest.raises(ValueError, match="unknown option 'optim.lrr'"):
        build_config(_args(["--config", str(bad), "--out", "x"]))
    bad.write_text("- a list\n")
    with pytest.raises(UserError, match="bad.yaml: expected a mapping"):
        build_config(_args(["--config", str(bad), "--out", "x"]))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        build_config(_args(["--config", str(tmp_path / "nope.yaml"), "--out", "x"]))


def test_training_eval_limit_is_exact(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval"]["examples"] == 50  # data.eval_limit=50 with eval batches of 32


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    model = vitkit.create_model("ViT-Ti_16", num_classes=10, image_size=16, patch_size=4, num_layers=1,
                                hidden_size=16, num_heads=2, mlp_dim=32)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    return vitkit.save_model(model, root / "m.safetensors")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from vitkit.data import write_wds_shards

    root = tmp_path_factory.mktemp("wds")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (150, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 150)
    write_wds_shards(zip(images, labels.tolist()), str(root / "test-%06d.tar"), samples_per_shard=64)
    return f"wds:{root}?num_classes=10"


@pytest.mark.parametrize("data", ["digits", "wds"])
def test_eval_limit_is_exact_and_the_record_says_what_ran(data, model_file, shards, tmp_path, capsys):
    spec = shards if data == "wds" else "digits"
    assert main(["eval", "--model", str(model_file), "--data", spec, "--limit", "100", "--batch-size", "64",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    rec = json.loads((tmp_path / "eval.json").read_text())
    assert rec["num_examples"] == 100
    assert rec["precision"] in ("fp32", "bf16") and rec["device"] == "cpu"
    assert rec["split"] == "test" and rec["preprocess"] and rec["limit"] == 100


def test_time_accumulates_across_resumes_and_a_finished_run_logs_once(tmp_path):
    from vitkit.train.loop import train

    out = tmp_path / "r"
    cfg = C.apply_overrides(C.TrainConfig(), [*TINY, "schedule.steps=4", "eval_every=0", f"out={out}"])
    train(cfg, progress=False, stop_at=2)
    first = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train(cfg, resume=True, progress=False)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    times = [r["time_s"] for r in recs]
    assert times == sorted(times) and recs[-1]["time_s"] > first[-1]["time_s"]
    assert all("run_time_s" in r for r in recs)
    assert recs[-1]["run_time_s"] < recs[-1]["time_s"]
    evals = [r for r in recs if "eval/top1" in r]
    assert len(evals) == 1
    summary = train(cfg, resume=True, progress=False)  # finished: nothing runs, nothing is logged again
    assert (out / "metrics.jsonl").read_text().splitlines() == [json.dumps(r) for r in recs]
    assert summary["eval_top1"] == evals[0]["eval/top1"]


def test_list_presets_shows_whole_first_sentences(capsys):
    assert main(["train", "--list-presets"]) == 0
    out = capsys.readouterr().out
    assert "`" not in out
    assert "SGD momentum 0.9, no weight decay, batch 512" in " ".join(out.split())


def test_periodic_log_lines_without_a_progress_bar(tmp_path, capsys):
    out = tmp_path / "log"
    assert main(["train", "--out", str(out), "--no-progress", "schedule.steps=2", "eval_every=0", *TINY]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "step 2/2" in x)
    for word in ("loss", "lr", "img/s", "ETA"):
        assert word in line
    assert main(["train", "--out", str(tmp_path / "q"), "--no-progress", "--quiet", "schedule.steps=2",
                 "eval_every=0", *TINY]) == 0
    assert "step 2/2" not in capsys.readouterr().err


def test_written_model_follows_umask(run_dir):
    mode = Path(run_dir / "model.safetensors").stat().st_mode & 0o777
    ckpt = next((run_dir / "checkpoints").glob("*.pt"))
    assert mode == ckpt.stat().st_mode & 0o777
