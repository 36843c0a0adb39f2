"""logger=tensorboard,mlflow,wandb: every metric, the config and the final model, with MLflow's local file store and
W&B offline, for real; a resumed run continues the same tracker runs."""

import json
import struct
import time

import pytest

from vitkit.errors import UserError
from vitkit.train import loop
from vitkit.train.config import apply_overrides, validate
from vitkit.train.presets import get_preset
from vitkit.train.trackers import parse_loggers

TINY = ["model.patch_size=4", "model.hidden_size=16", "model.mlp_dim=32", "model.num_heads=2",
        "model.num_layers=1", "data.train=digits", "data.image_size=8", "data.batch_size=16",
        "data.num_workers=0", "data.eval_limit=32", "data.limit=96", "schedule.warmup_steps=1",
        "log_every=2", "eval_every=4", "checkpoint_every=4", "threads=1", "precision=fp32", "schedule.steps=4"]


def _metrics(out):
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [((k, r["step"]), v) for r in recs for k, v in r.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)]


def _same_points(got, want):
    """Every metrics.jsonl number at its step under its name (the trackers add a train/ or eval/ prefix)."""
    def points(d):
        items = d.items() if isinstance(d, dict) else d
        return sorted((k.split("/")[-1].replace("@", "_at_"), s, round(float(v), 5)) for (k, s), v in items)

    assert points(got) == points(want)


def test_mlflow_file_store_records_the_run(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "r"
    cfg = apply_overrides(get_preset("default"), [*TINY, f"out={out}", "logger=mlflow"])
    loop.train(cfg, progress=False)
    assert not (out / "tb").exists()  # only the trackers asked for
    client = mlflow.MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    run_id = (out / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.data.params["model.hidden_size"] == "16" and run.data.params["data.train"] == "digits"
    want = _metrics(out)
    got = {}
    for key in run.data.metrics:
        for m in client.get_metric_history(run_id, key):
            got[(key, m.step)] = m.value
    _same_points(got, want)
    assert [a.path for a in client.list_artifacts(run_id)] == ["model.safetensors"]
    assert run.info.status == "FINISHED"
    # --resume of the finished run continues the same MLflow run, adding nothing
    loop.train(cfg, resume=True, progress=False)
    assert (out / "mlflow_run_id").read_text().strip() == run_id
    assert len(client.search_runs([run.info.experiment_id])) == 1


def _wandb_records(path):
    """The protobuf records of an offline run's .wandb file: W&B's header (":W&B", magic, version: 7 bytes), then
    LevelDB-log records (CRC-32 4, length 2, type 1: full / first / middle / last) in 32 KiB blocks. (wandb 0.31
    reads them in its Go core only; the format is its store's, as documented in wandb/sdk/internal of older
    releases.)"""
    data, block, pos, out, buf = path.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0:
            break
        buf += data[pos:pos + length]
        pos += length
        if kind in (1, 4):
            out.append(buf)
            buf = b""
    return out


def test_wandb_offline_records_the_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no login: offline
    out = tmp_path / "w"
    cfg = apply_overrides(get_preset("default"), [*TINY, f"out={out}", "logger=tensorboard,wandb"])
    loop.train(cfg, progress=False)
    assert (out / "tb").is_dir()
    run_id = (out / "wandb_run_id").read_text().strip()
    runs = list((out / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1, list((out / "wandb").iterdir())
    logged = list(runs[0].glob("*.wandb"))
    assert logged and logged[0].stat().st_size > 0
    # read the offline run back: every metric at its step, the config, the model
    from wandb.proto import wandb_internal_pb2

    def parsed():
        for data in _wandb_records(logged[0]):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(data)
            yield rec.WhichOneof("record_type"), rec

    deadline = time.monotonic() + 60  # W&B's core writes the file in its own process: wait for the exit record
    while "exit" not in {kind for kind, _ in parsed()} and time.monotonic() < deadline:
        time.sleep(0.2)
    got, config, artifacts = [], {}, []
    for kind, rec in parsed():
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            step = items.pop("_step", rec.history.step.num)
            got.extend(((k, step), v) for k, v in items.items() if not k.startswith("_"))
        elif kind in ("run", "config"):
            updates = rec.run.config.update if kind == "run" else rec.config.update
            config.update({i.key: json.loads(i.value_json) for i in updates})
        elif kind == "artifact":
            artifacts.append(rec.artifact.type)
    want = _metrics(out)
    _same_points(got, want)
    assert config["model"]["hidden_size"] == 16 and "model" in artifacts
    assert wandb.__version__


def test_an_unknown_tracker_is_a_one_line_error():
    assert parse_loggers("tensorboard, mlflow,none") == ("tensorboard", "mlflow")
    with pytest.raises(UserError, match="unknown tracker 'tensorbord' \\(did you mean tensorboard\\?\\)"):
        validate(apply_overrides(get_preset("default"), [*TINY, "logger=tensorbord"]))
