"""``classes.txt`` / ``meta.json`` beside WebDataset shards (local or remote): the one reader of them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import UserError


def read_wds_metadata(shard_dir: str) -> dict[str, Any]:
    """``classes.txt`` / ``meta.json`` beside the shards, as {num_classes, class_names, num_examples}."""
    meta: dict[str, Any] = {}
    mj = os.path.join(shard_dir, "meta.json")
    if os.path.isfile(mj):
        try:
            raw = json.loads(Path(mj).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"wds: cannot parse {mj!r}: {e}") from e
        if not isinstance(raw, dict):
            raise UserError(f"wds: {mj!r} must hold a JSON object")
        meta.update({k: raw[k] for k in ("num_classes", "class_names", "num_examples") if k in raw})
    ct = os.path.join(shard_dir, "classes.txt")
    if os.path.isfile(ct):
        names = [ln.strip() for ln in Path(ct).read_text().splitlines() if ln.strip()]
        if "class_names" in meta and list(meta["class_names"]) != names:
            raise UserError(f"wds: {ct!r} and meta.json list different class names")
        meta["class_names"] = names
    return meta
