"""The benchmarks run the library's current API: each one that can run on tiny inputs does so here (two of them
had gone stale after an API change without anyone noticing). The benchmarks' numbers are not checked; only
that they run to the end and write their JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vitkit

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *argv: str) -> str:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *argv], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    m = vitkit.create_model("ViT-Ti_16", num_classes=10, image_size=16, patch_size=4, num_layers=1, hidden_size=16,
                            num_heads=2, mlp_dim=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    torch.nn.init.normal_(m.head.weight, std=0.5)
    return vitkit.save_model(m, tmp_path_factory.mktemp("bench") / "m.safetensors")


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")))
def test_every_benchmark_parses_its_arguments(script):
    assert "usage" in _run(script, "--help").lower()


def test_preprocess_compare_runs(digits_model, tmp_path):
    _run("preprocess_compare.py", "--model", str(digits_model), "--data", "digits", "--limit", "20",
         "--out", str(tmp_path))
    res = json.loads((tmp_path / "preprocess_compare.json").read_text())
    assert set(res["runs"]) == {"vit_jax", "big_vision", "big_vision_precise", "pil"}
    assert all(r["images"] == 20 for r in res["runs"].values())


def test_int8_accuracy_pass_runs(digits_model, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    _run("int8_cpu.py", "--skip-speed", "--checkpoint", str(digits_model), "--data", "digits", "--limit", "20",
         "--calibration-images", "8", "--eval-batch", "10", "--out", str(tmp_path))
    res = json.loads((tmp_path / "int8-accuracy.json").read_text())
    assert res["accuracy"]["top1"] and "vitkit-fp32" in res["accuracy"]["top1"]
