"""The four figures are written as valid PNGs; the numbers behind them agree with independent code."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.analysis import embedding_pca, posemb_similarity, write_figures

PNG = b"\x89PNG\r\n\x1a\n"


def _tiny(**kw):
    kw.setdefault("hidden_size", 32)
    return vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=16, patch_size=4, num_layers=2,
                               num_heads=2, mlp_dim=64, **kw).eval()


def _check_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG
    with Image.open(path) as im:
        im.verify()


def test_write_figures_writes_four_valid_pngs_and_json(tmp_path):
    model = _tiny()
    res = write_figures(model, torch.randn(3, 3, 16, 16), tmp_path)
    assert set(res["figures"]) == {"attention_rollout", "mean_attention_distance", "posemb_similarity",
                                   "embedding_filters"}
    for p in res["figures"].values():
        _check_png(p)
    data = json.loads((tmp_path / "analysis.json").read_text())
    assert np.array(data["attention_rollout"]).shape == (3, 4, 4)
    assert np.array(data["mean_attention_distance"]["pixels"]).shape == (2, 2)
    assert np.array(data["posemb_similarity"]).shape == (4, 4, 4, 4)


def test_gap_model_without_class_token(tmp_path):
    res = write_figures(_tiny(classifier="gap"), torch.randn(2, 3, 16, 16), tmp_path)
    assert np.array(res["attention_rollout"]).shape == (2, 4, 4)


def test_posemb_similarity_is_cosine_of_patch_embeddings():
    model = _tiny()
    pos = model.pos_embedding.detach()[0, 1:]
    ref = torch.nn.functional.cosine_similarity(pos[:, None, :], pos[None, :, :], dim=-1)
    np.testing.assert_allclose(posemb_similarity(model).numpy(), ref.numpy(), atol=1e-5)


@pytest.mark.parametrize("hidden", [32, 64])  # fewer / more filters (32, 64) than pixels per filter (48)
def test_embedding_pca_matches_sklearn(hidden):
    from sklearn.decomposition import PCA

    model = _tiny(hidden_size=hidden)
    comps, ratio = embedding_pca(model, num_components=5)
    w = model.embedding.weight.detach().double().reshape(hidden, -1).numpy()
    pca = PCA(n_components=5, svd_solver="full").fit(w)
    got = comps.reshape(5, -1).double().numpy()
    for i in range(5):  # components are defined up to sign
        sign = np.sign(got[i] @ pca.components_[i])
        np.testing.assert_allclose(sign * got[i], pca.components_[i], atol=1e-5)
    np.testing.assert_allclose(ratio.numpy(), pca.explained_variance_ratio_, rtol=1e-4)


def test_hybrid_skips_the_filter_figure(tmp_path):
    model = vitkit.create_model("R+ViT-Ti_16", num_classes=3, image_size=64, num_layers=1).eval()
    res = write_figures(model, torch.randn(1, 3, 64, 64), tmp_path)
    assert "embedding_filters" not in res["figures"]
    p = model.config.patch_size[0]  # the patch on the ResNet's feature map (8x8 here, not the 1x1 of R50+ViT-B)
    assert f"its {p}x{p} patch embedding reads the output channels of a BiT ResNet stem" in \
        res["skipped"]["embedding_filters"]
    # Distances are in input pixels: patch size times the ResNet reduction.
    stride = model.config.stride
    assert res["pixels_per_token"] == list(stride) and stride[0] > model.config.patch_size[0]
    for p in res["figures"].values():
        _check_png(p)


def test_a_conv_stem_model_is_not_called_a_hybrid():
    model = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=16, patch_size=2, hidden_size=16, mlp_dim=32,
                                num_heads=2, num_layers=1, stem_channels=(8, 16), stem_strides=(2, 2))
    with pytest.raises(vitkit.UserError) as e:
        embedding_pca(model)
    assert "convolutional stem of 2 3x3 convolutions" in str(e.value)
    assert "hybrid" not in str(e.value) and "ResNet" not in str(e.value)


def test_bit_has_no_attention():
    model = vitkit.create_model("BiT-R50x1", num_classes=3, image_size=32, resnet={"num_layers": (1,)})
    with pytest.raises(ValueError, match="without attention"):
        write_figures(model, torch.randn(1, 3, 32, 32), "unused")


def test_rollout_titles_name_predicted_and_true_class(tmp_path, monkeypatch):
    import dataclasses

    from vitkit.analysis import figures

    model = _tiny()
    model.config = dataclasses.replace(model.config, class_names=("cat", "dog", "ship"))
    seen = {}
    monkeypatch.setattr(figures, "draw_rollout", lambda images, maps, path, titles: seen.update(titles=titles))
    x = torch.randn(2, 3, 16, 16)
    res = write_figures(model, x, tmp_path, labels=["dog", None])
    pred = model(x).argmax(-1).tolist()
    names = ["cat", "dog", "ship"]
    assert res["rollout_predicted"] == pred
    assert seen["titles"] == [f"pred: {names[pred[0]]}\ntrue: dog", f"pred: {names[pred[1]]}"]
    with pytest.raises(ValueError, match="labels: 1 given for 2 images"):
        write_figures(model, x, tmp_path, labels=["dog"])


def test_distance_plot_states_image_and_patch_size(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    titles = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, path, **kw: (
        titles.extend(ax.get_title() for ax in self.axes), real(self, path, **kw)))
    write_figures(_tiny(), torch.randn(1, 3, 16, 16), tmp_path)
    assert "16x16 px images, 4x4 px patches" in titles


@pytest.mark.parametrize(("n", "hw"), [(1, (16, 16)), (4, (16, 16)), (3, (12, 20))])
def test_rollout_layout_nothing_overlaps_and_rows_match(tmp_path, n, hw):
    """Issue 29: the row labels and the colourbar overlap no image, both rows have the same size, titles are
    at least 8 pt (readable at the figure's 100 dpi) and every text lies inside the figure."""
    from vitkit.analysis.figures import draw_rollout

    rng = np.random.default_rng(0)
    titles = ["pred: great white shark, white shark, man-eater\ntrue: tiger shark"] * n
    fig = draw_rollout(rng.random((n, *hw, 3)), rng.random((n, 4, 4)), tmp_path / "r.png", titles)
    _check_png(tmp_path / "r.png")
    assert fig.dpi == 100
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    r = FigureCanvasAgg(fig).get_renderer()
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 2 * n
    boxes = [ax.get_window_extent(r) for ax in image_axes]
    assert len({(round(b.width, 3), round(b.height, 3)) for b in boxes}) == 1  # one size for both rows
    bar = next(ax for ax in fig.axes if not ax.images)
    others = [bar.get_window_extent(r)] + [t.get_window_extent(r) for ax in image_axes for t in ax.texts]
    assert len(others) == 3  # the colourbar, "input", "attention rollout"
    for o in others:
        assert not any(o.overlaps(b) for b in boxes)
    texts = [t for ax in fig.axes for t in (ax.title, *ax.texts, ax.yaxis.label) if t.get_text()]
    fig_box = fig.bbox
    for t in texts:
        e = t.get_window_extent(r)
        assert fig_box.x0 <= e.x0 and e.x1 <= fig_box.x1 and fig_box.y0 <= e.y0 and e.y1 <= fig_box.y1, t
    assert min(ax.title.get_fontsize() for ax in image_axes if ax.title.get_text()) >= 8
