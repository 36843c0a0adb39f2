"""`vitkit eval` on a run folder reproduces the run's own number by default (issue 29 part 5): it evaluates in the
precision the run evaluated in (summary.json's ``eval_precision``) unless --precision is given, and says which ran."""

import json

import pytest

from vitkit.cli.main import main

TINY = ["model.num_layers=1", "model.hidden_size=16", "model.mlp_dim=32", "model.num_heads=2", "data.image_size=8",
        "model.patch_size=4", "data.batch_size=16", "schedule.warmup_steps=1", "data.num_workers=0", "threads=1",
        "data.eval_limit=60", "data.eval_batch_size=32", "schedule.steps=3", "eval_every=0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("prec") / "run"
    # fp32: not what `auto` gives on a CPU with fast bf16, so the default has to come from the run
    assert main(["train", "--out", str(out), "--no-progress", "-q", "precision=fp32", *TINY]) == 0
    return out


def _eval(capsys, *extra):
    capsys.readouterr()
    assert main(["eval", "--data", "digits", "--limit", "60", "--num-workers", "0", "--no-progress", "--json",
                 *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("where", ["", "model.safetensors"])
def test_eval_of_a_run_uses_the_runs_precision_and_number(run, where, capsys):
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_precision"] == "fp32"
    rec = _eval(capsys, "--model", str(run / where) if where else str(run))
    assert rec["precision"] == "fp32" and "summary.json" in rec["precision_from"]
    assert rec["num_examples"] == summary["eval"]["examples"] == 60
    assert rec["top1"] == pytest.approx(summary["eval_top1"], abs=1e-9)
    assert rec["top5"] == pytest.approx(summary["eval_top5"], abs=1e-9)


def test_precision_given_wins_and_the_text_report_says_which_ran(run, capsys):
    rec = _eval(capsys, "--model", str(run), "--precision", "bf16")
    assert (rec["precision"], rec["precision_from"]) == ("bf16", "--precision")
    capsys.readouterr()
    assert main(["eval", "--model", str(run), "--data", "digits", "--limit", "8", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert ", fp32, " in out and "note: precision fp32: the run's own" in out
