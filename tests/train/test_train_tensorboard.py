"""TensorBoard across --resume: every point already written is kept; only steps after the resumed checkpoint are
replaced. Read back as TensorBoard reads it (EventAccumulator applies the purge-step records)."""

import shutil

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vitkit.train import loop
from vitkit.train.config import apply_overrides
from vitkit.train.presets import get_preset

TINY = ["model.patch_size=4", "model.hidden_size=16", "model.mlp_dim=32", "model.num_heads=2",
        "model.num_layers=1", "data.train=digits", "data.image_size=8", "data.batch_size=16",
        "data.num_workers=0", "data.eval_limit=32", "data.limit=96", "data.flip=false", "schedule.warmup_steps=1",
        "log_every=2", "eval_every=4", "checkpoint_every=4", "keep_last=3", "threads=1", "precision=fp32",
        "deterministic=true", "schedule.steps=8"]


def _points(out):
    acc = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_resume_keeps_every_written_point(tmp_path):
    out = tmp_path / "r"
    cfg = apply_overrides(get_preset("default"), [*TINY, f"out={out}"])
    loop.train(cfg, progress=False)
    first = _points(out)
    assert [s for s, _ in first["train/loss"]] == [2, 4, 6, 8]
    assert [s for s, _ in first["eval/top1"]] == [4, 8]

    # A resume of the finished run runs nothing and must delete nothing (it used to purge step 8's points).
    loop.train(cfg, resume=True, progress=False)
    assert _points(out) == first

    # Back to the step-4 checkpoint, as after a kill that came after step 8 was logged: steps 5-8 are written
    # again (bit for bit: deterministic), step 4 and before are kept, and no step shows twice.
    (out / "checkpoints" / "step_00000008.pt").unlink()
    kept = out.parent / "kept"
    shutil.copytree(out / "tb", kept)
    loop.train(cfg, resume=True, progress=False)
    again = _points(out)
    assert again.keys() == first.keys()
    for tag, points in first.items():
        assert [s for s, _ in again[tag]] == [s for s, _ in points], tag
        if "time" not in tag and "per_s" not in tag:  # clocks differ; the rest is bit for bit
            assert again[tag] == points, tag
        else:  # the points up to the checkpoint are the very ones written before
            assert [p for p in again[tag] if p[0] <= 4] == [p for p in points if p[0] <= 4], tag
    assert len(list((out / "tb").glob("events.*"))) > len(list(kept.glob("events.*")))  # a new file was written
