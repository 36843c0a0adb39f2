"""The model methods timm users call (vitkit.models.model_api), on a ViT and a BiT ResNet."""

import pytest
import torch

import vitkit
from vitkit.errors import UserError
from vitkit.train.optim import param_groups


def _vit(**kw):
    return vitkit.create_model("ViT-Ti/16", image_size=32, num_layers=1, **kw).eval()


def test_features_head_and_classifier():
    model = _vit(num_classes=4, representation_size=48)
    x = torch.randn(2, 3, 32, 32)
    assert model.num_features == 48 and model.num_classes == 4
    assert model.get_classifier() is model.head
    feats = model.forward_features(x)
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, model.num_features)
    torch.testing.assert_close(model.forward_head(feats), model(x))


def test_reset_classifier_replaces_only_the_head():
    model = _vit(num_classes=4, representation_size=48)
    pre_logits = model.pre_logits
    model.reset_classifier(7)
    assert model.pre_logits is pre_logits and model.num_classes == 7
    assert model.head.out_features == 7 and not model.head.weight.any()
    model.reset_classifier(0)  # timm: no classifier, the model returns its features
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 48)
    model.reset_classifier(3, global_pool="token")
    with pytest.raises(UserError, match="pooling is part of the architecture"):
        model.reset_classifier(3, global_pool="avg")


def test_no_weight_decay_is_what_the_optimiser_skips():
    model = _vit(num_classes=4)
    assert model.no_weight_decay() == {"pos_embedding", "cls"}
    groups = param_groups(model, 0.1)
    undecayed = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    params = dict(model.named_parameters())
    assert all(id(params[n]) in undecayed for n in model.no_weight_decay())
    assert id(params["embedding.weight"]) not in undecayed


def test_pretrained_cfg_describes_the_input():
    model = _vit(num_classes=2, class_names=("cat", "dog"))
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["preprocessing"] == "vit_jax" and cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bilinear"
    assert cfg["label_names"] == ["cat", "dog"] and cfg["first_conv"] == "embedding" and cfg["num_classes"] == 2
    assert model.default_cfg == cfg
    other = _vit(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert other.pretrained_cfg["preprocessing"] == "pil"


def test_the_bit_resnet_has_the_same_api():
    model = vitkit.create_model("BiT-R50x1", num_classes=3, image_size=32,
                                resnet={"num_layers": (1,), "width_factor": 1})
    assert model.num_features == model.get_classifier().in_features
    assert model.pretrained_cfg["first_conv"].startswith("resnet.")
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, model.num_features)
