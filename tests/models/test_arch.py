"""models/arch.py: the one owner of what an architecture is (fields, flat form, comparison, ResNet stem, grid)."""

import pytest

from vitkit.models import arch_diff, get_config
from vitkit.models.arch import (
    ARCH_FIELDS,
    SHAPE_FIELDS,
    ConfigFieldError,
    ResNetConfig,
    arch_values,
    class_token_mismatch,
    flat,
    posemb_grid,
    resnet_config,
    resnet_from_flat,
)


def test_arch_diff_names_each_differing_field_with_both_values():
    a, b = get_config("ViT-B_16"), get_config("R50+ViT-B_16")
    assert arch_diff(a, a) == []
    assert arch_diff(a, b) == [("patch_size", (16, 16), (1, 1)), ("resnet", None, ResNetConfig((3, 4, 9), 1))]
    # A mapping compares only the fields it holds, normalised as ViTConfig would (an int patch is a square).
    assert arch_diff({"patch_size": 16, "num_heads": 12}, a) == []
    assert arch_diff({"patch_size": 8, "stem_channels": [8]}, a) == [("patch_size", (8, 8), (16, 16)),
                                                                      ("stem_channels", (8,), ())]
    # Flat names read the ResNet stem (None without one); a value of the wrong type differs, it does not raise.
    assert arch_diff({"resnet_layers": [3, 4, 9], "resnet_width": 1.0}, b, flat(ARCH_FIELDS)) == []
    assert arch_diff({"resnet_layers": (3,)}, a, flat(ARCH_FIELDS)) == [("resnet_layers", (3,), None)]
    assert arch_diff({"patch_size": "16"}, a) == [("patch_size", "16", (16, 16))]


def test_field_sets_and_flat_form():
    assert set(SHAPE_FIELDS) < set(ARCH_FIELDS) and "classifier" not in SHAPE_FIELDS
    assert "resnet" not in flat(ARCH_FIELDS) and {"resnet_layers", "resnet_width"} <= set(flat(ARCH_FIELDS))
    assert arch_values(get_config("BiT-R50x1"), ("resnet_layers", "resnet_width", "transformer")) == {
        "resnet_layers": (3, 4, 6, 3), "resnet_width": 1, "transformer": False}


def test_resnet_conversion():
    assert resnet_config(None) is None
    r = ResNetConfig((1,), 2)
    assert resnet_config(r) is r
    assert resnet_config({"num_layers": [2, 2], "width_factor": 0.5}) == ResNetConfig((2, 2), 0.5)
    with pytest.raises(ConfigFieldError, match="expected"):  # a file names both fields
        resnet_config({"num_layers": [2]})
    assert resnet_config({"num_layers": [2]}, complete=False) == ResNetConfig((2,), 1)
    with pytest.raises(ConfigFieldError, match="resnet.width_factor"):
        resnet_config({"num_layers": [2], "width_factor": True})
    assert resnet_from_flat(None, 2, None) == ResNetConfig((), 2)
    assert resnet_from_flat([1, 1], None, ResNetConfig((3, 4, 9), 3)) == ResNetConfig((1, 1), 3)


def test_posemb_grid_and_class_token():
    assert posemb_grid(17, True) == (4, True)
    assert posemb_grid(16, True) == (4, False)  # big_vision / timm no_embed_class: no class-token row
    assert posemb_grid(16, False) == (4, False)
    with pytest.raises(ValueError, match=r"16 position embeddings do not form a square grid \(\+1 class token\)"):
        posemb_grid(16, True, cls_row_optional=False)
    with pytest.raises(ValueError, match="square grid"):
        posemb_grid(3, True)
    with pytest.raises(ValueError, match=r"\+0 class token"):
        posemb_grid(17, False)
    assert class_token_mismatch("token", True) is None and class_token_mismatch("gap", False) is None
    assert class_token_mismatch("gap", True) == "classifier='gap' has no class token"
    assert class_token_mismatch("token_unpooled", False) == "classifier='token_unpooled' needs class token"
