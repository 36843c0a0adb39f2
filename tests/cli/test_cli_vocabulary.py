"""One vocabulary: every sub-command's ``--help`` works, documents every option, ends with examples; the shared
flags exist where they apply and mean the same (type, choices, help text from vitkit.cli.common); the first example
of each ``--help`` runs on tiny inputs."""

import argparse
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli import common
from vitkit.cli.main import COMMANDS, build_parser, main

# flag -> how vitkit.cli.common adds it (the one definition)
SHARED = {
    "--model": common.add_model,
    "--data": common.add_data,
    "--out": lambda p: common.add_out(p, what="x"),
    "--batch-size": lambda p: common.add_batch_size(p, default=1),
    "--precision": common.add_precision,
    "--num-workers": common.add_num_workers,
    "--image-size": common.add_image_size,
    "--preprocess": common.add_preprocess,
    "--no-progress": common.add_no_progress,
    "--json": common.add_json,
    "--device": common.add_device,
    "--split": common.add_split,
    "--limit": common.add_limit,
}

# the shared flags each command must have (where they make sense)
EXPECTED = {
    "models": {"--image-size", "--json"},
    "download": {"--no-progress", "--json"},
    "data": {"--no-progress", "--json"},
    "demo": {"--out", "--no-progress", "--json"},
    "convert": {"--model", "--out", "--image-size", "--json"},
    "train": {"--out", "--data", "--batch-size", "--precision", "--num-workers", "--image-size", "--preprocess",
              "--no-progress", "--json"},
    "eval": {"--model", "--data", "--out", "--batch-size", "--precision", "--num-workers", "--image-size",
             "--preprocess", "--no-progress", "--json", "--device", "--split", "--limit"},
    "fewshot": {"--model", "--data", "--out", "--batch-size", "--precision", "--num-workers", "--image-size",
                "--preprocess", "--no-progress", "--json", "--device", "--limit"},
    "analyze": {"--model", "--data", "--out", "--batch-size", "--image-size", "--preprocess", "--json", "--split",
                "--no-progress"},
    "predict": {"--model", "--data", "--batch-size", "--precision", "--image-size", "--preprocess", "--no-progress",
                "--json", "--device", "--split", "--limit"},
    "export": {"--model", "--out", "--image-size", "--json"},
    "bench": {"--model", "--data", "--out", "--batch-size", "--precision", "--num-workers", "--image-size",
              "--json", "--device", "--split"},
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    return build_parser().get_default("_commands")


def _canonical(flag: str) -> argparse.Action:
    p = argparse.ArgumentParser()
    SHARED[flag](p)
    return next(a for a in p._actions if flag in a.option_strings)


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in parser._actions for o in a.option_strings if a.help != argparse.SUPPRESS}


def test_every_command_is_covered():
    assert set(_commands()) == set(COMMANDS) == set(EXPECTED)


def test_choices_are_the_librarys():
    from vitkit.data.preprocess import PREPROCESSINGS
    from vitkit.perf import PRECISIONS

    assert common.PRECISIONS == tuple(PRECISIONS)
    assert common.PREPROCESSINGS == tuple(PREPROCESSINGS)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_documents_every_option_and_ends_with_examples(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    parser = _commands()[name]
    for a in parser._actions:
        if a.help != argparse.SUPPRESS:
            assert a.help, f"vitkit {name}: {a.option_strings or a.dest} has no help text"
    examples = common.examples(parser)
    assert 2 <= len(examples) <= 3 and all(e.startswith(f"vitkit {name} ") for e in examples)
    assert text.rstrip().endswith(examples[-1])
    assert "``" not in text


@pytest.mark.parametrize("name", COMMANDS)
def test_shared_flags_exist_and_mean_the_same(name):
    actions = _actions(_commands()[name])
    missing = EXPECTED[name] - set(actions)
    assert not missing, f"vitkit {name} lacks {sorted(missing)}"
    for flag in SHARED:
        if flag not in actions:
            continue
        got, ref = actions[flag], _canonical(flag)
        assert (got.dest, got.type, got.choices, got.nargs, got.metavar, type(got)) == \
            (ref.dest, ref.type, ref.choices, ref.nargs, ref.metavar, type(ref)), f"vitkit {name} {flag}"
        # the shared text (what the command adds, e.g. which output, comes after it)
        shared = {"--out": ("output: ",), "--json": ("print ", " as JSON on stdout instead of text"),
                  "--limit": ("only the first N examples", "exactly N")}.get(
            flag, (ref.help.split(" (default")[0].split(";")[0],))
        assert got.help.startswith(shared[0]) and all(t in got.help for t in shared), \
            f"vitkit {name} {flag}: help {got.help!r}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The files the examples name: vit.safetensors (a tiny 10-class model), photo.jpg."""
    root = tmp_path_factory.mktemp("examples")
    model = vitkit.create_model("ViT-Ti_16", num_classes=10, image_size=16, patch_size=4, num_layers=1,
                                hidden_size=16, num_heads=2, mlp_dim=32)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    vitkit.save_model(model, root / "vit.safetensors")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / "photo.jpg")
    return root


# What a test adds to an example so that it runs in seconds (the examples themselves are real commands).
FAST = {
    "demo": ["pretrain.schedule.steps=2", "finetune.schedule.steps=1", "schedule.warmup_steps=1", "eval_every=0",
             "data.eval_limit=16", "--no-progress"],
    "train": ["schedule.steps=2", "schedule.warmup_steps=1", "eval_every=0", "data.eval_limit=16",
              "data.num_workers=0", "--no-progress"],
    "bench": ["--steps", "1", "--warmup", "0", "--peak-size", "64"],
}


@pytest.mark.parametrize("name", COMMANDS)
def test_first_example_runs(name, workdir, monkeypatch, capsys, tmp_path):
    if name == "export":
        pytest.importorskip("onnxruntime")
    monkeypatch.chdir(workdir)
    line = common.examples(_commands()[name])[0]
    argv = shlex.split(line)[1:] + FAST.get(name, [])
    if name == "download":
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoints"))
        from http_server import FileServer

        monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "cache"))
        monkeypatch.delenv("VITKIT_OFFLINE", raising=False)
        with FileServer({"/weights/vit.safetensors": (workdir / "vit.safetensors").read_bytes()}) as srv:
            argv = [a.replace("https://example.org", srv.url) for a in argv]
            assert main(argv) == 0, capsys.readouterr().err
        return
    assert main(argv) == 0, capsys.readouterr().err
