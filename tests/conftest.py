import os

import pytest
import torch

# Two cores: keep each test process on one thread so `pytest -n 2` does not oversubscribe.
torch.set_num_threads(int(os.environ.get("VITKIT_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
