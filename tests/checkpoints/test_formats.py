"""The format registry (checkpoints.formats): one explicit table in detection order; nothing registers itself
when imported."""

import subprocess
import sys

import pytest

from vitkit.checkpoints.formats import FORMATS, get_format
from vitkit.errors import UserError


def test_detection_order_is_the_table():
    assert [f.name for f in FORMATS] == ["vitkit", "hf", "npz", "timm", "train", "onnx"]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_every_entry_resolves_to_functions(fmt):
    assert callable(fmt.detect) and callable(fmt.read)
    assert (fmt.write is None) == (fmt.name in ("train", "onnx"))  # read-only: training checkpoints, ONNX
    assert get_format(fmt.name) is fmt


def test_unknown_format_names_the_known_ones():
    with pytest.raises(UserError, match="known formats: vitkit, hf, npz, timm, train, onnx"):
        get_format("tflite")


def test_the_table_imports_no_reader():
    # Readers are imported when a format is first used, not as a side effect of importing the table.
    code = "import sys, vitkit.checkpoints.formats; print(sorted(m for m in sys.modules if m.startswith('vitkit.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    readers = {f"vitkit.checkpoints.{m}" for m in ("native", "hf", "official_npz", "timm", "training", "onnx_model")}
    loaded = set(eval(out))
    assert "vitkit.checkpoints.formats" in loaded and not loaded & readers
