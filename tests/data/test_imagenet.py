"""imagenet:PATH reads the ILSVRC-2012 extraction as it is (val as class folders, or flat files labelled by
LOC_val_solution.csv or the devkit), and ?labels=real adds the ReaL label sets (real.json beside it or fetched)."""

import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitkit.data.sources import open_map_source
from vitkit.errors import UserError

WNIDS = ["n01440764", "n01443537", "n01484850"]  # sorted: label indices 0, 1, 2
VAL = [2, 0, 1, 1, 2, 0]  # ILSVRC2012_val_00000001..6
REAL = [[2], [0, 1], [], [1], [2, 0], []]


def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(path)


def make_imagenet(root: Path, val: str = "csv") -> Path:
    """train/<wnid>/, val/ flat (+ LOC_val_solution.csv one folder up, as Kaggle's), or val/<wnid>/ folders, or
    flat + the devkit as its .tar.gz."""
    for c, w in enumerate(WNIDS):
        for i in range(2):
            _jpeg(root / "train" / w / f"{w}_{i}.JPEG", c * 2 + i)
    for i, c in enumerate(VAL, 1):
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        _jpeg(root / "val" / (WNIDS[c] if val == "folders" else "") / name, 100 + i)
    if val == "csv":
        rows = "".join(f"ILSVRC2012_val_{i:08d},{WNIDS[c]} 1 2 30 40\n" for i, c in enumerate(VAL, 1))
        (root.parent / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + rows)
    if val == "devkit":
        from scipy.io import savemat

        # meta.mat: ILSVRC2012_IDs in the devkit's own order (not sorted by wnid), one parent synset with children
        ids = {WNIDS[2]: 1, WNIDS[0]: 2, WNIDS[1]: 3}
        rec = np.array([(i, w, 0) for w, i in ids.items()] + [(1001, "n00001740", 3)],
                       dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
        buf = io.BytesIO()
        savemat(buf, {"synsets": rec})
        truth = "".join(f"{ids[WNIDS[c]]}\n" for c in VAL).encode()
        tbuf = io.BytesIO()
        with tarfile.open(fileobj=tbuf, mode="w:gz") as tf:
            for name, data in (("data/ILSVRC2012_validation_ground_truth.txt", truth),
                               ("data/meta.mat", buf.getvalue())):
                info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/{name}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        (root / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(tbuf.getvalue())
    return root


@pytest.mark.parametrize("val", ["csv", "folders", "devkit"])
def test_the_three_val_layouts_give_the_same_labels(tmp_path, val):
    root = make_imagenet(tmp_path / "ILSVRC" / "CLS-LOC", val)
    src = open_map_source(f"imagenet:{root}", "val")
    assert src.class_names == WNIDS and src.num_classes == 3 and src.split == "val"
    names = [Path(f).name for f in src.files]
    expect = {f"ILSVRC2012_val_{i:08d}.JPEG": c for i, c in enumerate(VAL, 1)}
    assert sorted(names) == sorted(expect) and [expect[n] for n in names] == src.labels.tolist()
    train = open_map_source(f"imagenet:{root}", "train")
    assert len(train) == 6 and train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert open_map_source(f"imagenet:{root}", "test").files == src.files  # test = val


def test_flat_val_without_labels_says_where_to_put_them(tmp_path):
    root = make_imagenet(tmp_path / "in", "none")
    with pytest.raises(UserError, match="LOC_val_solution.csv.*devkit"):
        open_map_source(f"imagenet:{root}", "val")


def test_real_labels_from_beside_the_images_and_fetched_by_name(tmp_path, monkeypatch):
    root = make_imagenet(tmp_path / "in", "folders")
    (root / "real.json").write_text(json.dumps(REAL))
    src = open_map_source(f"imagenet:{root}?labels=real", "val")
    by_name = dict(zip((Path(f).name for f in src.files), src.real))
    assert by_name == {f"ILSVRC2012_val_{i:08d}.JPEG": s for i, s in enumerate(REAL, 1)}
    with pytest.raises(UserError, match="val split only"):
        open_map_source(f"imagenet:{root}?labels=real", "train")
    (root / "real.json").unlink()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoints"))
    from http_server import FileServer
    from named_archives import sha256sums

    body = {"real.json": json.dumps(REAL).encode()}
    monkeypatch.setenv("VITKIT_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("VITKIT_OFFLINE", raising=False)
    with FileServer({"/m/real.json": body["real.json"], "/m/SHA256SUMS": sha256sums(body)}) as srv:
        monkeypatch.setenv("VITKIT_DATA_URL", srv.url + "/m")
        fetched = open_map_source(f"imagenet:{root}?labels=real", "val")
    assert fetched.real == src.real and (tmp_path / "data" / "imagenet-real" / "real.json").is_file()
