"""Loading the CIFAR python batches (pickles) without running code: only plain data comes back."""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from ..errors import UserError


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR python batches that cannot run code.

    ``find_class`` is the only way a pickle reaches callables; it answers only numpy's array/dtype reconstructors,
    which build plain arrays. Everything else (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) raises
    ``pickle.UnpicklingError`` before anything is called. Object arrays are refused after loading.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode  # Python 3 protocol-2 pickles store bytes as _codecs.encode(str, 'latin1')
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a data file")


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode only allowed as encode(str, 'latin1'), got {encoding!r}")
    return text.encode("latin1")


def _check_plain(obj: Any, where: str, depth: int = 0) -> None:
    if depth > 10:
        raise UserError(f"{where}: nesting too deep")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise UserError(f"{where}: object arrays are not allowed")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, where, depth + 1)
            _check_plain(v, where, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_plain(v, where, depth + 1)
    elif not isinstance(obj, (str, bytes, int, float, bool, type(None), np.dtype)):
        raise UserError(f"{where}: unexpected {type(obj).__name__} in a data file")


def safe_load_pickle(data: bytes, where: str = "pickle") -> Any:
    """Load a CIFAR-style pickle without executing anything; ValueError naming ``where`` if it is not plain data."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # any failure of a refused or malformed pickle is a data error
        raise UserError(f"{where}: refused to load: {e}") from e
    _check_plain(obj, where)
    return obj
