"""Named data sets: fetched through VITKIT_DATA_URL from a loopback server (standing in for each official host)
serving tiny archives in the official layout; loaded; loaded again offline; wrong checksums, hostile archives,
downloads cut in half and files changed on the server."""

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from named_archives import BUILDERS, EXPECTED, FLOWER_LABELS, FLOWER_SPLIT, WNIDS, hostile_tar, pet_breeds, sha256sums

from vitkit.data.fetch import data_root, ensure
from vitkit.data.named import DATASETS, LOADABLE
from vitkit.data.sources import open_map_source
from vitkit.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoints"))
from http_server import FileServer  # noqa: E402


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("VITKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "cache"))
    for v in ("VITKIT_OFFLINE", "HF_HUB_OFFLINE", "VITKIT_DATA_URL"):
        monkeypatch.delenv(v, raising=False)
    return monkeypatch


def _serve(files: dict[str, bytes], sums: bool = True) -> FileServer:
    served = {f"/mirror/{n}": b for n, b in files.items()}
    if sums:
        served["/mirror/SHA256SUMS"] = sha256sums(files)
    return FileServer(served)


def _check_loaded(name: str) -> None:
    n_train, n_test, k = EXPECTED[name]
    train, test = open_map_source(name, "train"), open_map_source(name, "test")
    assert (len(train), len(test), train.num_classes, test.num_classes) == (n_train, n_test, k, k)
    assert train.kind == name and train.class_names is not None and len(train.class_names) == k
    img = train.load(0)
    if isinstance(img, bytes):  # files: decodable JPEGs
        from vitkit.data import decode_image

        img = np.asarray(decode_image(img))
    assert img.dtype == np.uint8 and img.ndim in (2, 3)


def test_the_table_is_complete():
    for name, d in DATASETS.items():
        assert d.files and d.num_classes > 0 and d.splits, name
        for f in d.files:
            assert f.url.startswith("https://") and f.url.endswith("/" + f.name), f.url
            assert f.md5 or f.sha256, f"{f.name}: no published checksum"
            assert (f.md5 is None or len(f.md5) == 32) and (f.sha256 is None or len(f.sha256) == 64)
            assert f.source, f"{f.name}: where does its checksum come from?"
    assert set(BUILDERS) == set(LOADABLE)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_downloads_through_the_mirror_then_loads_offline(name, env, tmp_path):
    files = BUILDERS[name]()
    with _serve(files) as srv:
        env.setenv("VITKIT_DATA_URL", srv.url + "/mirror/")
        _check_loaded(name)
        fetched = sorted(p for p, _ in srv.requests if p != "/mirror/SHA256SUMS")
        assert fetched == sorted(f"/mirror/{n}" for n in files)  # each file once
    for n, b in files.items():
        assert (data_root() / name / n).read_bytes() == b
    env.setenv("VITKIT_OFFLINE", "1")
    env.delenv("VITKIT_DATA_URL")
    _check_loaded(name)  # the server is gone: from the cache


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_wrong_checksum_deletes_the_download(name, env):
    files = BUILDERS[name]()
    first = next(iter(files))
    with _serve(files) as srv:
        bad = "0" * 64
        srv.files["/mirror/SHA256SUMS"] = srv.files["/mirror/SHA256SUMS"].replace(
            hashlib.sha256(files[first]).hexdigest().encode(), bad.encode())
        env.setenv("VITKIT_DATA_URL", srv.url + "/mirror")
        with pytest.raises(UserError) as e:
            open_map_source(name, "train")
    msg = str(e.value)
    assert "\n" not in msg and first in msg and bad in msg and hashlib.sha256(files[first]).hexdigest() in msg
    assert not (data_root() / name / first).exists()
    assert not list((data_root() / name).glob(first + ".part*"))


def test_without_a_mirror_list_the_published_checksum_applies(env):
    files = BUILDERS["mnist"]()
    with _serve(files, sums=False) as srv:  # not the official bytes: torchvision's MD5 / tfds's SHA-256 refuse it
        env.setenv("VITKIT_DATA_URL", srv.url + "/mirror")
        with pytest.raises(UserError, match="does not match the expected"):
            ensure("mnist", progress=False)


ARCHIVES = {n: next(f.name for f in d.files if f.extract) for n, d in DATASETS.items() if any(f.extract for f in
                                                                                               d.files)}


@pytest.mark.parametrize("name,kind", [(n, "dotdot") for n in sorted(ARCHIVES)] +
                         [("imagenette-160", "absolute"), ("imagenette-160", "link")])
def test_a_hostile_archive_is_refused_whole(name, kind, env, tmp_path):
    files = {**BUILDERS[name](), ARCHIVES[name]: hostile_tar(kind)}
    with _serve(files) as srv:
        env.setenv("VITKIT_DATA_URL", srv.url + "/mirror")
        with pytest.raises(UserError, match="refused, nothing extracted"):
            ensure(name, progress=False)
    folder = data_root() / name
    assert not (folder.parent / "evil.txt").exists() and not Path("/tmp/vitkit-evil.txt").exists()
    assert not any(p.name in ("ok.txt", "escape") for p in tmp_path.rglob("*"))  # nothing of it was written
    assert not (folder / ARCHIVES[name]).exists()


def _cut(srv: FileServer, name: str, files: dict[str, bytes]) -> str:
    """Cut the data set's biggest file in half on its first request; the first ensure() stops there."""
    big = max(files, key=lambda n: len(files[n]))
    srv.cut_once.add(f"/mirror/{big}")
    with pytest.raises(UserError, match="interrupted"):
        ensure(name, progress=False)
    part = data_root() / name / (big + ".part")
    assert 0 < part.stat().st_size < len(files[big]) and not (data_root() / name / big).exists()
    return big


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_download_cut_in_half_resumes(name, env):
    files = BUILDERS[name]()
    with _serve(files) as srv:
        env.setenv("VITKIT_DATA_URL", srv.url + "/mirror")
        big = _cut(srv, name, files)
        half = (data_root() / name / (big + ".part")).stat().st_size
        _check_loaded(name)
        asked = [(r, ir) for (p, r), ir in zip(srv.requests, srv.if_ranges) if p == f"/mirror/{big}"]
        assert asked[0] == (None, None) and asked[1][0] == f"bytes={half}-" and asked[1][1]
    assert (data_root() / name / big).read_bytes() == files[big]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_file_changed_on_the_server_is_fetched_again_not_spliced(name, env):
    import gzip

    old = BUILDERS[name]()
    with _serve(old) as srv:
        env.setenv("VITKIT_DATA_URL", srv.url + "/mirror")
        big = _cut(srv, name, old)
        new = {**old, big: gzip.compress(gzip.decompress(old[big]), compresslevel=1, mtime=0)}
        assert new[big] != old[big]
        srv.files[f"/mirror/{big}"] = new[big]
        srv.files["/mirror/SHA256SUMS"] = sha256sums(new)
        _check_loaded(name)
        assert [r is not None for p, r in srv.requests if p == f"/mirror/{big}"] == [False, True]  # asked to resume
    assert (data_root() / name / big).read_bytes() == new[big]  # and got the whole new file


def test_class_names_and_splits_follow_the_official_files(env):
    files = {**BUILDERS["pets"](), **BUILDERS["flowers102"](), **BUILDERS["imagenette-160"](), **BUILDERS["cifar100"]()}
    with _serve(files) as srv:
        env.setenv("VITKIT_DATA_URL", srv.url + "/mirror")
        pets = open_map_source("pets", "test")
        assert pets.class_names == pet_breeds() and pets.labels.tolist() == list(range(37))
        assert Path(pets.files[0]).name == "Cat00_2.jpg"
        for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
            src = open_map_source("flowers102", split)
            assert src.labels.tolist() == [FLOWER_LABELS[i - 1] - 1 for i in FLOWER_SPLIT[key]]
            assert [Path(f).name for f in src.files] == [f"image_{i:05d}.jpg" for i in FLOWER_SPLIT[key]]
        nette = open_map_source("imagenette-160", "test")  # test = the official val
        assert nette.class_names == list(WNIDS) and nette.split == "val" and len(nette) == 3
        coarse = open_map_source("cifar100?labels=coarse", "train")
        assert coarse.num_classes == 20 and coarse.class_names[:2] == ["s0", "s1"]


def test_offline_and_missing_is_one_line_naming_url_and_path(env):
    env.setenv("VITKIT_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        open_map_source("flowers102", "train")
    msg = str(e.value)
    assert "\n" not in msg and DATASETS["flowers102"].files[0].url in msg
    assert str(data_root() / "flowers102" / "102flowers.tgz") in msg


def test_flowers_without_scipy_names_the_extra(env, monkeypatch):
    files = BUILDERS["flowers102"]()
    with _serve(files) as srv:
        env.setenv("VITKIT_DATA_URL", srv.url + "/mirror")
        ensure("flowers102", progress=False)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(UserError, match=r"needs scipy.*vitkit\[data\]"):
        open_map_source("flowers102", "train")


def test_an_interrupted_unpacking_never_looks_finished(env, monkeypatch):
    import tarfile

    files = BUILDERS["imagenette-160"]()
    real = tarfile.TarFile.extractall

    def dies_half_way(self, path, members=None, **kw):
        real(self, path, members=members[: len(members) // 2], **kw)
        raise KeyboardInterrupt

    with _serve(files) as srv:
        env.setenv("VITKIT_DATA_URL", srv.url + "/mirror")
        monkeypatch.setattr(tarfile.TarFile, "extractall", dies_half_way)
        with pytest.raises(KeyboardInterrupt):
            ensure("imagenette-160", progress=False)
        folder = data_root() / "imagenette-160"
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == \
            ["imagenette2-160.tgz", "imagenette2-160.tgz.sha256"]  # the archive, nothing unpacked
        monkeypatch.setattr(tarfile.TarFile, "extractall", real)
        _check_loaded("imagenette-160")
        assert len([p for p, _ in srv.requests if p.endswith(".tgz")]) == 1  # the archive was not fetched again


def test_without_tarfiles_data_filter_nothing_is_unpacked(env, monkeypatch):
    import tarfile

    files = BUILDERS["imagenette-160"]()
    with _serve(files) as srv:
        env.setenv("VITKIT_DATA_URL", srv.url + "/mirror")
        monkeypatch.delattr(tarfile, "data_filter")  # a Python before PEP 706
        with pytest.raises(UserError, match=r"data filter \(Python >= 3.10.12"):
            ensure("imagenette-160", progress=False)
    assert not (data_root() / "imagenette-160" / "imagenette2-160").exists()
