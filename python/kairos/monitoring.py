"""Pipelines, monitors and recommenders: the services that run beside the stores and the
deployments, each applied from a definition (a dict, or the CLI's TOML or JSON file) and then
asked for what it knows."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kairos import _wire

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kairos._internal import Engine


class Pipeline:
    """A streaming pipeline: windowed features from events into a feature group, exactly once.
    Embedded, it runs in this process while the client is open; on a server, on the server."""

    def __init__(self, engine: Engine, status: dict[str, Any]) -> None:
        self._engine = engine
        self._status = status

    @property
    def name(self) -> str:
        return str(self._status["name"])

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r})"

    def status(self) -> dict[str, Any]:
        """Its state, watermark, lag and counts."""
        return _wire.report(self._engine.pipeline_status(self.name))

    def start(self) -> dict[str, Any]:
        """Starts it, and keeps it running across restarts."""
        return _wire.report(self._engine.start_pipeline(self.name))

    def stop(self) -> dict[str, Any]:
        """Stops it, and keeps it stopped across restarts."""
        return _wire.report(self._engine.stop_pipeline(self.name))


class Monitor:
    """A deployment's monitor: feature and prediction drift, quality as labels arrive, alerts
    and retraining."""

    def __init__(self, engine: Engine, monitor: dict[str, Any]) -> None:
        self._engine = engine
        self.definition = monitor

    @property
    def name(self) -> str:
        return str(self.definition["name"])

    @property
    def deployment(self) -> str:
        return str(self.definition["deployment"])

    def __repr__(self) -> str:
        return f"Monitor({self.name!r}, deployment={self.deployment!r})"

    def run(self) -> dict[str, Any]:
        """Runs its checks now over the inference log, and answers what they found."""
        return _wire.report(self._engine.run_monitor(self.name))

    def retrain(self) -> dict[str, Any]:
        """Trains a challenger now; it is promoted only if it beats the model serving."""
        return _wire.report(self._engine.retrain(self.name))

    def history(self) -> dict[str, Any]:
        """Its runs, alerts and retrainings."""
        return _wire.report(self._engine.monitor_history(self.name))

    def report(self) -> str:
        """The deployment's monitoring report, as HTML (shows inline in a notebook with
        ``IPython.display.HTML``)."""
        return self._engine.monitoring_report(self.deployment, self.name)

    def delete(self) -> None:
        self._engine.delete_monitor(self.name)


class Recommender:
    """A deployed recommender: retrieval, filter rules, ranking and diversity for a user."""

    def __init__(self, engine: Engine, status: dict[str, Any]) -> None:
        self._engine = engine
        self._status = status

    @property
    def name(self) -> str:
        return str(self._status["name"])

    def __repr__(self) -> str:
        return f"Recommender({self.name!r})"

    def status(self) -> dict[str, Any]:
        """Its definition, models and where it has read the interactions log to."""
        return _wire.report(self._engine.recommender_status(self.name))

    def recommend(
        self, user_id: int, k: int | None = None, *, context: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The top ``k`` items for a user, best first: each ``item_id``, ``score`` and
        ``retrieval_score``. ``context`` holds request-time user values the rules read."""
        request = {"user_id": user_id, "k": k, "context": context or {}}
        answer = json.loads(self._engine.recommend(self.name, json.dumps(request, default=str)))
        items: list[dict[str, Any]] = answer["items"]
        return items

    def interact(self, events: dict[str, Any] | Sequence[dict[str, Any]]) -> int:
        """Posts interactions back; they count in the next request's rules and history.
        Answers how many were written."""
        batch = [events] if isinstance(events, dict) else list(events)
        ack = json.loads(self._engine.interact(self.name, json.dumps(batch, default=str)))
        return int(ack["rows"])
