"""The bilinear position-embedding resampler against scipy.ndimage.zoom(order=1) itself, bit for bit."""

import numpy as np
import pytest
import torch

from vitkit.models.posemb import resample_grid, resample_posemb

scipy_ndimage = pytest.importorskip("scipy.ndimage")


def _scipy(grid: np.ndarray, new: int) -> np.ndarray:
    old = grid.shape[0]
    return scipy_ndimage.zoom(grid, (new / old, new / old, 1), order=1)  # the official load_pretrained call


def test_every_grid_pair_up_to_24_is_bit_equal_to_scipy() -> None:
    rng = np.random.default_rng(0)
    compared = 0
    for old in range(1, 25):
        grid = rng.normal(0, 0.3, (old, old, 6)).astype(np.float32)
        for new in range(1, 25):
            want = _scipy(grid, new)
            if want.shape[:2] != (new, new):  # scipy rounds the output shape from the zoom factor
                continue
            got = resample_grid(torch.from_numpy(grid), (new, new)).numpy()
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want, err_msg=f"{old} -> {new}")
            compared += 1
    assert compared > 500


@pytest.mark.parametrize("old,new", [(8, 12), (14, 24), (24, 14), (7, 37), (16, 48)])
def test_published_resolution_changes_are_bit_equal_with_the_class_token_kept(old: int, new: int) -> None:
    rng = np.random.default_rng(old * 100 + new)
    posemb = rng.standard_normal((1, 1 + old * old, 32)).astype(np.float32)
    want = _scipy(posemb[0, 1:].reshape(old, old, -1), new).reshape(1, new * new, -1)
    got = resample_posemb(torch.from_numpy(posemb), None, (new, new), 1).numpy()
    np.testing.assert_array_equal(got[:, 1:], want)
    np.testing.assert_array_equal(got[:, :1], posemb[:, :1])


def test_scipy_zero_edge_on_overshooting_coordinates_is_reproduced() -> None:
    # 21/19 * 19 = 21.000000000000004 > 21: scipy's 'constant' mode writes 0 on the last row and column
    grid = np.ones((22, 22, 2), np.float32)
    want = _scipy(grid, 20)
    assert (want[-1] == 0).all() and (want[:-1, :-1] == 1).all()
    np.testing.assert_array_equal(resample_grid(torch.from_numpy(grid), (20, 20)).numpy(), want)
