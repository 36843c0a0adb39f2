import pytest


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty download cache of the test's own, online (the loopback server stands in for the internet)."""
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VITKIT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "cache"
