import numpy as np
from PIL import Image

from vitkit.train import loop
from vitkit.train.config import apply_overrides
from vitkit.train.presets import get_preset


def _dataset(root):
    rng = np.random.default_rng(0)
    modes = ["RGB", "L", "RGBA", "CMYK", "I;16", "RGB"]
    for split, n in (("train", 6), ("test", 2)):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
                img = Image.fromarray(arr).convert(modes[i % len(modes)]) if modes[i % len(modes)] != "I;16" \
                    else Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
                ext = "jpg" if img.mode == "CMYK" else "png"
                img.save(d / f"{i}.{ext}")
    (root / "train" / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    good = (root / "train" / "b" / "0.png").read_bytes()
    (root / "train" / "b" / "truncated.png").write_bytes(good[: len(good) // 2])


def test_bad_and_odd_images_train_to_the_end_and_are_reported(tmp_path):
    _dataset(tmp_path / "data")
    cfg = apply_overrides(get_preset("default"), [
        f"data.train=folder:{tmp_path / 'data'}", "data.image_size=8", "data.batch_size=4", "data.num_workers=0",
        "model.patch_size=4", "model.hidden_size=32", "model.mlp_dim=64", "model.num_heads=2", "model.num_layers=2",
        "schedule.steps=8", "schedule.warmup_steps=1", "eval_every=0", "threads=1", f"out={tmp_path / 'run'}"])
    s = loop.train(cfg, progress=False)
    assert s["finished"] and s["steps"] == 8
    assert s["data"]["skipped_total"] >= 2, s["data"]  # the corrupt and the truncated file
    assert s["data"]["converted_total"] >= 3, s["data"]  # grey, RGBA, CMYK, 16-bit converted to RGB
    assert any("corrupt" in e or "truncated" in e for e in s["data"]["examples"])
    assert s["eval"]["examples"] == 4
