"""The official catalogue: README entries, the AugReg naming scheme, defaults for create_model."""

import pytest

from vitkit.checkpoints.catalogue import CATALOGUE, default_for_model, list_entries, lookup
from vitkit.models import get_config

README_AUGREG_TOP1 = {  # google-research/vision_transformer README, "Available ViT models"
    "L_16": 85.59, "B_16": 85.49, "S_16": 83.73, "R50_L_32": 85.99, "R26_S_32": 83.85, "Ti_16": 78.22,
    "B_32": 83.59, "S_32": 79.58, "R_Ti_16": 75.40,
}


def test_every_entry_names_a_known_model_and_an_https_url(monkeypatch):
    monkeypatch.delenv("VITKIT_WEIGHTS_URL", raising=False)
    assert len(list_entries()) == 9 + 8 + 5 + 2 * 9
    for e in list_entries():
        get_config(e.model)  # raises for an unknown model
        assert e.url == f"https://storage.googleapis.com/vit_models/{e.name}.npz"
        assert e.pretrain and (e.resolution in (224, 384) or e.name.endswith("/ViT-B_8"))


def test_readme_accuracies_and_the_recommended_augreg_checkpoints():
    for short, acc in README_AUGREG_TOP1.items():
        pre = lookup(f"augreg/{short}")  # vit_jax/configs/augreg.py: the model name alone = recommended i21k
        assert pre.finetune is None and pre.name.startswith(f"augreg/{short}-i21k-300ep")
        ft = [e for e in list_entries() if e.name.startswith(pre.name + "--imagenet2012")]
        assert len(ft) == 1 and ft[0].accuracy == acc and ft[0].resolution == 384
    assert lookup("imagenet21k+imagenet2012/ViT-B_16-224").accuracy == 81.2
    assert lookup("imagenet21k+imagenet2012/ViT-L_16-224.npz").accuracy == 82.7
    assert lookup("gs://vit_models/imagenet21k/ViT-H_14.npz").model == "ViT-H_14"
    assert "84.53" in lookup("imagenet21k/ViT-B_16").note


def test_augreg_naming_scheme_beyond_the_readme():
    name = "augreg/B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224"
    e = lookup(name)
    assert (e.model, e.resolution, e.pretrain, e.finetune, e.listed) == ("ViT-B_8", 224, "imagenet21k",
                                                                        "imagenet2012", False)
    e = lookup("augreg/S_16-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0")
    assert (e.model, e.pretrain, e.finetune) == ("ViT-S_16", "imagenet2012", None)
    assert lookup("augreg/L_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0") is None  # no AugReg L/32
    assert lookup("augreg/B_16-nonsense") is None and lookup("ViT-B_16") is None


@pytest.mark.parametrize("model,want", [("ViT-B_16", "imagenet21k/ViT-B_16"), ("ViT-Ti_16", "augreg/Ti_16-i21k"),
                                        ("R+ViT-Ti_16", "augreg/R_Ti_16-i21k"), ("ViT-S_16-gap-norep", None)])
def test_default_for_create_model_pretrained_true(model, want):
    e = default_for_model(model)
    assert (e is None) if want is None else e.name.startswith(want)


def test_names_are_unique_and_stable():
    assert len(CATALOGUE) == len({e.name for e in list_entries()})


def test_vit_finetune_preset_names_a_catalogue_checkpoint():
    from vitkit.train.presets import get_preset

    init = get_preset("vit_finetune").model.init
    assert lookup(init).name == "imagenet21k/ViT-B_16" and lookup(init).model == get_preset("vit_finetune").model.name
