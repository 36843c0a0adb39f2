"""`vitkit bench` smoke tests on a small model (no timing assertions) and the HF reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vitkit.cli.main import build_parser, main
from vitkit.models.config import ViTConfig
from vitkit.models.registry import build_model

transformers = pytest.importorskip("transformers")


def test_hf_reference_computes_the_same_function() -> None:
    from vitkit.bench.hf_reference import hf_model_like

    cfg = ViTConfig(name="tiny", patch_size=8, hidden_size=32, mlp_dim=64, num_heads=2, num_layers=2,
                    num_classes=5, image_size=16)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf = hf_model_like(model).eval()
    # The HF model is a separate implementation (separate q/k/v, its own attention code).
    assert not any(p is q for p in hf.parameters() for q in model.parameters())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(hf(x), model(x), rtol=0, atol=1e-5)


def test_hf_reference_rejects_hybrids() -> None:
    from vitkit.bench.hf_reference import hf_model_like
    from vitkit.models.registry import create_model

    with torch.device("meta"):
        model = create_model("R+ViT-Ti_16")
    with pytest.raises(ValueError, match="ResNet"):
        hf_model_like(model)


def test_bench_infer_compare_hf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "--model", "ViT-Ti_16", "--image-size", "32", "--batch", "2", "--num-classes", "10",
               "--dtype", "fp32",
               "--steps", "1", "--warmup", "0", "--compare", "hf", "--peak-size", "256", "--json",
               "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["results"]) == {"vitkit", "hf"}
    assert res["speedup_vs_hf"] > 0 and res["matmul_peak"]["dtype"] == "float32"
    assert res["max_abs_diff_vitkit_vs_hf"] <= 1e-4
    assert res["max_abs_reference_logit"] > 1e-3  # the comparison is not between all-zero logits
    assert [p.name for p in tmp_path.glob("bench-*.json")] == ["bench-infer-ViT-Ti_16-fp32-b2-r32.json"]
    # The recorded command is a command line that parses back to the same options.
    words = res["command"].split()
    assert words[:2] == ["vitkit", "bench"]
    again = build_parser().parse_args(words[1:])
    assert (again.model, again.batch_size, again.compare, again.steps) == ("ViT-Ti_16", 2, "hf", 1)


def test_bench_train_microbatch_checkpointing(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "--model", "ViT-Ti_16", "--mode", "train", "--image-size", "32", "--batch", "4",
               "--micro-batch", "2", "--checkpointing", "--num-classes", "10", "--steps", "1", "--warmup", "0",
               "--peak-size", "256", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["checkpointing"] and res["micro_batch"] == 2
    assert res["results"]["vitkit"]["images_per_s"] > 0
    assert res["memory"]["vitkit"]["peak_rss_gb"] > 0


def test_bench_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--batch-size", "0"], ["--batch", "0"]):  # the old spelling is a hidden alias
        with pytest.raises(SystemExit) as e:
            main(["bench", *argv])
        assert e.value.code == 2 and "must be positive" in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [
    (["--mode", "data"], "--data"),
    (["--batch", "4", "--micro-batch", "3", "--mode", "train"], "--micro-batch"),
    (["--checkpointing"], "--checkpointing"),
    (["--model", "ViT-Q_99"], "unknown model"),
])
def test_bench_user_errors(argv: list[str], msg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *argv, "--image-size", "32", "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_bench_data_mode(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "--mode", "data", "--data", "digits", "--image-size", "16", "--batch", "8", "--workers", "0",
               "--steps", "2", "--warmup", "1", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["images"] == 16 and res["workers"] == 0 and res["images_per_s_per_worker"] > 0
