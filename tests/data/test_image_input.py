"""create_transform / load_image: a file, bytes, a PIL image and an array become the same model input."""


import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.data import create_transform
from vitkit.errors import UserError
from vitkit.evaluate import load_image


def _model(**kw):
    return vitkit.create_model("ViT-Ti/16", image_size=32, num_layers=1, num_classes=3, **kw)


@pytest.fixture
def rgb(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (41, 57, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(a).save(path)
    return a, path


@pytest.mark.parametrize("norm", [{}, {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}])
def test_every_kind_of_image_gives_the_file_pipelines_tensor(rgb, norm):
    a, path = rgb
    model = _model(**norm)
    cfg = model.config
    want = load_image(path, cfg.image_size, cfg.mean, cfg.std)  # the predict / eval path for files
    tf = create_transform(model)
    assert tf.preprocess == model.pretrained_cfg["preprocessing"]
    for image in (path, str(path), path.read_bytes(), Image.open(path), a, torch.from_numpy(a).permute(2, 0, 1)):
        got = tf(image)
        assert got.dtype == torch.float32 and got.shape == (3, 32, 32)
        assert torch.equal(got, want), type(image)
    assert torch.equal(create_transform(cfg)(a), want)


def test_a_transparent_pil_image_follows_the_decoders_rules(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (20, 30, 4), dtype=np.uint8)
    im = Image.fromarray(a, "RGBA")
    path = tmp_path / "t.png"
    im.save(path)
    for norm in ({}, {"mean": (0.4, 0.4, 0.4), "std": (0.2, 0.2, 0.2)}):  # the TF rules and the Pillow rules
        tf = create_transform(_model(**norm))
        assert torch.equal(tf(im), tf(path))
    grey = Image.fromarray(a[:, :, 0])
    assert torch.equal(create_transform(_model())(grey), create_transform(_model())(np.repeat(a[:, :, :1], 3, 2)))


def test_training_transform_is_seeded_augmentation(rgb):
    a, _ = rgb
    model = _model()
    one, two = create_transform(model, training=True, seed=3), create_transform(model, training=True, seed=3)
    first = [one(a) for _ in range(4)]
    assert all(torch.equal(x, two(a)) for x in first)
    assert not all(torch.equal(first[0], x) for x in first[1:])  # random crops differ call to call
    assert first[0].shape == (3, 32, 32)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 4, 3), np.float32), "must be uint8"),
    (np.zeros((4, 4, 2), np.uint8), "must be uint8"),
    (torch.rand(3, 4, 4), "value range is ambiguous"),
    (12, "cannot read an image from a int"),
    (b"not an image", "cannot read the image"),
])
def test_bad_images_are_user_errors(bad, match):
    with pytest.raises(UserError, match=match):
        create_transform(_model())(bad)


def test_an_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(UserError, match="broken.jpg: cannot read the image"):
        create_transform(_model())(bad)
    with pytest.raises(UserError, match="create_transform takes a vitkit model"):
        create_transform(object())


def test_predict_takes_images_as_the_user_has_them(rgb):
    from vitkit.evaluate import predict_probabilities

    a, path = rgb
    model = _model().eval()
    torch.nn.init.normal_(model.head.weight)
    batch = torch.stack([create_transform(model)(path)] * 2)
    want = predict_probabilities(model, batch, precision="fp32")
    for images in ([Image.open(path), a], (path, str(path))):
        assert torch.equal(predict_probabilities(model, images, precision="fp32"), want)
    torch.testing.assert_close(predict_probabilities(model, a, precision="fp32"), want[:1])  # batch 1: other GEMM
