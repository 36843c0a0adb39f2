from pathlib import Path

import pytest
from data_helpers import make_id_mnist


@pytest.fixture
def id_mnist(tmp_path: Path) -> tuple[str, int]:
    return make_id_mnist(tmp_path)
