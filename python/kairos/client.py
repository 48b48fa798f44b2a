"""The platform from Python: ``kairos.connect`` opens it in this process or reaches a server,
and both answer alike."""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
from typing import TYPE_CHECKING, Any, Literal

from kairos import feature_view
from kairos._frames import to_arrow
from kairos._internal import Engine
from kairos._wire import definition_text
from kairos.errors import NotFound
from kairos.feature_group import Feature, FeatureGroup, definition
from kairos.feature_view import FeatureView, Join, OnDemand
from kairos.models import Deployment, Model, onnx_definition, to_onnx
from kairos.models import predict as predict_on
from kairos.monitoring import Monitor, Pipeline, Recommender

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from kairos._frames import ReturnType


class Client:
    """The platform: embedded (a data dir opened in this process) or remote (a server's REST
    API). Every method behaves the same on both. Use it as a context manager, or call
    ``close`` when done: an embedded client then waits until both stores hold every row it
    inserted."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def backend(self) -> str:
        """``"embedded"`` or ``"remote"``."""
        return self._engine.backend

    @property
    def target(self) -> str:
        """The data dir or server URL this client was opened on."""
        return self._engine.target

    def __repr__(self) -> str:
        return f"kairos.Client({self.target!r}, backend={self.backend!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._engine.close()

    # Feature groups.

    def create_feature_group(
        self,
        name: str,
        *,
        primary_key: str | Sequence[str],
        event_time: str,
        features: dict[str, str] | Sequence[Feature] | None = None,
        df: Any = None,
        online_enabled: bool = True,
        description: str = "",
        ttl: dt.timedelta | int | None = None,
        expectations: Sequence[dict[str, Any]] | None = None,
    ) -> FeatureGroup:
        """Creates a feature group, or the next version of one by that name. Its features are
        ``features`` (name to type: ``int64``, ``float64``, ``string``, ``timestamp``,
        ``embedding(16)``…) or inferred from ``df``'s columns."""
        spec = definition(
            name,
            primary_key=primary_key,
            event_time=event_time,
            features=features,
            df=df,
            online_enabled=online_enabled,
            description=description,
            ttl=ttl,
            expectations=expectations,
        )
        return FeatureGroup(self._engine, json.loads(self._engine.create_group(json.dumps(spec))))

    def get_feature_group(self, name: str, version: int | None = None) -> FeatureGroup:
        """A feature group's version (the latest when not given); ``NotFound`` if none."""
        status = json.loads(self._engine.describe_group(name, version))
        return FeatureGroup(self._engine, _group_of(status))

    def get_or_create_feature_group(
        self,
        name: str,
        *,
        version: int | None = None,
        primary_key: str | Sequence[str],
        event_time: str,
        features: dict[str, str] | Sequence[Feature] | None = None,
        df: Any = None,
        online_enabled: bool = True,
        description: str = "",
        ttl: dt.timedelta | int | None = None,
        expectations: Sequence[dict[str, Any]] | None = None,
    ) -> FeatureGroup:
        """The feature group by that name (that version, or the latest), created from the
        arguments when it does not exist."""
        try:
            return self.get_feature_group(name, version)
        except NotFound:
            return self.create_feature_group(
                name,
                primary_key=primary_key,
                event_time=event_time,
                features=features,
                df=df,
                online_enabled=online_enabled,
                description=description,
                ttl=ttl,
                expectations=expectations,
            )

    def feature_groups(self) -> list[FeatureGroup]:
        """Every version of every feature group."""
        return [FeatureGroup(self._engine, g) for g in json.loads(self._engine.list_groups())]

    # Feature views.

    def create_feature_view(
        self,
        name: str,
        *,
        root: str | FeatureGroup,
        features: Sequence[str] | None = None,
        labels: Sequence[str] = (),
        request: Sequence[str] = (),
        joins: Sequence[Join] = (),
        on_demand: Sequence[OnDemand] = (),
        transforms: Sequence[dict[str, Any]] = (),
        description: str = "",
    ) -> FeatureView:
        """Creates a feature view (or the next version of one): the ``root`` group's rows,
        its ``features`` (all but key, time and labels when left out) and ``labels``, the
        ``joins``' features point-in-time, and ``on_demand`` features. ``request`` names root
        columns an online request passes (the event being scored) instead of the store.
        ``transforms`` are model-dependent transforms (``{"feature": "amount", "kind":
        "standard_scaler"}``), fitted on each training dataset."""
        spec = feature_view.definition(
            name,
            root=root,
            features=features,
            labels=labels,
            request=request,
            joins=joins,
            on_demand=on_demand,
            transforms=transforms,
            description=description,
        )
        view = json.loads(self._engine.apply_view(json.dumps(spec)))
        return self.get_feature_view(view["name"], view["version"])

    def create_feature_view_from_file(self, path: str | os.PathLike[str]) -> FeatureView:
        """Creates a feature view from a definition file, TOML or JSON, as ``kairos fv apply``
        reads it (the examples' files)."""
        view = json.loads(self._engine.apply_view(pathlib.Path(path).read_text()))
        return self.get_feature_view(view["name"], view["version"])

    def get_feature_view(self, name: str, version: int | None = None) -> FeatureView:
        """A feature view's version (the latest when not given); ``NotFound`` if none."""
        return FeatureView(self._engine, json.loads(self._engine.describe_view(name, version)))

    def feature_views(self) -> list[FeatureView]:
        """Every version of every feature view."""
        return [
            self.get_feature_view(v["name"], v["version"])
            for v in json.loads(self._engine.list_views())
        ]

    def get_historical_features(
        self,
        entity_df: Any,
        features: str | FeatureView,
        *,
        strict: bool = False,
        as_known_at: bool = False,
        memory_budget: int | None = None,
        return_type: ReturnType = "pandas",
    ) -> Any:
        """Feast's name for point-in-time training data: the ``features`` view's features
        for each row of ``entity_df`` (root keys and event times), joined as of that time.
        Answers one frame, the spine's columns with the features and labels beside them."""
        view = features if isinstance(features, FeatureView) else self.get_feature_view(features)
        version = view.create_training_data(
            spine=entity_df,
            strict=strict,
            as_known_at=as_known_at,
            memory_budget=memory_budget,
        )
        return view.read_training_dataset(version, return_type=return_type)

    # Models and deployments.

    def register_model(
        self,
        name: str,
        model: Any,
        *,
        feature_view: FeatureView,
        training_dataset_version: int | None = None,
        task: Literal["binary", "regression"] = "binary",
        description: str = "",
    ) -> Model:
        """Registers a model trained on ``feature_view``'s training data as the next version
        of ``name``: a scikit-learn estimator (exported to ONNX through skl2onnx) or an ONNX
        graph's bytes, reading the view's features in order as one FP32 tensor ``X``. The
        training dataset (the latest unless given) supplies the frozen transforms serving
        applies. The graph is loaded before anything is registered."""
        if training_dataset_version is None:
            training_dataset_version = feature_view.latest_training_dataset_version()
        n_features = len(feature_view.features)
        artifact = model if isinstance(model, bytes) else to_onnx(model, n_features)
        spec = onnx_definition(
            name,
            n_features,
            task=task,
            view=feature_view,
            training_dataset_version=training_dataset_version,
            description=description,
        )
        registered = self._engine.register_model(json.dumps(spec), f"{name}.onnx", artifact)
        return Model.of(json.loads(registered))

    def train(
        self,
        feature_view: FeatureView | str,
        *,
        label: str,
        algorithm: Literal["gbdt", "logistic"] = "gbdt",
        task: Literal["binary", "regression"] = "binary",
        name: str | None = None,
        training_dataset_version: int | None = None,
        features: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        trees: int = 100,
        learning_rate: float = 0.1,
        max_depth: int = 5,
        c: float = 1.0,
        threshold: float = 0.5,
        seed: int = 0,
    ) -> Model:
        """Trains a model in the engine on a view's training dataset (its transforms
        applied), scores it on the validation and test splits and registers it with those
        metrics and its lineage: gradient-boosted ``trees`` of ``max_depth`` at
        ``learning_rate``, or a logistic regression with scikit-learn's ``c``. ``features``
        (all but keys, time and labels when left out) and ``exclude`` pick its inputs;
        ``threshold`` is where the metrics count a row positive."""
        view = feature_view if isinstance(feature_view, str) else feature_view.name
        request = {
            "feature_view": view,
            "training_dataset": training_dataset_version,
            "label": label,
            "algorithm": algorithm,
            "task": task,
            "name": name,
            "features": None if features is None else list(features),
            "exclude": list(exclude),
            "trees": trees,
            "learning_rate": learning_rate,
            "max_depth": max_depth,
            "c": c,
            "threshold": threshold,
            "seed": seed,
        }
        return Model.of(json.loads(self._engine.train(json.dumps(request))))

    def get_model(self, name: str, version: int | None = None) -> Model:
        """A model version (the latest when not given); ``NotFound`` if none."""
        return Model.of(json.loads(self._engine.describe_model(name, version)))

    def models(self) -> list[Model]:
        """Every version of every registered model."""
        return [Model.of(m) for m in json.loads(self._engine.list_models())]

    def delete_model(self, name: str, version: int) -> None:
        self._engine.delete_model(name, version)

    def deploy(
        self,
        name: str,
        model: Model | str,
        *,
        model_version: int | None = None,
        threshold: float = 0.5,
        slo_latency_ms: float | None = None,
        inference_log: bool = True,
        description: str = "",
    ) -> Deployment:
        """Deploys a model version (the latest unless given, or the ``Model``'s own) behind
        ``name``, or swaps a running deployment to it; requests in flight finish on the
        revision they started on. A classifier's label is 1 from ``threshold`` on."""
        spec: dict[str, Any] = {
            "name": name,
            "model": model if isinstance(model, str) else model.name,
            "threshold": threshold,
            "inference_log": inference_log,
            "description": description,
        }
        version = model_version or (None if isinstance(model, str) else model.version)
        if version is not None:
            spec["model_version"] = version
        if slo_latency_ms is not None:
            spec["slo"] = {"latency_ms": slo_latency_ms}
        deployment = json.loads(self._engine.apply_deployment(json.dumps(spec)))
        return Deployment(self._engine, deployment)

    def get_deployment(self, name: str) -> Deployment:
        """A live deployment; ``NotFound`` if none."""
        return Deployment(self._engine, json.loads(self._engine.deployment_status(name)))

    def deployments(self) -> list[Deployment]:
        return [Deployment(self._engine, d) for d in json.loads(self._engine.list_deployments())]

    def predict(
        self,
        deployment: str,
        entries: Sequence[Any],
        *,
        request: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        return_features: bool = False,
    ) -> list[dict[str, Any]]:
        """``get_deployment(deployment).predict(...)`` in one call."""
        return predict_on(self._engine, deployment, entries, request, return_features)

    # Pipelines, monitors and recommenders.

    def deploy_pipeline(self, definition: dict[str, Any] | str | os.PathLike[str]) -> Pipeline:
        """Deploys a streaming pipeline (or its next version) and starts it, from its
        definition: a dict, or a TOML or JSON file as ``kairos pipeline apply`` reads it."""
        deployed = json.loads(self._engine.deploy_pipeline(definition_text(definition)))
        return Pipeline(self._engine, deployed["status"])

    def get_pipeline(self, name: str) -> Pipeline:
        return Pipeline(self._engine, json.loads(self._engine.pipeline_status(name)))

    def pipelines(self) -> list[Pipeline]:
        return [Pipeline(self._engine, p) for p in json.loads(self._engine.list_pipelines())]

    def push(self, stream: str, events: Sequence[dict[str, Any]] | Any) -> int:
        """Pushes events into a pipeline's HTTP stream: a list of dicts, or a frame (one
        event per row). Answers their position in the stream's log."""
        if not isinstance(events, list):
            events = to_arrow(events, what="events").to_pylist()
        lines = "".join(json.dumps(e, default=_json_time) + "\n" for e in events)
        return self._engine.push_events(stream, lines.encode())

    def apply_monitor(self, definition: dict[str, Any] | str | os.PathLike[str]) -> Monitor:
        """Applies a monitor of a deployment from its definition: a dict, or a TOML or JSON
        file as ``kairos monitor apply`` reads it."""
        applied = json.loads(self._engine.apply_monitor(definition_text(definition)))
        return Monitor(self._engine, applied)

    def get_monitor(self, name: str) -> Monitor:
        return Monitor(self._engine, json.loads(self._engine.get_monitor(name)))

    def monitors(self) -> list[Monitor]:
        return [Monitor(self._engine, m) for m in json.loads(self._engine.list_monitors())]

    def apply_recommender(self, definition: dict[str, Any] | str | os.PathLike[str]) -> Recommender:
        """Applies a recommender whose models exist, from its definition: a dict, or a TOML
        or JSON file as ``kairos recsys apply`` reads it."""
        applied = json.loads(self._engine.apply_recommender(definition_text(definition)))
        return Recommender(self._engine, applied)

    def get_recommender(self, name: str) -> Recommender:
        return Recommender(self._engine, json.loads(self._engine.recommender_status(name)))

    def recommenders(self) -> list[Recommender]:
        return [Recommender(self._engine, r) for r in json.loads(self._engine.list_recommenders())]


def _json_time(value: Any) -> str:
    """A time in an event as RFC 3339 text; anything else JSON cannot hold, as its text."""
    if isinstance(value, dt.datetime):
        instant: dt.datetime = value
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=dt.timezone.utc)
        return instant.isoformat()
    return str(value)


def _group_of(status: dict[str, Any]) -> dict[str, Any]:
    """The definition part of a group's status (which has it flattened beside the offsets)."""
    return {k: v for k, v in status.items() if k in _DEFINITION}


_DEFINITION = {
    "name",
    "version",
    "created_at",
    "description",
    "columns",
    "primary_key",
    "event_time",
    "online",
    "ttl_seconds",
    "vector_index",
    "expectations",
}


def connect(
    target: str | os.PathLike[str],
    *,
    api_key: str | None = None,
    ca_cert: str | os.PathLike[str] | bytes | None = None,
) -> Client:
    """Opens Kairos: ``connect("./kairos-data")`` runs the engine in this process on that
    data dir; ``connect("http://host:7070")`` talks to a server (``api_key`` for a server in
    protected mode, ``ca_cert`` a PEM file or bytes for one with a certificate of its own)."""
    pem: bytes | None
    if ca_cert is None or isinstance(ca_cert, bytes):
        pem = ca_cert
    else:
        with open(ca_cert, "rb") as f:
            pem = f.read()
    return Client(Engine(os.fspath(target), api_key, pem))
