"""The error contract (issue 29): every mistake a user can fix ends with exit 2 and one line on stderr that names
the value, the place and the fix; no traceback, no "internal error". Exit 1 is for vitkit's bugs only.

The table runs each mistake through the command line's ``main(argv)`` in this process (torch is imported once;
each mistake is caught before any real work, so the whole table takes seconds), on shared tiny fixtures: a
10-class ViT file, a finished one-step run and a plain file standing for "a path that cannot be a folder" (tests
run as root here, where permission bits do not stop a write; nothing can be created under a regular file).
"""

import os
import subprocess
import sys

import pytest

import vitkit
from vitkit.cli.main import main

TINY = ["model.num_layers=1", "model.hidden_size=16", "model.mlp_dim=32", "model.num_heads=2", "data.image_size=8",
        "model.patch_size=4", "data.batch_size=16", "schedule.warmup_steps=1", "data.num_workers=0", "threads=1",
        "eval_every=0"]

# (argv with {d}: fixture folder, {m}: model file, {f}: a regular file, {run}: a finished run), expected text
MISTAKES = [
    # the examples
    ("train --out {run} --no-progress schedule.steps=1 " + " ".join(TINY), "pass --resume"),
    ("train -q --out {run} --resume model.num_layers=2", "model.num_layers=2 but"),
    ("train --preset cifar10_cpu --out {d}/c10 model.patch_size=8 --data cifar:{d}/no-cifar-here",
     "data.progressive_resize size 24"),
    ("export --model {m} --out {f}/sub.onnx", "is a file, so nothing can be created under it"),
    ("convert --model {m} --out {f}/sub.safetensors", "is a file, so nothing can be created under it"),
    # --out that is a file, or under a file, for train, eval, export, convert (and the other report writers)
    ("train --out {f} " + " ".join(TINY), "is a file, not a folder"),
    ("train --out {f}/sub " + " ".join(TINY), "is a file, so nothing can be created under it"),
    ("eval --model {m} --data digits --out {f}", "is a file, not a folder"),
    ("eval --model {m} --data digits --out {f}/sub", "is a file, so nothing can be created under it"),
    ("export --model {m} --out {d}", "is a folder; give the name of the file"),
    ("convert --model {m} --out {f} --format hf --force", "is a file, not a folder"),
    ("convert --model {m} --out {f}/hf --format hf", "is a file, so nothing can be created under it"),
    ("fewshot --model {m} --data digits --out {f}", "is a file, not a folder"),
    ("analyze --model {m} --data digits --out {f}/sub", "is a file, so nothing can be created under it"),
    ("bench --model {m} --out {f}", "is a file, not a folder"),
    # missing files
    ("train --config {d}/nope.yaml --out {d}/x", "--config {d}/nope.yaml: no such file"),
    ("train --out {d}/no-run --resume", "is {d}/no-run a vitkit training run?"),
    ("train --out {d}/x model.init={d}/missing.safetensors", "checkpoint not found: {d}/missing.safetensors"),
    ("eval --model {d}/missing.safetensors --data digits", "checkpoint not found"),
    ("eval --model {m} --data folder:{d}/no-folder", "is not a directory"),
    # bad numbers
    ("train --out {d}/x --batch-size -1", "argument --batch-size: must be positive, got -1"),
    ("train --out {d}/x data.batch_size=-4", "data.batch_size=-4 must be >= 1"),
    ("train --out {d}/x optim.lr=-1", "optim.lr=-1.0 must be > 0"),
    ("train --out {d}/x schedule.steps=0", "schedule.steps must be >= 1"),
    ("train --out {d}/x data.image_size=0", "data.image_size=0 must be >= 1"),
    ("train --out {d}/x model.patch_size=3", "not divisible by the total stride 3"),
    ("eval --model {m} --data digits --limit 0", "argument --limit: must be positive, got 0"),
    ("eval --model {m} --data digits --image-size 7", "--image-size 7: "),
    ("train --out {d}/fp16 precision=fp16 device=cpu " + " ".join(TINY), "precision=fp16 needs a GPU"),
    # misspellings, each with a did-you-mean
    ("eval --model {m} --data digits --split tset", "unknown split 'tset' (did you mean test?)"),
    ("predict --model {m} --data digits --split valdiation", "(did you mean validation?)"),
    ("eval --model {m} --data digts", "(did you mean digits?)"),
    ("eval --model {m} --data cifr:{d}", "(did you mean cifar?)"),
    ("eval --model imagenet21k/ViT-B_61 --data digits", "(did you mean imagenet21k/ViT-B_16"),
    ("download imagenet21/ViT-B_16", "(did you mean imagenet21k/ViT-B_16"),
    ("train --preset cifar10_cpuu --out {d}/x", "(did you mean cifar10_cpu?)"),
    ("train --out {d}/x model.name=ViT-Ti_61", "(did you mean ViT-Ti_16"),
    ("train --out {d}/x optim.lrr=1", "(did you mean lr?)"),
    ("eval --model {m} --data digits --precision fp61", "(did you mean fp16?)"),
    ("trian --out {d}/x", "(did you mean train?)"),
    ("eval --model {m} --data digits --limt 3", "(did you mean --limit"),
]


@pytest.fixture(scope="module")
def where(tmp_path_factory):
    d = tmp_path_factory.mktemp("mistakes")
    model = vitkit.create_model("ViT-Ti_16", num_classes=10, image_size=8, patch_size=4, hidden_size=16, mlp_dim=32,
                                num_heads=2, num_layers=1)
    vitkit.save_model(model, d / "m.safetensors")
    (d / "afile").write_text("a file, not a folder\n")
    assert main(["train", "--out", str(d / "run"), "--no-progress", "-q", "schedule.steps=1", *TINY]) == 0
    return {"d": str(d), "m": str(d / "m.safetensors"), "f": str(d / "afile"), "run": str(d / "run")}


def test_the_table_is_long_enough():
    assert len(MISTAKES) >= 30


@pytest.mark.parametrize(("argv", "expected"), MISTAKES, ids=[a.split(" --")[0] + f"-{i}"
                                                               for i, (a, _) in enumerate(MISTAKES)])
def test_a_user_mistake_is_exit_2_and_one_line(where, argv, expected, capsys):
    args = [a.format(**where) for a in argv.split()]
    try:
        code = main(args)
    except SystemExit as e:  # argparse's errors
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("vitkit") and " error: " in lines[0], err
    assert expected.format(**where) in lines[0], err


def test_a_closed_stdout_ends_quietly():
    """`vitkit models --pretrained | head -1`: the reader goes away; the command ends as Unix tools do (141, what a
    shell reports for SIGPIPE), with nothing on stderr. The pipe's read end is closed before the command writes,
    so the write fails every time (with `head` it fails only when the listing outruns it)."""
    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        p = subprocess.run([sys.executable, "-m", "vitkit.cli.main", "models", "--pretrained"], stdout=write,
                           stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    finally:
        os.close(write)
    assert p.returncode == 141, p.stderr
    assert p.stderr == ""
