"""The HTML attention explorer, loaded by a real headless Chromium (Debian's `chromium` package, driven through the
DevTools protocol by playwright; no browser is downloaded): it opens offline with no console error, its canvases
and SVG are drawn, clicks, hovers and arrow keys change what it shows, and what it shows is the model's attention.

Set VITKIT_UPDATE_DOCS=1 to rewrite docs/explorer.png (the README's screenshot) from the checkpoint in
VITKIT_DOCS_MODEL and the images of the data spec VITKIT_DOCS_DATA; otherwise the screenshot goes to tmp.
"""

import io
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.analysis.explorer import MAX_BYTES, explorer_data, parse_layers, spread_layers, write_explorer
from vitkit.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
LAYERS, HEADS, SIDE = 3, 2, 4


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def firefox():
    pytest.importorskip("websockets", reason="websockets is not installed (the test extra)")
    exe = shutil.which("firefox-esr") or shutil.which("firefox")
    if exe is None:
        pytest.skip("no Firefox on PATH: install Debian's `firefox-esr` package (scripts/test.sh does so as root)")
    from firefox_bidi import Firefox

    ff = Firefox(exe)
    yield ff
    ff.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium on PATH: install Debian's `chromium` package (scripts/test.sh does so as root)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True)
        yield b
        b.close()


def _tiny(**kw):
    torch.manual_seed(0)
    model = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=SIDE * 8, patch_size=8, num_layers=LAYERS,
                                hidden_size=32, num_heads=HEADS, mlp_dim=64, **kw).eval()
    with torch.no_grad():  # sharper than a fresh init's near-uniform attention, so queries differ visibly
        for blk in model.blocks:
            blk.attn.qkv.weight.mul_(6)
    model.config = model.config.replace(class_names=("cat", "dog", "ship"))
    return model


def _images(n=2):
    y, x = torch.meshgrid(torch.linspace(-1, 1, SIDE * 8), torch.linspace(-1, 1, SIDE * 8), indexing="ij")
    return torch.stack([torch.stack([x * (i + 1) / n, y, x * y]) for i in range(n)])


@pytest.fixture(scope="module")
def tiny_page(tmp_path_factory):
    model, x = _tiny(), _images()
    path = tmp_path_factory.mktemp("explorer") / "explorer.html"
    res = write_explorer(model, x, path, labels=["dog", None])
    with torch.no_grad():
        atts = model.get_attention_maps(x)
    return {"path": path, "res": res, "atts": atts}


def _open(browser, path, viewport=(1200, 1000)):
    """The page from disk with the network off; every request is recorded and anything not file:/data: aborted."""
    ctx = browser.new_context(offline=True, viewport={"width": viewport[0], "height": viewport[1]})
    requests, errors = [], []

    def route(r):
        requests.append(r.request.url)
        (r.continue_ if r.request.url.startswith(("file:", "data:")) else r.abort)()

    ctx.route("**/*", route)
    page = ctx.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(Path(path).as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    return page, requests, errors


def _shot(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(np.int16)


def _drawn(img: np.ndarray) -> bool:
    """More than a blank or flat area: many colours and real contrast."""
    return len(np.unique(img.reshape(-1, 3), axis=0)) > 8 and float(img.std()) > 10


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a - b).sum(-1) > 30).mean())


def test_opens_offline_with_no_console_error_and_no_request_off_disk(browser, tiny_page):
    page, requests, errors = _open(browser, tiny_page["path"])
    assert errors == []
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests
    html = tiny_page["path"].read_text()
    assert "<script src" not in html and "<link" not in html and "@import" not in html
    page.context.close()


def test_canvases_and_svg_are_drawn(browser, tiny_page):
    page, _, _ = _open(browser, tiny_page["path"])
    for sel in ("canvas.rollout >> nth=0", "canvas.attention >> nth=0", "canvas.attention >> nth=1", "#posemb",
                "#posemb-one", "#filters", "#scale"):
        assert _drawn(_shot(page.locator(sel))), sel
    assert page.locator("#distance circle").count() == LAYERS * HEADS
    svg = _shot(page.locator("#distance"))
    assert (np.abs(svg - 255).sum(-1) > 100).mean() > 0.005  # points and axes are on the white
    top = page.locator(".card >> nth=0").locator(".top5 li")
    assert top.count() == 3 and page.locator(".truth").first.inner_text() == "true class: dog"
    page.context.close()


def test_clicking_a_patch_shows_that_querys_attention(browser, tiny_page):
    page, _, errors = _open(browser, tiny_page["path"])
    canvas = page.locator("canvas.attention >> nth=0")
    before = _shot(canvas)
    box = canvas.bounding_box()
    cell = box["width"] / SIDE
    canvas.click(position={"x": 0.5 * cell, "y": 0.5 * cell})  # patch row 1, column 1
    page.mouse.move(0, 0)  # leave the canvas: the clicked query stays
    assert canvas.get_attribute("data-query") == "0,0"
    assert _changed(before, _shot(canvas)) > 0.2
    # What is shown is the model's attention: layer 3 (the last, shown first), mean over heads, query token 1.
    want = tiny_page["atts"][LAYERS - 1][0, :, 1, 1:].double().mean(0)
    k = int(want.argmax())
    caption = page.locator("figcaption >> nth=1").inner_text()
    assert f"maximum {100 * float(want[k]):.1f}% at row {k // SIDE + 1}, column {k % SIDE + 1}" in caption, caption
    assert errors == []
    page.context.close()


def test_arrow_keys_move_the_query_and_update_the_label(browser, tiny_page):
    page, _, _ = _open(browser, tiny_page["path"])
    canvas = page.locator("canvas.attention >> nth=1")
    canvas.focus()
    start = canvas.get_attribute("data-query")
    before = _shot(canvas)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowUp")
    r, c = map(int, start.split(","))
    assert canvas.get_attribute("data-query") == f"{r - 1},{c + 1}"
    assert f"row {r}, column {c + 2}" in canvas.get_attribute("aria-label")
    assert _changed(before, _shot(canvas)) > 0.05
    page.context.close()


def test_hovering_a_distance_point_highlights_its_head_and_shows_its_map(browser, tiny_page):
    page, _, _ = _open(browser, tiny_page["path"])
    canvas = page.locator("canvas.attention >> nth=0")
    before = _shot(canvas)
    page.locator("#distance circle[data-layer='1'][data-head='1']").hover()
    assert page.locator("#distance circle.hl").count() == LAYERS
    assert all(c.get_attribute("data-head") == "1" for c in page.locator("#distance circle.hl").all())
    assert page.locator("#distance circle.dim").count() == LAYERS * (HEADS - 1)
    assert page.locator("#layer").input_value() == "0" and page.locator("#head").input_value() == "1"
    assert "layer 1, head 2" in page.locator("figcaption >> nth=1").inner_text()
    assert _changed(before, _shot(canvas)) > 0.1  # the same query, another layer and head
    # The chart is one tab stop; the arrow keys walk its points (right: next layer, down: previous head).
    assert page.locator("#distance circle[tabindex='0']").count() == 1
    page.locator("#distance circle[tabindex='0']").focus()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowDown")
    focused = page.evaluate("[document.activeElement.dataset.layer, document.activeElement.dataset.head]")
    assert focused == [str(LAYERS - 1), str(HEADS - 2)]
    assert page.locator("#layer").input_value() == str(LAYERS - 2) and page.locator("#head").input_value() == "0"
    page.context.close()


def test_clicking_a_position_shows_its_similarity_map(browser, tiny_page):
    page, _, _ = _open(browser, tiny_page["path"])
    grid, one = page.locator("#posemb"), page.locator("#posemb-one")
    before = _shot(one)
    box = grid.bounding_box()
    grid.click(position={"x": box["width"] * 0.1, "y": box["height"] * 0.1})
    assert grid.get_attribute("data-pos") == "0,0"
    assert "row 1, column 1" in page.locator("#posemb-info").inner_text()
    assert _changed(before, _shot(one)) > 0.2
    page.context.close()


def test_works_in_firefox_too(firefox, tiny_page):
    ff = firefox
    ff.goto(tiny_page["path"].as_uri())
    ff.wait_for("document.body.dataset.ready === '1'")

    def shot(selector):
        el = f"document.querySelector({selector!r})"
        rect = f"{el}.scrollIntoView({{block: 'center'}}), JSON.stringify({el}.getBoundingClientRect())"
        box = json.loads(ff.eval(rect))
        return box, np.asarray(Image.open(io.BytesIO(ff.screenshot(box))).convert("RGB")).astype(np.int16)

    for sel in ("canvas.rollout", "canvas.attention", "#posemb", "#posemb-one", "#filters", "#scale", "#distance"):
        assert _drawn(shot(sel)[1]), sel
    box, before = shot("canvas.attention")
    ff.click(box["x"] + box["width"] / SIDE / 2, box["y"] + box["height"] / SIDE / 2)  # row 1, column 1
    ff.eval("document.querySelector('canvas.attention').dispatchEvent(new MouseEvent('mouseleave'))")
    assert ff.eval("document.querySelector('canvas.attention').dataset.query") == "0,0"
    assert _changed(before, shot("canvas.attention")[1]) > 0.2
    ff.eval("document.querySelector('canvas.attention').focus()")
    ff.press("\ue015")  # ArrowDown
    assert ff.eval("document.querySelector('canvas.attention').dataset.query") == "1,0"
    assert ff.errors() == []


def test_screenshot_for_the_docs(browser, tiny_page, tmp_path):
    """Always made (into tmp); with VITKIT_UPDATE_DOCS=1 from a trained model into docs/explorer.png."""
    path, out = tiny_page["path"], tmp_path / "explorer.png"
    if os.environ.get("VITKIT_UPDATE_DOCS") == "1":
        from vitkit.evaluate.data import gather_images
        from vitkit.evaluate.model import load_for_inference

        model = load_for_inference(os.environ["VITKIT_DOCS_MODEL"], None)
        images, labels = gather_images(model.config, [os.environ["VITKIT_DOCS_DATA"]], 3, split="test",
                                       batch_size=3, preprocess=None, with_labels=True)
        path = write_explorer(model, images, tmp_path / "docs.html", labels=labels)["html"]
        out = ROOT / "docs" / "explorer.png"
    page, _, errors = _open(browser, path, viewport=(1560, 900))
    page.locator("canvas.attention >> nth=0").click(position={"x": 112, "y": 112})  # the centre patch
    page.locator("#distance circle >> nth=-1").hover()  # the last layer's last head
    out.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    assert errors == [] and _drawn(np.asarray(Image.open(out).convert("RGB")).astype(np.int16))
    page.context.close()


def test_vit_b16_with_four_images_fits_the_size_budget(tmp_path):
    """ViT-B/16 at 224 px: 12 layers x 12 heads, 197 tokens, 16 px patches. The page's size depends on those and
    on the images (noise here: PNG's worst case), not on the width, so the width is 96 instead of 768 to keep the
    test fast (a real ViT-B/16 gave 8.39 MB, the same layers)."""
    model = vitkit.create_model("ViT-B_16", num_classes=1000, image_size=224, hidden_size=96, mlp_dim=192).eval()
    assert (model.config.num_heads, len(model.blocks), model.config.grid_size) == (12, 12, (14, 14))
    res = write_explorer(model, torch.randn(4, 3, 224, 224), tmp_path / "b16.html")
    assert res["bytes"] == (tmp_path / "b16.html").stat().st_size <= MAX_BYTES
    assert 12 in res["layers"] and 1 in res["layers"] and len(res["layers"]) >= 3
    assert "of 12 layers" in res["notes"][0] and "--layers" in res["notes"][0]
    # Asked for explicitly, every layer is stored, and the size is reported as over the budget.
    full = write_explorer(model, torch.randn(2, 3, 224, 224), tmp_path / "all.html", layers=range(12))
    assert full["layers"] == list(range(1, 13)) and full["bytes"] > MAX_BYTES and "over the" in full["notes"][-1]


def test_stored_attention_dequantises_to_the_models():
    import base64

    model, x = _tiny(), _images()
    data = explorer_data(model, x, layers=[0, 2], batch_size=1)  # one image per forward pass: chunks stored in place
    with torch.no_grad():
        atts = model.get_attention_maps(x)
    tokens, patches = 1 + SIDE * SIDE, SIDE * SIDE
    shape = (2, 2, HEADS, tokens)
    q = np.frombuffer(base64.b64decode(data["attention"]["q"]), np.uint8).reshape(*shape, patches)
    scale = np.frombuffer(base64.b64decode(data["attention"]["scale"]), "<f4").reshape(shape)
    to_cls = np.frombuffer(base64.b64decode(data["attention"]["prefix"]), np.uint8).reshape(shape)
    for j, layer in enumerate([0, 2]):
        a = atts[layer].numpy()
        np.testing.assert_allclose(q[:, j] / 255 * scale[:, j, ..., None], a[..., 1:], atol=scale.max() / 500)
        np.testing.assert_allclose(to_cls[:, j] / 255, a[..., 0], atol=1 / 500)
    assert data["layers"] == [1, 3]
    from vitkit.analysis import collect_attention_stats

    rollout, dist = collect_attention_stats(model, x)
    np.testing.assert_allclose([im["rollout"] for im in data["images"]], rollout.numpy(), rtol=1e-4)
    np.testing.assert_allclose(data["distance"], dist.numpy(), atol=1e-3)
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    assert data["images"][0]["top"][0] == {"name": ("cat", "dog", "ship")[int(probs.argmax())],
                                           "p": pytest.approx(float(probs.max()), abs=1e-5)}


def test_models_without_class_token_or_filters(browser, tmp_path):
    gap = write_explorer(_tiny(classifier="gap"), _images(1), tmp_path / "gap.html")
    page, _, errors = _open(browser, gap["html"])
    assert page.locator("#cls-box").is_hidden() and errors == []
    page.context.close()
    hybrid = vitkit.create_model("R+ViT-Ti_16", num_classes=3, image_size=64, num_layers=1).eval()
    res = write_explorer(hybrid, torch.randn(1, 3, 64, 64), tmp_path / "hybrid.html")
    page, _, errors = _open(browser, res["html"])
    assert "Not shown" in page.locator("#filters-info").inner_text() and errors == []
    page.context.close()


def test_layer_choice():
    assert parse_layers("1,3-4", 12) == [0, 2, 3] and parse_layers("all", 3) == [0, 1, 2]
    for bad in ("0", "13", "2-1", "x", "1,,2"):
        with pytest.raises(UserError, match="--layers"):
            parse_layers(bad, 12)
    assert spread_layers(12, 3) == [0, 6, 11] and spread_layers(12, 1) == [11] and spread_layers(12, 0) == []
    assert spread_layers(4, 9) == [0, 1, 2, 3]
    for n in range(1, 13):
        got = spread_layers(12, n)
        assert len(got) == n and got[-1] == 11 and len(set(got)) == n
        assert max(np.diff(got), default=0) <= math.ceil(11 / max(n - 1, 1))


def test_the_page_template_is_package_data():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(cfg["tool"]["setuptools"]["package-data"]["vitkit.analysis"])
    files = {p.name for p in (ROOT / "src" / "vitkit" / "analysis").iterdir() if p.suffix in (".html", ".js")}
    assert files == {"explorer.html", "explorer.js"} and files <= listed
