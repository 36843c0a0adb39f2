"""Deterministic fuzz test over the four checkpoint formats (issue 20).

One tiny model is written as a vitkit ``.safetensors``, an official ``.npz``, a Hugging Face
``save_pretrained`` directory, timm ``.pth`` (with its ``NAME.json``) / ``.safetensors`` and a
``vitkit train`` checkpoint; a few hundred corrupted
variants of them (truncations, byte flips, safetensors header edits, dtype and shape edits,
hostile config values, pickle payloads, and the findings of ``scripts/fuzz_checkpoints.py``)
are loaded in a worker process under a 2 GiB address-space limit and a per-case time limit
(``fuzz_harness``). Every variant must end in a ``CheckpointError`` that names the file, or in a
model equal to the pristine one. The one exception, stated per case: bytes flipped inside the
tensor data of a format without a checksum (HF and timm safetensors) load as a model with other
values; nothing can tell. (vitkit files carry ``content_sha256``; ``.npz`` and ``torch.save`` zip
archives a CRC-32 per member, which the readers check.)
"""

from __future__ import annotations

import io
import json
import pickle
import random
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fuzz_harness import copy_target, make_pristine, run_cases, st_header_end, st_join, st_split

SEED = 20

# Hostile values for config fields: (field, value). JSON cannot hold NaN/inf in standard form, but
# Python's json (and transformers) read the NaN/Infinity literals, so they are tested too.
HOSTILE_VALUES: list[tuple[str, Any]] = [
    ("num_layers", 10**6), ("num_layers", 3), ("num_layers", -1), ("num_layers", 2.0), ("num_layers", "2"),
    ("num_layers", True), ("num_layers", None), ("num_layers", 2**70), ("image_size", 10**7),
    ("image_size", [8, 8, 8]), ("image_size", [0, 8]), ("image_size", 16), ("image_size", "8"),
    ("num_heads", 0), ("num_heads", 3), ("num_heads", -64), ("mlp_dim", -5), ("mlp_dim", 10**9),
    ("hidden_size", "64"), ("hidden_size", 64.5), ("hidden_size", 10**8), ("patch_size", 0),
    ("patch_size", [4]), ("patch_size", {"a": 1}), ("layer_norm_eps", "abc"), ("layer_norm_eps", float("nan")),
    ("layer_norm_eps", float("inf")), ("layer_norm_eps", -1e-6), ("layer_norm_eps", 0),
    ("dropout_rate", float("nan")), ("dropout_rate", 2.0), ("dropout_rate", "0.1"), ("num_classes", 10**9),
    ("num_classes", 5), ("num_classes", -3), ("in_chans", 0), ("in_chans", 10**6),
]
# vitkit-only fields (the HF config has no such keys).
VITKIT_ONLY: list[tuple[str, Any]] = [
    ("classifier", "nope"), ("classifier", ["token"]), ("gelu", 1), ("transformer", "yes"),
    ("norm_after_pool", 1), ("resnet", {"num_layers": [10**6], "width_factor": 1}),
    ("resnet", {"num_layers": [3], "width_factor": 10**6}), ("resnet", "R50"), ("resnet", {"num_layers": [3]}),
    ("representation_size", 0), ("representation_size", 16), ("mean", "0.5"), ("mean", [0.5, float("nan"), 0.5]),
    ("std", [0, 0, 0]), ("std", [0.5]), ("class_names", "abc"), ("class_names", [1, 2, 3]),
    ("class_names", ["a", "b"]), ("name", 5), ("name", "x" * 10**5), ("extra", [1]), ("unknown_field", 1),
]
HF_KEYS = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads", "mlp_dim": "intermediate_size",
           "in_chans": "num_channels", "dropout_rate": "hidden_dropout_prob"}
HF_ONLY: list[tuple[str, Any]] = [
    ("hidden_act", ["gelu"]), ("hidden_act", "relu"), ("qkv_bias", "false"), ("qkv_bias", False),
    ("id2label", [1, 2]), ("id2label", {"0": 1, "1": 2, "2": 3}), ("attention_probs_dropout_prob", "x"),
]
# Whole-document JSON edits: (label, text).
JSON_DOCS = [("list", "[1, 2]"), ("deep", "[" * 100000 + "]" * 100000), ("empty", ""), ("nul", "\x00"),
             ("string", '"config"'), ("bigint", "1" * 5000)]


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # creates the marker file if it is ever unpickled


def _offsets(data: bytes, rng: random.Random, n_random: int) -> list[int]:
    n = len(data)
    fixed = [0, 1, 4, 7, 8, 9, 16, 64, n // 3, n // 2, n - 100, n - 22, n - 2, n - 1]
    if data[:1] == b"{" or data[:2] == b"PK":
        pass
    else:  # safetensors: around the end of the header
        end = st_header_end(data)
        fixed += [end - 1, end, end + 1]
    return sorted({o for o in fixed + [rng.randrange(n) for _ in range(n_random)] if 0 <= o < n})


class Cases:
    def __init__(self, root: Path, pristine: dict[str, Path]):
        self.root, self.pristine, self.cases = root, pristine, []
        self.rng = random.Random(SEED)

    def add(self, fmt: str, label: str, expect: str, edit, inner: str | None = None) -> None:
        """A copy of the pristine ``fmt`` file with ``edit(bytes) -> bytes`` applied (to ``inner``
        inside an HF directory); ``expect``: ``error``, ``error_or_equal`` or ``error_or_loads``."""
        cid = f"{fmt}/{inner + '/' if inner else ''}{label}"
        dst = copy_target(fmt, self.pristine, self.root / f"case{len(self.cases):04d}{self.pristine[fmt].suffix}")
        # inner ".json": the NAME.json the timm export writes beside a .pth
        target = dst.with_suffix(".json") if inner == ".json" else dst / inner if inner else dst
        target.write_bytes(edit(target.read_bytes()))
        # An error about the sidecar names the sidecar: the stem names both.
        name = str(dst.with_suffix("")) if inner == ".json" else str(dst)
        self.cases.append({"id": cid, "format": fmt, "path": str(dst), "name": name, "expect": expect})


def _st_edit(fn):
    def edit(data: bytes) -> bytes:
        header, body = st_split(data)
        body = fn(header, body)
        return st_join(header, body)
    return edit


def _first_f32(header: dict[str, Any]) -> str:
    """The first non-square matrix (a swap of its dimensions must change something)."""
    return sorted(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32" and
                  len(v["shape"]) == 2 and v["shape"][0] != v["shape"][1])[0]


def byte_cases(c: Cases, fmt: str, data: bytes, truncations: int, flips: int,
               flip_expect: Callable[[int], str] = lambda o: "error_or_equal", inner: str | None = None) -> None:
    """Truncations (always an error) and single-byte flips of a file; ``flip_expect(offset)`` says what a flip
    there must give."""
    for o in _offsets(data, c.rng, truncations):
        c.add(fmt, f"truncate@{o}", "error", lambda d, o=o: d[:o], inner)
    for o in sorted(c.rng.sample(range(len(data)), flips)):
        c.add(fmt, f"flip@{o}", flip_expect(o), lambda d, o=o: d[:o] + bytes([d[o] ^ 0xFF]) + d[o + 1:], inner)


def safetensors_cases(c: Cases, fmt: str, inner: str | None, checksum: bool) -> None:
    data = (c.pristine[fmt] / inner if inner else c.pristine[fmt]).read_bytes()
    end = st_header_end(data)
    # A flip in the header is a parse error or a harmless change; in the data it is caught by the checksum
    # where the format has one.
    byte_cases(c, fmt, data, 8, 24, lambda o: "error_or_equal" if (checksum or o < end) else "error_or_loads", inner)

    def retype(new: str, scale: float = 1.0):
        def fn(h, body):
            k = _first_f32(h)
            h[k]["dtype"] = new
            if scale != 1.0:
                h[k]["shape"][-1] = int(h[k]["shape"][-1] * scale)
            return body
        return fn

    def reshape(shape_fn):
        def fn(h, body):
            k = _first_f32(h)
            h[k]["shape"] = shape_fn(h[k]["shape"])
            return body
        return fn

    def drop(h, body):
        del h[_first_f32(h)]
        return body

    def rename(h, body):
        k = _first_f32(h)
        h[k + "x"] = h.pop(k)
        return body

    def alias(h, body):  # a second name for the same bytes
        k = _first_f32(h)
        h["extra.weight"] = dict(h[k])
        return body

    def offsets(h, body):
        k = _first_f32(h)
        a, b = h[k]["data_offsets"]
        h[k]["data_offsets"] = [a + 4, b + 4]
        return body

    def huge_shape(h, body):
        h[_first_f32(h)]["shape"] = [2**40, 2**40]
        return body

    edits = {"dtype_I32": retype("I32"), "dtype_U32": retype("U32"), "dtype_BOOL4": retype("BOOL", 4),
             "dtype_C64": retype("C64", 0.5), "dtype_F16_same_bytes": retype("F16", 2), "dtype_F64": retype("F64"),
             "shape_swap": reshape(lambda s: s[::-1]), "shape_flat": reshape(lambda s: [s[0] * s[1]]),
             "shape_extra_dim": reshape(lambda s: [1, *s]), "shape_huge": huge_shape, "drop_tensor": drop,
             "rename_tensor": rename, "alias_tensor": alias, "shift_offsets": offsets}
    for label, fn in edits.items():
        c.add(fmt, label, "error", _st_edit(fn), inner)
    for label, n in (("header_len_huge", 2**62), ("header_len_zero", 0), ("header_len_odd", end - 7)):
        c.add(fmt, label, "error", lambda d, n=n: struct.pack("<Q", n) + d[8:], inner)


def vitkit_meta_cases(c: Cases) -> None:
    def with_config(field: str, value: Any):
        def fn(h, body):
            cfg = json.loads(h["__metadata__"]["config"])
            cfg[field] = value
            h["__metadata__"]["config"] = json.dumps(cfg)
            return body
        return fn

    for field, value in HOSTILE_VALUES + VITKIT_ONLY:
        c.add("vitkit", f"config.{field}={str(value)[:20]}", "error", _st_edit(with_config(field, value)))
    for label, text in JSON_DOCS:
        c.add("vitkit", f"config_doc_{label}", "error", _st_edit(lambda h, b, t=text: (
            h["__metadata__"].__setitem__("config", t), b)[1]))

    def meta(fn):
        return _st_edit(lambda h, b: (fn(h["__metadata__"]), b)[1])

    c.add("vitkit", "hash_removed", "error", meta(lambda m: m.pop("content_sha256")))
    c.add("vitkit", "old_file_v1", "error_or_equal", meta(lambda m: (m.pop("content_sha256"),  # files before the hash
                                                                     m.__setitem__("format_version", "1"))))
    c.add("vitkit", "hash_changed", "error", meta(lambda m: m.__setitem__("content_sha256", "0" * 64)))
    c.add("vitkit", "format_version_1", "error", meta(lambda m: m.__setitem__("format_version", "1")))
    c.add("vitkit", "format_tag_removed", "error", meta(lambda m: m.pop("format")))
    c.add("vitkit", "config_removed", "error", meta(lambda m: m.pop("config")))
    c.add("vitkit", "gelu_changed", "error", meta(lambda m: m.__setitem__(
        "config", m["config"].replace('"tanh"', '"exact"'))))  # valid, but covered by the hash


def hf_config_cases(c: Cases) -> None:
    def with_value(key: str, value: Any):
        def fn(data: bytes) -> bytes:
            d = json.loads(data)
            d[key] = value
            return json.dumps(d).encode()
        return fn

    for field, value in HOSTILE_VALUES:
        if field in ("num_classes",):  # HF has no such field: the head's shape tells
            continue
        key = HF_KEYS.get(field, field)
        c.add("hf", f"{key}={str(value)[:20]}", "error", with_value(key, value), "config.json")
    for key, value in HF_ONLY:
        c.add("hf", f"{key}={str(value)[:20]}", "error", with_value(key, value), "config.json")
    for label, text in JSON_DOCS:
        c.add("hf", f"doc_{label}", "error", lambda d, t=text: t.encode(), "config.json")
    c.add("hf", "config_huge", "error", lambda d: d + b" " * (17 * 2**20), "config.json")
    data = (c.pristine["hf"] / "config.json").read_bytes()
    for o in _offsets(data, c.rng, 4):
        # Cutting only the trailing newline leaves the same JSON.
        expect = "error_or_equal" if o > data.rindex(b"}") else "error"
        c.add("hf", f"truncate@{o}", expect, lambda d, o=o: d[:o], "config.json")


def _npz_edit(fn):
    def edit(data: bytes) -> bytes:
        with np.load(io.BytesIO(data)) as z:
            arrays = {k: z[k] for k in z.files}
        fn(arrays)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()
    return edit


def npz_cases(c: Cases, marker: Path) -> None:
    # zip stores a CRC-32 of every member: flipped data is caught; a flip in a timestamp is harmless.
    byte_cases(c, "npz", c.pristine["npz"].read_bytes(), 8, 24)
    q = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"
    emb = "embedding/kernel"
    edits = {
        "int32": lambda a: a.__setitem__(q, a[q].astype(np.int32)),
        "bool": lambda a: a.__setitem__(q, a[q] > 0),
        "complex": lambda a: a.__setitem__(q, a[q].astype(np.complex64)),
        "strings": lambda a: a.__setitem__(q, a[q].astype(str)),
        "uint8_head": lambda a: a.__setitem__("head/bias", a["head/bias"].astype(np.uint8)),
        "query_extra_dim": lambda a: a.__setitem__(q, a[q][None]),
        "query_2d": lambda a: a.__setitem__(q, a[q].reshape(a[q].shape[0], -1)),
        "embedding_transposed": lambda a: a.__setitem__(emb, a[emb].transpose(3, 2, 1, 0)),
        "embedding_3d": lambda a: a.__setitem__(emb, a[emb][0]),
        # 3 rows: neither 1 + a square (class token) nor a square (big_vision's layout without it).
        "posemb_not_square": lambda a: a.__setitem__("Transformer/posembed_input/pos_embedding",
                                                     a["Transformer/posembed_input/pos_embedding"][:, :3]),
        "nan_value": lambda a: a[q].__setitem__((0, 0, 0), np.nan),
        "inf_value": lambda a: a["head/bias"].__setitem__(0, np.inf),
        "drop_array": lambda a: a.pop("Transformer/encoder_norm/scale"),
        "extra_array": lambda a: a.__setitem__("Transformer/extra", np.zeros(3, np.float32)),
        "block_999999": lambda a: [a.__setitem__(k.replace("encoderblock_1", "encoderblock_999999"), a.pop(k))
                                   for k in list(a) if "encoderblock_1/" in k],
        "scalar_kernel": lambda a: a.__setitem__(emb, np.float32(1.0)),
        "empty_archive": lambda a: a.clear(),
        "float64": lambda a: a.__setitem__(q, a[q].astype(np.float64)),
    }
    for label, fn in edits.items():
        c.add("npz", label, "error_or_equal" if label == "float64" else "error", _npz_edit(fn))

    def objects(a):  # a pickle payload inside an .npz: np.load(allow_pickle=False) must refuse it
        a[q] = np.array([_Exploit(str(marker))], dtype=object)

    def savez_objects(data: bytes) -> bytes:
        with np.load(io.BytesIO(data)) as z:
            arrays = {k: z[k] for k in z.files}
        objects(arrays)
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # savez pickles object arrays
        return buf.getvalue()

    c.add("npz", "pickle_object_array", "error", savez_objects)

    def raw_pickle_member(data: bytes) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(buf, "w") as zout:
            for info in zin.infolist():
                zout.writestr(info, zin.read(info))
            zout.writestr("payload.npy", pickle.dumps(_Exploit(str(marker))))
        return buf.getvalue()

    c.add("npz", "pickle_member", "error", raw_pickle_member)


def _pth_edit(fn, replace: bool = False):
    """``fn`` edits the loaded state dict in place (``replace``: returns the object to save instead)."""
    def edit(data: bytes) -> bytes:
        state = torch.load(io.BytesIO(data), weights_only=True)
        obj = fn(state)
        buf = io.BytesIO()
        torch.save(obj if replace else state, buf)
        return buf.getvalue()
    return edit


def pth_cases(c: Cases, marker: Path) -> None:
    # torch.load does not check the zip's CRC-32s; the readers do (verify=True).
    byte_cases(c, "timm_pth", c.pristine["timm_pth"].read_bytes(), 8, 24)
    k = "blocks.0.attn.qkv.weight"
    edits = {
        "int": lambda s: s.__setitem__(k, s[k].int()), "bool": lambda s: s.__setitem__(k, s[k] > 0),
        "complex": lambda s: s.__setitem__(k, s[k].to(torch.complex64)),
        "sparse": lambda s: s.__setitem__(k, s[k].to_sparse()),
        "quantized": lambda s: s.__setitem__(k, torch.quantize_per_tensor(s[k], 0.1, 0, torch.qint8)),
        "extra_dim": lambda s: s.__setitem__(k, s[k][None]), "transposed": lambda s: s.__setitem__(k, s[k].T),
        "nan": lambda s: s[k].view(-1).__setitem__(0, float("nan")),
        "not_a_tensor": lambda s: s.__setitem__("norm.weight", [1.0, 2.0]),
        "list_not_dict": lambda s: list(s.values()),
        "embedding_1d": lambda s: s.__setitem__("patch_embed.proj.weight", s["patch_embed.proj.weight"].reshape(-1)),
        "head_1d": lambda s: s.__setitem__("head.weight", s["head.weight"].reshape(-1)),
        "block_999999": lambda s: [s.__setitem__(n.replace("blocks.1.", "blocks.999999."), s.pop(n))
                                   for n in list(s) if n.startswith("blocks.1.")],
        "float64": lambda s: [s.__setitem__(n, v.double()) for n, v in list(s.items())],
        "wrapped": lambda s: {"state_dict": dict(s)},
        "shared_storage": lambda s: s.__setitem__("norm.bias", s["norm.weight"]),
    }
    for label, fn in edits.items():
        expect = "error_or_equal" if label in ("float64", "wrapped") else \
            "error_or_loads" if label == "shared_storage" else "error"
        c.add("timm_pth", label, expect, _pth_edit(fn, replace=label in ("list_not_dict", "wrapped")))
    c.add("timm_pth", "pickle_payload", "error", _pth_edit(lambda s: s.__setitem__("x", _Exploit(str(marker)))))
    c.add("timm_pth", "raw_pickle", "error", lambda d: pickle.dumps(_Exploit(str(marker))))


def _zip_field(signature: bytes, offset: int, value: int):
    """Set one byte of the first zip record with ``signature`` (central directory: PK\\1\\2)."""
    def edit(data: bytes) -> bytes:
        i = data.index(signature) + offset
        return data[:i] + bytes([value]) + data[i + 1:]
    return edit


_Q = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"


def _npy_member(header: str, key: str = _Q):
    """Replace member ``key`` of an .npz by a hand-written .npy (this ``header``, the old data), in a
    zip whose CRC-32s are all valid: only the .npy header is hostile."""
    def edit(data: bytes) -> bytes:
        h = header.encode("latin1")
        h += b" " * (-(10 + len(h) + 1) % 64) + b"\n"
        buf = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(buf, "w") as zout:
            for info in zin.infolist():
                raw = zin.read(info)
                if info.filename == key + ".npy":
                    body = raw[10 + struct.unpack("<H", raw[8:10])[0]:]
                    raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + body
                zout.writestr(info, raw)
        return buf.getvalue()
    return edit


def timm_sidecar_cases(c: Cases) -> None:
    """The timm export's NAME.json (model_args, vitkit_config) beside a .pth: the same hostile values."""
    def edit(path: tuple[str, ...], value: Any):
        def fn(data: bytes) -> bytes:
            d = json.loads(data)
            node = d
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
            return json.dumps(d).encode()
        return fn

    for field, value in HOSTILE_VALUES[:20]:
        c.add("timm_pth", f"vitkit_config.{field}={str(value)[:20]}", "error", edit(("vitkit_config", field), value),
              ".json")
    for key, value in (("num_heads", "1"), ("num_heads", 0), ("num_heads", 10**6), ("act_layer", ["gelu"]),
                       ("act_layer", "relu")):
        c.add("timm_pth", f"model_args.{key}={value}", "error",
              lambda d, k=key, v=value: (lambda j: (j["model_args"].__setitem__(k, v), j.pop("vitkit_config"),
                                                    json.dumps(j).encode())[2])(json.loads(d)), ".json")
    for key, value in (("model_args", [1]), ("pretrained_cfg", "x"), ("num_classes", "3"), ("label_names", "abc")):
        c.add("timm_pth", f"{key}={value}", "error",
              lambda d, k=key, v=value: (lambda j: (j.__setitem__(k, v), j.pop("vitkit_config"),
                                                    json.dumps(j).encode())[2])(json.loads(d)), ".json")
    for label, text in JSON_DOCS:
        c.add("timm_pth", f"sidecar_doc_{label}", "error", lambda d, t=text: t.encode(), ".json")


def train_cases(c: Cases) -> None:
    """A `vitkit train` checkpoint read as a model: the zip's CRC-32s, its meta.model_config, its tensors."""
    byte_cases(c, "train", c.pristine["train"].read_bytes(), 4, 12)

    def edit(fn):
        def apply(d: bytes) -> bytes:
            st = torch.load(io.BytesIO(d), weights_only=True)
            fn(st)
            buf = io.BytesIO()
            torch.save(st, buf)
            return buf.getvalue()
        return apply

    def config(field, value):
        def fn(st):
            cfg = json.loads(st["meta"]["model_config"])
            cfg[field] = value
            st["meta"]["model_config"] = json.dumps(cfg)
        return fn

    for field, value in HOSTILE_VALUES[:24]:
        c.add("train", f"model_config.{field}={str(value)[:20]}", "error", edit(config(field, value)))
    k = "blocks.0.attn.qkv.weight"
    for label, fn in {"model_config_doc": lambda st: st["meta"].__setitem__("model_config", "[" * 10**5),
                      "model_not_dict": lambda st: st.__setitem__("model", [1, 2]),
                      "int_tensor": lambda st: st["model"].__setitem__(k, st["model"][k].int()),
                      "sparse_tensor": lambda st: st["model"].__setitem__(k, st["model"][k].to_sparse()),
                      "not_a_tensor": lambda st: st["model"].__setitem__(k, 1.0),
                      "nan": lambda st: st["model"][k].view(-1).__setitem__(0, float("nan"))}.items():
        c.add("train", label, "error", edit(fn))


# Findings of scripts/fuzz_checkpoints.py, kept as cases: (format, inner file, label, edit, expect).
FINDINGS: list[tuple[str, str | None, str, Any, str]] = [
    # random engine, seed 7, case 843 (timm_pth byte@191820): "version needed to extract" of a central
    # directory record set to 255 made zipfile raise NotImplementedError("zip file version 25.5").
    *[(fmt, None, "zip_version_25.5", _zip_field(b"PK\x01\x02", 6, 255), "error") for fmt in ("timm_pth", "npz")],
    # the same family: an unsupported compression method (99, AES) in the central directory.
    *[(fmt, None, "zip_method_99", _zip_field(b"PK\x01\x02", 10, 99), "error") for fmt in ("timm_pth", "npz")],
    # random engine, seed 7, case 24953 (npz flip@193051+flip@15977): a flipped .npy header made NumPy's
    # header parser raise tokenize.TokenError. Headers are now read and checked before NumPy reads a member.
    ("npz", None, "npy_header_unparseable", _npy_member("{'descr': '<f4', 'fortran_order': False, 'shape': (64, 1"),
     "error"),
    # the same family, found by reading that code: NumPy allocates the shape a header declares before
    # it reads the data (40 GB here, for a member of 16 kB), objects in a header, non-float dtypes.
    ("npz", None, "npy_shape_1e10", _npy_member("{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000,), }"),
     "error"),
    ("npz", None, "npy_shape_overflow",
     _npy_member("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }"),
     "error"),
    ("npz", None, "npy_object", _npy_member("{'descr': '|O', 'fortran_order': False, 'shape': (512,), }"), "error"),
    ("npz", None, "npy_datetime", _npy_member("{'descr': '<M8[s]', 'fortran_order': False, 'shape': (64, 1, 32), }"),
     "error"),
]


def build_cases(root: Path) -> tuple[list[dict[str, Any]], dict[str, Path], Path]:
    pristine = make_pristine(root / "pristine")
    marker = root / "pwned"
    c = Cases(root / "cases", pristine)
    (root / "cases").mkdir()
    safetensors_cases(c, "vitkit", None, checksum=True)
    vitkit_meta_cases(c)
    safetensors_cases(c, "hf", "model.safetensors", checksum=False)
    hf_config_cases(c)
    safetensors_cases(c, "timm_st", None, checksum=False)
    npz_cases(c, marker)
    pth_cases(c, marker)
    timm_sidecar_cases(c)
    train_cases(c)
    for fmt, inner, label, edit, expect in FINDINGS:
        c.add(fmt, f"finding:{label}", expect, edit, inner)
    return c.cases, pristine, marker


def check(cases: list[dict[str, Any]], results: dict[str, dict[str, Any]]) -> list[str]:
    """The failures: cases whose outcome their expectation does not allow."""
    allowed = {"error": {"error"}, "error_or_equal": {"error", "equal"},
               "error_or_loads": {"error", "equal", "differs"}}
    bad = []
    for case in cases:
        r = results[case["id"]]
        if r["outcome"] not in allowed[case["expect"]]:
            bad.append(f"{case['id']}: expected {case['expect']}, got {r['outcome']}: {r.get('detail', '')}")
        elif r["outcome"] == "error" and not r["named"]:
            bad.append(f"{case['id']}: the error does not name the file: {r['detail']}")
    return bad


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")  # the quantized case builds one on purpose
def test_fuzz_all_formats(tmp_path):
    cases, pristine, marker = build_cases(tmp_path)
    assert len({c["id"] for c in cases}) == len(cases), "case ids must be unique"
    results = run_cases(cases, pristine, tmp_path)
    failures = check(cases, results)
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures[:40])
    assert not marker.exists(), "a pickle payload was executed"
    # The test can fail: every kind of outcome it allows actually occurs.
    outcomes = {r["outcome"] for r in results.values()}
    assert {"error", "equal"} <= outcomes, outcomes
    assert len(cases) > 500


@pytest.mark.parametrize("fmt", ["vitkit", "npz"])
def test_every_data_byte_flip_is_detected(tmp_path, fmt):
    # Exhaustive over a slice of the tensor data (not sampled): formats with a checksum never load
    # flipped tensor bytes.
    import vitkit
    from vitkit.checkpoints import CheckpointError

    pristine = make_pristine(tmp_path / "p")
    data = pristine[fmt].read_bytes()
    if fmt == "vitkit":
        start = st_header_end(data)
    else:  # inside the array data of the biggest member (past its local header and .npy header)
        with zipfile.ZipFile(pristine[fmt]) as z:
            info = max(z.infolist(), key=lambda i: i.file_size)
        start = data.index(b"\x93NUMPY", info.header_offset) + 128
    path = tmp_path / f"flipped{pristine[fmt].suffix}"
    for o in range(start, start + 64):
        path.write_bytes(data[:o] + bytes([data[o] ^ 0x01]) + data[o + 1:])
        with pytest.raises(CheckpointError, match="flipped"):
            vitkit.load_model(path)
