"""The official checkpoints of google-research/vision_transformer, by name.

Source: the repository's README (commit c6de1e5, 2024-05-21) and its history, the bucket
listing printed in ``vit_jax.ipynb`` (``gsutil ls -lh gs://vit_models/imagenet* .../sam``: the
file names and sizes of the first three groups), and ``vit_jax/configs/models.py`` /
``vit_jax/checkpoint.py`` for the AugReg naming. A catalogue name is the file's path in the
``gs://vit_models`` bucket without ``.npz``:

- ``imagenet21k/ViT-B_16``: pre-trained on ImageNet-21k (the paper's checkpoints; 224 px, with the
  21,843-class head and the representation layer). The README lists no accuracy for these files;
  its "Expected ViT results" table (vit_jax fine-tuning of them, dropout 0.0 / 0.1) goes in ``note``.
- ``imagenet21k+imagenet2012/ViT-B_16`` (384 px) and ``...-224`` (224 px): fine-tuned on
  ImageNet-2012. The README published top-1 only for the two 224 px files (81.2% / 82.7%, README
  of 2020-10-29 to 2021-06); the others have none (and ViT-B_8's resolution is not published:
  ``resolution`` None, the file's position embeddings tell it when loaded).
- ``sam/ViT-B_16``: trained on ImageNet-2012 with the SAM optimiser (224 px; no accuracy in the
  README). The ``gsam`` files are not listed anywhere in the repository, so they are not here.
- ``augreg/<filename>``: the AugReg collection ("How to train your ViT?"). Its full list lives in
  ``gs://vit_models/augreg/index.csv``, which is not reachable from here, so this table holds the
  README's recommended checkpoints (pre-trained and fine-tuned at 384 px, with the README's
  ImageNet top-1) and any other AugReg file name is accepted when it follows the naming scheme
  ``MODEL-{i1k,i21k}-EPep-lr_LR-aug_AUG-wd_WD-do_DO-sd_SD[--DATASET-steps_Nk-lr_LR-res_RES]``
  (``listed=False``; its accuracy is in index.csv, not here). ``augreg/B_16`` alone is the
  recommended ImageNet-21k checkpoint of that model, as ``vit_jax/configs/augreg.py`` picks it.

Files are served at ``$VITKIT_WEIGHTS_URL/<name>.npz`` (default
``https://storage.googleapis.com/vit_models``, the public HTTPS face of ``gs://vit_models``).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_BASE_URL = "https://storage.googleapis.com/vit_models"
I21K, I1K = "imagenet21k", "imagenet2012"


@dataclass(frozen=True)
class Entry:
    name: str  # catalogue name: bucket path without .npz
    model: str  # vitkit / vit_jax model config name
    resolution: int | None
    pretrain: str
    finetune: str | None
    accuracy: float | None  # published ImageNet-2012 top-1 (%) of this file, where the README gives one
    note: str = ""
    size_mib: float | None = None  # from the bucket listing in vit_jax.ipynb
    listed: bool = True  # False: accepted through the AugReg naming scheme, not in the README

    @property
    def url(self) -> str:
        """Where the file is downloaded from: ``$VITKIT_WEIGHTS_URL`` (a mirror) or the official bucket."""
        base = os.environ.get("VITKIT_WEIGHTS_URL") or DEFAULT_BASE_URL
        return base.rstrip("/") + "/" + urllib.parse.quote(self.name + ".npz", safe="/+")

    @property
    def official_url(self) -> str:
        """The file in the official bucket: its path names the cached copy, wherever it was fetched from."""
        return DEFAULT_BASE_URL + "/" + urllib.parse.quote(self.name + ".npz", safe="/+")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "url": self.url}


# README "Expected ViT results": vit_jax fine-tuning of the imagenet21k checkpoints, dropout 0.0 / 0.1.
_EXPECTED = {
    "R50+ViT-B_16": "cifar10 98.72/98.94%, cifar100 90.88/92.30%, imagenet2012 83.72/85.08%",
    "ViT-B_16": "cifar10 99.02/98.76%, cifar100 92.06/91.92%, imagenet2012 84.53/84.12%",
    "ViT-B_32": "cifar10 98.88/98.75%, cifar100 92.31/92.05%, imagenet2012 81.66/81.31%",
    "ViT-L_16": "cifar10 99.13/99.14%, cifar100 92.91/93.22%, imagenet2012 84.47/85.05%",
    "ViT-L_32": "cifar10 99.06/99.09%, cifar100 93.29/93.34%, imagenet2012 81.89/81.13%",
}
# The bucket listing in vit_jax.ipynb: file (without .npz) -> size in MiB (its GiB figures converted).
_I21K = {"R26+ViT-B_32": 450.23, "R50+ViT-B_16": 439.85, "R50+ViT-L_32": 1341.4, "ViT-B_16": 393.69,
         "ViT-B_32": 400.01, "ViT-B_8": 393.72, "ViT-H_14": 2519.0, "ViT-L_16": 1249.3, "ViT-L_32": 1259.5}
_I21K_I1K = {"R50+ViT-B_16": 377.57, "ViT-B_16-224": 330.29, "ViT-B_16": 331.4, "ViT-B_32": 336.89,
             "ViT-B_8": 334.78, "ViT-L_16-224": 1157.1, "ViT-L_16": 1167.4, "ViT-L_32": 1167.4}
_SAM = {"ViT-B_16": 330.3, "ViT-B_32": 336.61, "ViT-L_16": 1157.1, "ViT-L_32": 1167.4, "ViT-S_16": 252.57}
_FT224 = {"ViT-B_16-224": 81.2, "ViT-L_16-224": 82.7}

# README "Available ViT models": the recommended AugReg checkpoints. (model, pre-training file
# without .npz, fine-tuning learning rate of the 384 px ImageNet file, its top-1 %, size of the
# pre-trained file in MiB, images/s).
_AUGREG = (
    ("L_16", "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0", "0.01", 85.59, 1243, 50),
    ("B_16", "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0", "0.03", 85.49, 391, 138),
    ("S_16", "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0", "0.03", 83.73, 115, 300),
    ("R50_L_32", "R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1", "0.01", 85.99, 1337, 327),
    ("R26_S_32", "R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0", "0.01", 83.85, 170, 560),
    ("Ti_16", "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0", "0.03", 78.22, 37, 610),
    ("B_32", "B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0", "0.01", 83.59, 398, 955),
    ("S_32", "S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0", "0.01", 79.58, 118, 2154),
    ("R_Ti_16", "R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0", "0.03", 75.40, 40, 2426),
)

# vit_jax/configs/models.py: AugReg file prefix = model name without "ViT-", "+" -> "_"
# (every model but ViT-L_32, R50+ViT-B_16, ViT-H_14, which have no AugReg files).
_AUGREG_MODELS = {
    "Ti_16": "ViT-Ti_16", "S_16": "ViT-S_16", "B_16": "ViT-B_16", "L_16": "ViT-L_16", "B_8": "ViT-B_8",
    "S_32": "ViT-S_32", "B_32": "ViT-B_32", "R_Ti_16": "R+ViT-Ti_16", "R26_B_32": "R26+ViT-B_32",
    "R26_S_32": "R26+ViT-S_32", "R50_L_32": "R50+ViT-L_32",
}
_AUGREG_RE = re.compile(
    r"^(?P<model>[A-Za-z0-9_]+)-(?P<ds>i1k|i21k)-(?P<ep>\d+)ep-lr_(?P<lr>[0-9.e-]+?)-aug_(?P<aug>[a-z0-9]+)"
    r"-wd_(?P<wd>[0-9.]+)-do_(?P<do>[0-9.]+)-sd_(?P<sd>[0-9.]+)"
    r"(?:--(?P<ads>[a-z0-9_]+)-steps_(?P<steps>\d+k?)-lr_(?P<alr>[0-9.]+)-res_(?P<res>\d+))?$"
)


def _build() -> dict[str, Entry]:
    out: dict[str, Entry] = {}

    def add(e: Entry) -> None:
        out[e.name] = e

    for m, mib in _I21K.items():
        note = ("README 'Expected ViT results' for fine-tuning this checkpoint with vit_jax "
                f"(dropout 0.0/0.1): {_EXPECTED[m]}") if m in _EXPECTED else "no published result"
        add(Entry(f"{I21K}/{m}", m, 224, I21K, None, None, note, mib))
    for f, mib in _I21K_I1K.items():
        model = f.removesuffix("-224")
        res = 224 if f.endswith("-224") else None if model == "ViT-B_8" else 384
        acc = _FT224.get(f)
        note = "top-1 from the README of 2020-10-29" if acc else "the README gives no top-1 for this file"
        add(Entry(f"{I21K}+{I1K}/{f}", model, res, I21K, I1K, acc, note, mib))
    for m, mib in _SAM.items():
        add(Entry(f"sam/{m}", m, 224, "imagenet2012 (SAM)", None, None, "the README gives no top-1 for this file",
                  mib))
    for short, up, lr, acc, mib, ips in _AUGREG:
        model = _AUGREG_MODELS[short]
        add(Entry(f"augreg/{up}", model, 224, I21K, None, None,
                  f"README recommended AugReg checkpoint; fine-tuned: ...res_384 (top-1 {acc}%)", mib))
        add(Entry(f"augreg/{up}--{I1K}-steps_20k-lr_{lr}-res_384", model, 384, I21K, I1K, acc,
                  f"README recommended AugReg fine-tuning; {ips} img/s in the README"))
    return out


CATALOGUE: dict[str, Entry] = _build()
_RECOMMENDED = {short: f"augreg/{up}" for short, up, *_ in _AUGREG}


def list_entries() -> list[Entry]:
    return list(CATALOGUE.values())


def _augreg(name: str) -> Entry | None:
    """An AugReg file name parsed by the naming scheme (None when it does not follow it)."""
    m = _AUGREG_RE.match(name)
    if not m or m["model"] not in _AUGREG_MODELS:
        return None
    res = int(m["res"]) if m["res"] else 224
    pre = I21K if m["ds"] == "i21k" else I1K
    return Entry(f"augreg/{name}", _AUGREG_MODELS[m["model"]], res, pre, m["ads"], None,
                 "accepted by the AugReg naming scheme; its accuracy is in gs://vit_models/augreg/index.csv",
                 listed=False)


def lookup(name: str) -> Entry | None:
    """The entry named ``name`` (``.npz`` suffix and a ``gs://vit_models/`` prefix allowed), or None."""
    key = name.removeprefix("gs://vit_models/").removesuffix(".npz")
    if key in CATALOGUE:
        return CATALOGUE[key]
    if key.startswith("augreg/"):
        rest = key[len("augreg/"):]
        if rest in _RECOMMENDED:
            return CATALOGUE[_RECOMMENDED[rest]]
        return _augreg(rest)
    return None


def default_for_model(model: str) -> Entry | None:
    """What ``create_model(model, pretrained=True)`` loads: the paper's ImageNet-21k checkpoint
    (``imagenet21k/MODEL``), else the README's recommended AugReg one, else None."""
    if f"{I21K}/{model}" in CATALOGUE:
        return CATALOGUE[f"{I21K}/{model}"]
    for short, full in _AUGREG_MODELS.items():
        if full == model and short in _RECOMMENDED:
            return CATALOGUE[_RECOMMENDED[short]]
    return None


def looks_like_catalogue_name(text: str) -> bool:
    return str(text).startswith(("imagenet21k/", "imagenet21k+imagenet2012/", "augreg/", "sam/", "gs://vit_models/"))
