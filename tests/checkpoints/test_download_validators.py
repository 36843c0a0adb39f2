"""Resume only the same file (If-Range with the first response's ETag / Last-Modified), ``force`` refetches."""

import pytest
from http_server import FileServer

from vitkit.download import DownloadError, cache_path, download
from vitkit.errors import UserError

OLD, NEW = bytes(range(256)) * 64, bytes(reversed(range(256))) * 80


def _cut(srv: FileServer, url: str) -> int:
    srv.cut_next = 1
    with pytest.raises(DownloadError, match="interrupted"):
        download(url, progress=False)
    part = cache_path(url).with_name(cache_path(url).name + ".part")
    return part.stat().st_size


@pytest.mark.parametrize("validator", ["etag", "last_modified"])
def test_resume_sends_if_range_with_the_first_responses_validator(cache, validator):
    with FileServer({"/f.bin": OLD}) as srv:
        srv.send_etag, srv.send_last_modified = validator == "etag", validator == "last_modified"
        url = srv.url + "/f.bin"
        half = _cut(srv, url)
        assert download(url, progress=False).read_bytes() == OLD
        assert srv.requests[-1] == ("/f.bin", f"bytes={half}-") and srv.if_ranges[-1]
        assert srv.if_ranges[-1].startswith('"') == (validator == "etag")


def test_a_file_changed_on_the_server_restarts_instead_of_splicing(cache):
    with FileServer({"/f.bin": OLD}) as srv:
        url = srv.url + "/f.bin"
        _cut(srv, url)
        srv.files["/f.bin"] = NEW  # new ETag and Last-Modified: If-Range fails, the server sends all of NEW
        path = download(url, progress=False)
        assert path.read_bytes() == NEW
        assert srv.requests[-1][1] is not None  # it asked for the rest, and got the whole new file instead


def test_without_any_validator_a_part_is_not_resumed(cache):
    with FileServer({"/f.bin": OLD}) as srv:
        srv.send_etag = srv.send_last_modified = False
        url = srv.url + "/f.bin"
        _cut(srv, url)
        srv.files["/f.bin"] = NEW
        assert download(url, progress=False).read_bytes() == NEW
        assert srv.requests[-1] == ("/f.bin", None)


def test_force_fetches_again_and_a_mismatch_names_file_and_both_hashes(cache):
    import hashlib

    with FileServer({"/f.bin": OLD}) as srv:
        url = srv.url + "/f.bin"
        download(url, progress=False)
        srv.files["/f.bin"] = NEW
        assert download(url, progress=False).read_bytes() == OLD  # cached
        assert download(url, progress=False, force=True).read_bytes() == NEW
        want = hashlib.md5(OLD).hexdigest()
        with pytest.raises(UserError) as e:
            download(url, progress=False, force=True, md5=want)
    msg = str(e.value)
    assert "\n" not in msg and "f.bin" in msg and want in msg and hashlib.md5(NEW).hexdigest() in msg
    assert not cache_path(url).exists() and not cache_path(url).with_name("f.bin.part").exists()
