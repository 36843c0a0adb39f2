"""vitkit.image_size.as_hw: the one "R or (H, W)" normaliser."""

import numpy as np
import pytest

from vitkit.errors import UserError
from vitkit.image_size import as_hw


def test_as_hw():
    assert as_hw(224) == (224, 224)
    assert as_hw((384, 256)) == (384, 256) and as_hw([8, 8]) == (8, 8)
    assert as_hw(np.int64(5)) == (5, 5) and type(as_hw(np.int64(5))[0]) is int


@pytest.mark.parametrize("bad, msg", [
    (True, "expected an integer, got bool"), (224.0, "expected an integer, got float"),
    ("224", "expected an integer, got str"), ((1, 2, 3), "a pair of integers"), ((8, 8.5), "got float"),
])
def test_as_hw_refuses_and_names_the_option(bad, msg):
    with pytest.raises(UserError, match=rf"^--image-size=.*{msg}"):
        as_hw(bad, "--image-size")
