"""Experiment trackers beside ``metrics.jsonl``: TensorBoard, MLflow, Weights & Biases (``logger=tensorboard,mlflow``).

Each tracker records every metric record the run writes, the run's config, and at the end the final model. MLflow
and W&B are optional extras (``vitkit[mlflow]``, ``vitkit[wandb]``). MLflow writes to ``OUT/mlruns`` (a local file
store) unless ``MLFLOW_TRACKING_URI`` names another; W&B runs offline (``OUT/wandb``, ``wandb sync`` uploads it
later) unless the user is logged in or sets ``WANDB_MODE``. A resumed run continues the same MLflow / W&B run (its
id is kept in the run folder). TensorBoard's own resume rule is in :mod:`vitkit.train.metrics`.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

from ..errors import UserError, did_you_mean

LOGGERS = ("tensorboard", "mlflow", "wandb")
_EXTRA = {"mlflow": "mlflow", "wandb": "wandb"}  # tracker -> the extra that installs it


def parse_loggers(text: str) -> tuple[str, ...]:
    """``"tensorboard,mlflow"`` -> the tracker names, checked (``""`` or ``none``: metrics.jsonl only)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip() and n.strip() != "none")
    for n in names:
        if n not in LOGGERS:
            raise UserError(f"logger={text!r}: unknown tracker {n!r}{did_you_mean(n, LOGGERS)}; choose from "
                            f"{', '.join(LOGGERS)} (comma-separated), or none")
    return tuple(dict.fromkeys(names))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class _MLflow:
    def __init__(self, out: Path, config: dict[str, Any], run_name: str):
        import mlflow

        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # the local file store needs no server or database; MLflow 3 keeps it behind this opt-in (it recommends
            # SQLite, which needs the full mlflow install: set MLFLOW_TRACKING_URI=sqlite:///... for that)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (out / "mlruns").resolve().as_uri()
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        id_file = out / "mlflow_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        if run_id is None:
            exp_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "vitkit")
            exp = self.client.get_experiment_by_name(exp_name)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(exp_name)
            run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
            id_file.write_text(run_id + "\n")
            # MLflow params are immutable strings of at most 6000 characters: the config's leaves, once
            params = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in _flat(config).items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(run_id, params=params[i:i + 100])
        self.run_id = run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        batch = [self.mlflow.entities.Metric(k.replace("@", "_at_"), float(v), ts, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def finish(self, model: Path | None, summary: dict[str, Any]) -> None:
        if model is not None and model.is_file():
            self.client.log_artifact(self.run_id, str(model))
        self.client.set_tag(self.run_id, "vitkit.finished", str(bool(summary.get("finished"))))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class _Wandb:
    def __init__(self, out: Path, config: dict[str, Any], run_name: str):
        import wandb

        self.wandb = wandb
        id_file = out / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)  # W&B: [a-z0-9]
        mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_logged_in() else "offline")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "vitkit"), name=run_name, id=run_id,
                              resume="allow", dir=str(out), config=config, mode=mode,
                              settings=wandb.Settings(silent=True, console="off"))
        id_file.write_text(run_id + "\n")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, model: Path | None, summary: dict[str, Any]) -> None:
        if model is not None and model.is_file():
            art = self.wandb.Artifact(f"model-{self.run.id}", type="model")
            art.add_file(str(model))
            self.run.log_artifact(art)
        self.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))})

    def close(self) -> None:
        self.run.finish()


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="replace")


class Trackers:
    """The run's MLflow / W&B trackers (TensorBoard is :class:`vitkit.train.metrics.RunLog`'s own writer)."""

    def __init__(self, names: tuple[str, ...], out: Path, config: dict[str, Any]):
        self.items: list[Any] = []
        run_name = out.resolve().name
        for name in names:
            if name == "tensorboard":
                continue
            try:
                cls = {"mlflow": _MLflow, "wandb": _Wandb}[name]
                self.items.append(cls(out, config, run_name))
            except ImportError:
                self.close()
                raise UserError(f"logger={name} needs the {name} package: pip install 'vitkit[{_EXTRA[name]}]'") \
                    from None

    def log(self, rec: dict[str, Any], prefix: str | None) -> None:
        metrics = {(f"{prefix}/{k}" if prefix else k): v for k, v in rec.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        for t in self.items:
            t.log(metrics, rec["step"])

    def finish(self, model: Path | None, summary: dict[str, Any]) -> None:
        for t in self.items:
            t.finish(model, summary)

    def close(self) -> None:
        for t in self.items:
            t.close()
        self.items = []
