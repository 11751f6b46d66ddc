"""Stand-ins for the collaborators that the sweep machinery takes as arguments: a trial runner
that trains nothing, one that records what it was asked and answers as told, and a parent run
that records what it was told. Benchmark B10 (``benchmarks/orchestration.py``) uses
``NoOpTrials`` too, to time the machinery around trials."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_ad import tracking
from lightning_ad.config import TrialConfig
from lightning_ad.train import TrialResult

METRICS = 30
"""Test metrics a no-op trial logs besides ``test/auc``, about as many as a real trial."""


def rss_bytes() -> int:
    """This process's resident memory now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class NoOpTrials:
    """A trial runner (``train.run_trial``'s signature) that trains nothing: each call leaves
    one MLflow run as ``run_trial`` leaves it (the params, a test AUC and ``METRICS`` more
    metrics, the per-image scores artifact, the complete tag, FINISHED) at once, and notes when
    it started and this process's memory then."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.rss: list[int] = []
        self.rng = np.random.default_rng(0)

    def __call__(
        self, config: TrialConfig, uri: str, experiment: str, tags=None, **_
    ) -> TrialResult:
        self.starts.append(time.perf_counter())
        self.rss.append(rss_bytes())
        client = tracking.client(uri)
        experiment_id = tracking.ensure_experiment(experiment, uri)
        run = client.create_run(experiment_id, tags={"dataset": "synthetic", **(tags or {})})
        metrics = {"test/auc": float(self.rng.uniform(0.5, 1.0))}
        # As a real trial's per-defect metrics: named under its own scorer, so the report sees
        # one scorer, as it would.
        scorer = config.scoring.scorer
        metrics |= {
            f"test/auc_{scorer}/defect{i}": float(self.rng.uniform(0.5, 1.0))
            for i in range(METRICS)
        }
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in config.params().items()],
        )
        self._log_scores(client, run.info.run_id)
        client.set_tag(run.info.run_id, tracking.COMPLETE_TAG, "true")
        client.set_terminated(run.info.run_id, "FINISHED")
        return TrialResult(run.info.run_id, metrics, 0.0, 0.5)

    def save(self, path: Path) -> None:
        """The starts and memory readings of this process's calls, as JSON."""
        path.write_text(json.dumps({"starts": self.starts, "rss": self.rss}))

    def _log_scores(self, client, run_id: str) -> None:
        labels = np.r_[np.zeros(10, int), np.ones(10, int)]
        rows = ["image,defect,label,knn"] + [
            f"test/{'good' if y == 0 else 'x'}/{i:03d}.png,{'good' if y == 0 else 'x'},{y},"
            f"{self.rng.random() + y:.4f}"
            for i, y in enumerate(labels)
        ]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "test_scores.csv"
            path.write_text("\n".join(rows) + "\n")
            client.log_artifact(run_id, str(path), artifact_path="scores")


@dataclass
class TrialCall:
    """What a trial runner was asked: the config and the keyword arguments."""

    config: TrialConfig
    tracking_uri: str | None
    experiment: str
    tags: dict[str, str]
    callbacks: list
    kwargs: dict[str, Any]


@dataclass
class RecordingTrials:
    """A trial runner that trains nothing and writes nothing: it records each call and answers
    with ``answer(config)``, a ``TrialResult`` or an exception to raise."""

    answer: Callable[[TrialConfig], TrialResult | BaseException]
    calls: list[TrialCall] = field(default_factory=list)

    def __call__(
        self,
        config: TrialConfig,
        tracking_uri: str | None = None,
        experiment: str = "",
        tags: dict[str, str] | None = None,
        callbacks: list | None = None,
        **kwargs: Any,
    ) -> TrialResult:
        self.calls.append(
            TrialCall(config, tracking_uri, experiment, dict(tags or {}), callbacks or [], kwargs)
        )
        answer = self.answer(config)
        if isinstance(answer, BaseException):
            raise answer
        return answer


@dataclass
class RecordingParent:
    """A sweep's parent run (``SweepParent``) that records the cells it is told of; with
    ``fail``, telling it raises that, as a tracking server that went away would."""

    target: Any
    run_id: str = "parent-run"
    done: list[tuple[dict, list[float]]] = field(default_factory=list)
    fail: Exception | None = None

    def trial_done(self, cell: dict, values: list[float]) -> None:
        if self.fail is not None:
            raise self.fail
        self.done.append((cell, list(values)))
