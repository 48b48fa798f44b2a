"""Models and deployments: a model registered (scikit-learn through skl2onnx, ONNX bytes) or
trained on a view's training data, then deployed behind a name and asked for predictions —
the deployment builds each entity's feature vector online exactly as its training data was
built, so the model sees what it was trained on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from kairos import _wire

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kairos._internal import Engine
    from kairos.feature_view import FeatureView


@dataclass(frozen=True)
class Model:
    """A registered model version."""

    name: str
    version: int
    framework: str
    metrics: dict[str, Any] | None
    lineage: dict[str, Any]
    definition: dict[str, Any]

    @staticmethod
    def of(definition: dict[str, Any]) -> Model:
        return Model(
            name=definition["name"],
            version=int(definition["version"]),
            framework=definition["framework"],
            metrics=definition.get("metrics"),
            lineage=definition.get("lineage", {}),
            definition=definition,
        )


class Deployment:
    """A model version behind a name, answering predictions."""

    def __init__(self, engine: Engine, deployment: dict[str, Any]) -> None:
        self._engine = engine
        self._deployment = deployment

    @property
    def name(self) -> str:
        return str(self._deployment["name"])

    @property
    def model(self) -> str:
        return str(self._deployment["model"])

    @property
    def model_version(self) -> int:
        return int(self._deployment["model_version"])

    def __repr__(self) -> str:
        return f"Deployment({self.name!r}, model={self.model!r} v{self.model_version})"

    def status(self) -> dict[str, Any]:
        """Its revision, model, feature view, latency percentiles and SLO compliance."""
        return _wire.report(self._engine.deployment_status(self.name))

    def predict(
        self,
        entries: Sequence[Any],
        *,
        request: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        return_features: bool = False,
    ) -> list[dict[str, Any]]:
        """One prediction per entry (an entity's key: a dict of key columns, a tuple in key
        order, or a bare value), with the request's values (the event being scored): each a
        dict with ``probability`` and ``label`` (a classifier) or ``prediction`` (a
        regressor), and ``status`` (whether every group had a row)."""
        return predict(self._engine, self.name, entries, request, return_features)

    def delete(self) -> None:
        """Deletes the deployment; its inference log stays."""
        self._engine.delete_deployment(self.name)


def predict(
    engine: Engine,
    deployment: str,
    entries: Sequence[Any],
    request: dict[str, Any] | Sequence[dict[str, Any]] | None,
    return_features: bool,
) -> list[dict[str, Any]]:
    """A deployment's predictions, as ``Deployment.predict`` describes them."""
    body = {
        "entries": [list(e) if isinstance(e, tuple) else e for e in entries],
        "request": request if request is None or isinstance(request, dict) else list(request),
        "return_features": return_features,
    }
    answer = json.loads(engine.predict(deployment, json.dumps(body, default=str)))
    predictions: list[dict[str, Any]] = answer["predictions"]
    return predictions


def onnx_definition(
    name: str,
    n_features: int,
    *,
    task: Literal["binary", "regression"],
    view: FeatureView,
    training_dataset_version: int | None,
    description: str,
) -> dict[str, Any]:
    """The definition of an ONNX model reading the view's features as one FP32 tensor ``X``."""
    if task == "binary":
        outputs = [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        ]
    else:
        outputs = [{"name": "variable", "datatype": "FP32", "shape": [-1, 1]}]
    return {
        "name": name,
        "framework": "onnx",
        "description": description,
        "signature": {
            "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, n_features]}],
            "outputs": outputs,
        },
        "lineage": {
            "feature_view": view.name,
            "feature_view_version": view.version,
            "training_dataset_version": training_dataset_version,
            "features": view.features,
        },
    }


def to_onnx(estimator: Any, n_features: int) -> bytes:
    """A scikit-learn estimator as ONNX bytes (classifiers without the ZipMap, so their
    probabilities are one tensor)."""
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError:
        from kairos.errors import BadInput

        raise BadInput(
            "registering a scikit-learn model needs skl2onnx (pip install skl2onnx), or pass "
            "its ONNX bytes"
        ) from None
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    graph = convert_sklearn(
        estimator,
        initial_types=[("X", FloatTensorType([None, n_features]))],
        options=options,
        target_opset=15,
    )
    serialized: bytes = graph.SerializeToString()
    return serialized
