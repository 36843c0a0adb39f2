"""``wds:`` specs with remote shards: http(s) through fsspec (a local HTTP server started here) and ``pipe:``
commands give the batches of the same shards read locally, in the same seeded, resumable order."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from data_helpers import ids_of, same_batches, take_batches
from PIL import Image

from vitkit.data import build_loader, dataset_info, write_wds_shards

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def served(tmp_path: Path):
    """(folder on disk, its URL, the paths requested): shards and meta.json served over http from 127.0.0.1."""
    root = tmp_path / "www"
    samples = [(Image.fromarray(np.full((5, 5, 3), 2 * i, np.uint8)), i % 3) for i in range(60)]
    write_wds_shards(samples, str(root / "train-%03d.tar"), samples_per_shard=7)  # 9 shards, the last short
    write_wds_shards(samples[:20], str(root / "test-%03d.tar.gz"), samples_per_shard=10)  # gzip
    (root / "meta.json").write_text(json.dumps({"num_classes": 3, "num_examples": {"train": 60, "test": 20}}))
    handler = type("H", (_Handler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    finally:
        server.shutdown()
        server.server_close()


KW = dict(image_size=5, batch_size=4, num_workers=0, streams=2, shuffle_buffer=5, seed=2)


def test_http_shards_match_local_order_and_resume(served) -> None:
    root, url, requests = served
    local = f"wds:{root}/train-{{000..008}}.tar"
    remote = f"wds:{url}/train-{{000..008}}.tar"
    ref_loader = build_loader(local, **KW)
    ref = take_batches(ref_loader) + take_batches(ref_loader)  # two epochs: the second re-shuffles the shards
    got_loader = build_loader(remote, **KW)
    got = take_batches(got_loader) + take_batches(got_loader)
    assert len(ref) >= 24 and same_batches(got, ref)
    assert any(r.endswith("train-004.tar") for r in requests)  # the batches did come over http
    # metadata (classes, declared size) comes from meta.json beside the remote shards
    info = dataset_info(remote)
    assert (info.num_classes, info.num_examples) == (3, 60)
    # stop after 5 batches, resume in a new loader: the rest equals the uninterrupted epoch
    part = build_loader(remote, **KW)
    head = take_batches(part, 5)
    resumed = build_loader(remote, **KW)
    resumed.load_state_dict(part.state_dict())
    assert same_batches(head + take_batches(resumed), ref[:len(ref) // 2])


def test_http_folder_listing_gzip_and_workers(served) -> None:
    root, url, _ = served
    # a folder URL: the shards are listed from the server's index page; test-*.tar.gz are gzip streams
    kw = dict(train=False, image_size=5, batch_size=6)
    ids = [i for x, _ in build_loader(f"wds:{url}/", split="test", num_workers=0, **kw) for i in ids_of(x)]
    assert ids == list(range(20))
    # worker processes open their own streams
    a = take_batches(build_loader(f"wds:{url}/train-{{000..008}}.tar", **{**KW, "num_workers": 2}))
    b = take_batches(build_loader(f"wds:{root}/train-{{000..008}}.tar", **KW))
    assert same_batches(a, b)


def test_pipe_command_shards_match_local(served) -> None:
    root, _, _ = served
    a = take_batches(build_loader(f"wds:pipe:cat {root}/train-{{000..008}}.tar?num_classes=3&num_examples=60", **KW))
    b = take_batches(build_loader(f"wds:{root}/train-{{000..008}}.tar", **KW))
    assert same_batches(a, b)
    # a command that writes much to stderr (as curl's progress meter does) is not blocked by an unread pipe
    chatty = f"pipe:head -c 300000 /dev/zero >&2; cat {root}/train-{{000..008}}.tar"
    assert same_batches(take_batches(build_loader(f"wds:{chatty}?num_classes=3&num_examples=60", **KW)), b)


def test_failing_pipe_shard_is_counted_not_silent(served) -> None:
    root, _, _ = served
    # shard 1's command fails after writing nothing: the loader skips it and says so in its stats
    spec = f"wds:pipe:cat {root}/train-000.tar{{,.missing}}?num_classes=3"
    loader = build_loader(spec, train=False, image_size=5, batch_size=7, num_workers=0)
    batches = take_batches(loader)
    assert len(batches) == 1
    stats = loader.stats.as_dict()
    assert stats["skipped"].get("corrupt_shard") == 1, stats
    assert any("exited with status" in str(e) for e in stats["examples"]), stats


def test_missing_remote_shard_fails_before_reading(served) -> None:
    _, url, _ = served
    with pytest.raises(FileNotFoundError, match=r"1 of 10 shards .* do not exist, e.g. '.*train-009.tar'"):
        build_loader(f"wds:{url}/train-{{000..009}}.tar", **KW)


def test_unknown_protocol_names_the_missing_package() -> None:
    with pytest.raises(ValueError, match=r"wds: cannot open 'nosuchproto://b/train-\{0..1\}.tar': Protocol not "
                                         r"known: nosuchproto .*vitkit\[remote\]"):
        build_loader("wds:nosuchproto://b/train-{0..1}.tar?num_classes=2", **KW)
    if importlib.util.find_spec("s3fs") is None:  # fsspec knows s3 but needs s3fs: say so, in one line
        with pytest.raises(ValueError, match=r"wds: cannot open 's3://b/train-\{0..1\}.tar': .*s3fs"):
            build_loader("wds:s3://b/train-{0..1}.tar?num_classes=2", **KW)
