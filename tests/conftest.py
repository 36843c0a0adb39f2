import os
from pathlib import Path

import pytest
import torch

# Two cores: keep each test process on one thread so `pytest -n 2` does not oversubscribe.
torch.set_num_threads(int(os.environ.get("VITKIT_TEST_THREADS", "1")))


@pytest.fixture
def shared_data() -> Path:
    """The project's shared data folder, found relative to the checkout (``../shared/data`` beside it): tests that
    use it skip, saying why, on a machine without it."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data absent: no {path} (../shared/data beside the checkout)")
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
