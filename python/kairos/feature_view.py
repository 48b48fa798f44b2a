"""Feature views: features from several groups joined point-in-time, read as training data
(``training_data``, ``train_test_split``) or online as feature vectors for one entity
(``get_feature_vector``) — one definition, so training and serving compute the same values."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from kairos import _frames
from kairos._frames import ReturnType
from kairos.udf import Udf

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow as pa

    from kairos._internal import Engine
    from kairos.feature_group import FeatureGroup, Time

VectorReturnType = Literal["list", "dict", "pandas", "polars", "arrow"]


@dataclass(frozen=True)
class Join:
    """A feature group joined point-in-time to the view's root: for each root row, the
    group's latest row at or before its event time (strictly before, for ``strict``)."""

    group: str | FeatureGroup
    on: Sequence[str] | dict[str, str] | None = None
    """Root columns matched to the group's key: a list when the names agree, a dict of root
    column to group column otherwise; the group's own key when left out."""
    features: Sequence[str] | None = None
    prefix: str | None = None
    lookback: dt.timedelta | int | None = None
    """A joined row older than this (seconds, or a timedelta) is not used."""
    labels: Sequence[str] = ()
    """Makes this a label join: the key's latest label as known when the data is built."""
    version: int | None = None

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"group": _group_name(self.group)}
        version = self.version or getattr(self.group, "version", None)
        if version is not None:
            spec["version"] = version
        if self.on is not None:
            spec["on"] = dict(self.on) if isinstance(self.on, dict) else list(self.on)
        if self.features is not None:
            spec["features"] = list(self.features)
        if self.prefix is not None:
            spec["prefix"] = self.prefix
        if self.lookback is not None:
            seconds = (
                self.lookback.total_seconds()
                if isinstance(self.lookback, dt.timedelta)
                else self.lookback
            )
            spec["lookback_seconds"] = int(seconds)
        if self.labels:
            spec["labels"] = list(self.labels)
        return spec


@dataclass(frozen=True)
class OnDemand:
    """A feature computed when it is read, in training data and online alike: a built-in
    ``function`` (``haversine``, ``seconds_since``, ``hour_of_day``, ``day_of_week``,
    ``log1p``, ``bucketize``), a Python function (``@kairos.udf``), or an arithmetic
    ``expression`` over the inputs."""

    name: str
    function: str | Udf | None = None
    """A built-in function's name, or a function made one with ``@kairos.udf``."""
    inputs: Sequence[str] = ()
    expression: str | None = None
    boundaries: Sequence[float] = ()

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": self.name, "inputs": list(self.inputs)}
        if isinstance(self.function, Udf):
            spec["function"] = self.function.name
            spec["python"] = self.function.spec()
        elif self.function is not None:
            spec["function"] = self.function
        if self.expression is not None:
            spec["expression"] = self.expression
        if self.boundaries:
            spec["boundaries"] = list(self.boundaries)
        return spec


def _group_name(group: str | FeatureGroup) -> str:
    return group if isinstance(group, str) else group.name


def definition(
    name: str,
    *,
    root: str | FeatureGroup,
    features: Sequence[str] | None,
    labels: Sequence[str],
    request: Sequence[str],
    joins: Sequence[Join],
    on_demand: Sequence[OnDemand],
    transforms: Sequence[dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    """A feature view's definition as the engine reads it."""
    root_spec: dict[str, Any] = {"group": _group_name(root)}
    if not isinstance(root, str):
        root_spec["version"] = root.version
    if features is not None:
        root_spec["features"] = list(features)
    if labels:
        root_spec["labels"] = list(labels)
    if request:
        root_spec["request"] = list(request)
    return {
        "name": name,
        "description": description,
        "root": root_spec,
        "join": [j.spec() for j in joins],
        "on_demand": [o.spec() for o in on_demand],
        "transform": list(transforms),
    }


class FeatureView:
    """One version of a feature view. Got from ``Client.create_feature_view`` or
    ``get_feature_view``."""

    def __init__(self, engine: Engine, status: dict[str, Any]) -> None:
        self._engine = engine
        self._status = status

    @property
    def name(self) -> str:
        return str(self._status["name"])

    @property
    def version(self) -> int:
        return int(self._status["version"])

    @property
    def features(self) -> list[str]:
        """The online vector's columns, in order: what a model reads."""
        return [name for name, _ in self._status["columns"]]

    @property
    def labels(self) -> list[str]:
        return list(self._status["labels"])

    @property
    def definition(self) -> dict[str, Any]:
        """The view's definition, every group version pinned."""
        keys = ("columns", "labels", "training_datasets")
        return {k: v for k, v in self._status.items() if k not in keys}

    def __repr__(self) -> str:
        return f"FeatureView({self.name!r}, version={self.version})"

    # Training data.

    def create_training_data(
        self,
        *,
        start: Time | None = None,
        end: Time | None = None,
        split: dict[str, Any] | None = None,
        spine: Any = None,
        strict: bool = False,
        as_known_at: bool = False,
        description: str = "",
        memory_budget: int | None = None,
    ) -> int:
        """Materialises a point-in-time correct training dataset and answers its version.
        ``split`` is the REST API's: ``{"kind": "random", "seed": 0, "train": 0.8,
        "validation": 0, "test": 0.2}`` or ``{"kind": "time", "validation_start": …,
        "test_start": …}`` (the split methods below write it for you).
        ``spine`` (any frame of root keys and event times) replaces the root group's rows;
        ``strict`` joins only rows strictly older than each root row; ``as_known_at`` only rows
        ingested by its time, so no late or backfilled value leaks in. ``memory_budget`` is the
        bytes the join buffers before it spills to disk (embedded only; 1 GiB by default)."""
        options = {
            "start": _frames.micros(start, "start"),
            "end": _frames.micros(end, "end"),
            "split": split or {"kind": "none"},
            "strict": strict,
            "as_known_at": as_known_at,
            "description": description,
            "memory_budget": memory_budget,
        }
        table = None if spine is None else _frames.to_arrow(spine, what="spine")
        dataset = json.loads(
            self._engine.create_training_dataset(
                self.name, self.version, json.dumps(options), table
            )
        )
        return int(dataset["version"])

    def training_data(
        self,
        *,
        start: Time | None = None,
        end: Time | None = None,
        spine: Any = None,
        strict: bool = False,
        as_known_at: bool = False,
        description: str = "",
        return_type: ReturnType = "pandas",
    ) -> tuple[Any, Any]:
        """Builds a training dataset of every root row (or the spine's) and answers it as
        ``(X, y)``: the features a model reads, in the online vector's order, and the labels
        (one column: a Series in pandas)."""
        version = self.create_training_data(
            start=start,
            end=end,
            spine=spine,
            strict=strict,
            as_known_at=as_known_at,
            description=description,
        )
        return self.get_training_data(version, return_type=return_type)[0]

    def train_test_split(
        self,
        test_size: float = 0.2,
        *,
        seed: int = 0,
        test_start: Time | None = None,
        start: Time | None = None,
        end: Time | None = None,
        spine: Any = None,
        strict: bool = False,
        as_known_at: bool = False,
        description: str = "",
        return_type: ReturnType = "pandas",
    ) -> tuple[Any, Any, Any, Any]:
        """A training dataset split in two: ``X_train, X_test, y_train, y_test``. Rows go to
        the test split by a seeded hash of their key and time (``test_size`` of them), or, with
        ``test_start``, by event time (from ``test_start`` on)."""
        split = self._split(test_size, 0.0, seed, test_start, test_start)
        version = self.create_training_data(
            start=start,
            end=end,
            split=split,
            spine=spine,
            strict=strict,
            as_known_at=as_known_at,
            description=description,
        )
        train, test = self.get_training_data(version, ("train", "test"), return_type=return_type)
        return train[0], test[0], train[1], test[1]

    def train_validation_test_split(
        self,
        validation_size: float = 0.1,
        test_size: float = 0.2,
        *,
        seed: int = 0,
        validation_start: Time | None = None,
        test_start: Time | None = None,
        start: Time | None = None,
        end: Time | None = None,
        spine: Any = None,
        strict: bool = False,
        as_known_at: bool = False,
        description: str = "",
        return_type: ReturnType = "pandas",
    ) -> tuple[Any, Any, Any, Any, Any, Any]:
        """``X_train, X_val, X_test, y_train, y_val, y_test``, split by hash or, with
        ``validation_start`` and ``test_start``, by event time."""
        split = self._split(test_size, validation_size, seed, validation_start, test_start)
        version = self.create_training_data(
            start=start,
            end=end,
            split=split,
            spine=spine,
            strict=strict,
            as_known_at=as_known_at,
            description=description,
        )
        parts = self.get_training_data(
            version, ("train", "validation", "test"), return_type=return_type
        )
        (x_train, y_train), (x_val, y_val), (x_test, y_test) = parts
        return x_train, x_val, x_test, y_train, y_val, y_test

    @staticmethod
    def _split(
        test: float,
        validation: float,
        seed: int,
        validation_start: Time | None,
        test_start: Time | None,
    ) -> dict[str, Any]:
        if test_start is not None:
            start = validation_start or test_start
            return {
                "kind": "time",
                "validation_start": _frames.rfc3339(start, "validation_start"),
                "test_start": _frames.rfc3339(test_start, "test_start"),
            }
        return {
            "kind": "random",
            "seed": seed,
            "train": 1.0 - test - validation,
            "validation": validation,
            "test": test,
        }

    def latest_training_dataset_version(self) -> int:
        """The version of this view's newest training dataset; ``NotFound`` if it has none."""
        dataset = json.loads(self._engine.training_dataset(self.name, self.version, None))
        return int(dataset["version"])

    def get_training_data(
        self,
        version: int | None = None,
        splits: Sequence[str] = ("train",),
        *,
        return_type: ReturnType = "pandas",
    ) -> list[tuple[Any, Any]]:
        """An existing training dataset's splits (the latest dataset when ``version`` is not
        given), each as ``(X, y)``; with the view's model-dependent transforms, as fitted on
        that dataset's training split."""
        dataset = json.loads(self._engine.training_dataset(self.name, self.version, version))
        answers = []
        for split in splits:
            # Always as a model reads it: with the view's transforms (none is the identity),
            # the root's key and event time first, then the features, then the labels.
            table = self._engine.read_training_dataset(
                self.name, self.version, int(dataset["version"]), split, True
            )
            answers.append(self._features_and_labels(table, return_type))
        return answers

    def read_training_dataset(
        self,
        version: int | None = None,
        split: str = "train",
        *,
        return_type: ReturnType = "pandas",
    ) -> Any:
        """One split of a training dataset as one frame: the root's key and event time, the
        features (transformed as a model reads them) and the labels."""
        dataset = json.loads(self._engine.training_dataset(self.name, self.version, version))
        table = self._engine.read_training_dataset(
            self.name, self.version, int(dataset["version"]), split, True
        )
        return _frames.from_arrow(table, return_type)

    def _features_and_labels(self, table: Any, return_type: ReturnType) -> tuple[Any, Any]:
        import pyarrow as pa

        arrow: pa.Table = pa.table(table)
        head = self._root_key_and_time()
        labels = [c for c in self.labels if c in arrow.column_names]
        features = [c for c in arrow.column_names if c not in labels and c not in head]
        x = _frames.from_arrow(arrow.select(features), return_type)
        y = _frames.from_arrow(arrow.select(labels), return_type)
        if len(labels) == 1 and return_type == "pandas":
            y = y[labels[0]]
        elif len(labels) == 1 and return_type == "polars":
            y = y.get_column(labels[0])
        return x, y

    def _root_key_and_time(self) -> set[str]:
        root = self._status["root"]
        group = json.loads(self._engine.describe_group(root["group"], root.get("version")))
        return {*group["primary_key"], group["event_time"]}

    # Online.

    def get_feature_vector(
        self,
        entry: Any,
        *,
        request: dict[str, Any] | None = None,
        training_dataset_version: int | None = None,
        return_type: VectorReturnType = "list",
    ) -> Any:
        """The feature vector of one entity (its key: a dict of key columns, a tuple in key
        order, or a bare value), with the request's values (the event being scored) and
        on-demand features computed. Missing groups give nulls."""
        vectors = self.get_feature_vectors(
            [entry],
            request=request,
            training_dataset_version=training_dataset_version,
            return_type=return_type,
        )
        if return_type in ("list", "dict"):
            return vectors[0]
        return vectors

    def get_feature_vectors(
        self,
        entries: Sequence[Any],
        *,
        request: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        training_dataset_version: int | None = None,
        return_type: VectorReturnType = "list",
    ) -> Any:
        """Feature vectors of several entities in one call (one multi-get per group).
        ``request`` is one dict of request values for every entry, or one per entry. As lists
        or dicts, times are tz-aware UTC datetimes and embeddings lists of floats."""
        request_values = request if request is None or isinstance(request, dict) else list(request)
        args = (self.name, self.version, entries, request_values, training_dataset_version)
        if return_type == "list":
            return self._engine.vector_rows(*args)[1]
        if return_type == "dict":
            columns, rows = self._engine.vector_rows(*args)
            return [dict(zip(columns, row, strict=True)) for row in rows]
        return _frames.from_arrow(self._engine.vector_table(*args), return_type)

    def delete(self) -> None:
        """Deletes this version of the view and its training datasets."""
        self._engine.delete_view(self.name, self.version)
