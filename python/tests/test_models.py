"""Models and deployments through the SDK, on both backends: a model trained in the engine and
a scikit-learn model registered through skl2onnx, deployed and asked for predictions that
match what scikit-learn predicts on the same feature vectors."""

from __future__ import annotations

import pathlib
import time

import numpy as np
import pandas as pd
import pytest

import kairos


def payments(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    amount = rng.gamma(2.0, 40.0, n)
    hour = rng.integers(0, 24, n)
    night = (hour < 6).astype(float)
    risk = 0.02 * amount + 2.5 * night - 4
    fraud = (rng.random(n) < 1 / (1 + np.exp(-risk))).astype(np.int64)
    return pd.DataFrame(
        {
            "tx": np.arange(n, dtype=np.int64),
            "ts": pd.date_range("2025-01-01", periods=n, freq="min", tz="UTC"),
            "amount": amount,
            "night": night,
            "is_fraud": fraud,
        }
    )


def fraud_view(fs: kairos.Client) -> kairos.FeatureView:
    rows = payments()
    group = fs.create_feature_group("payments", primary_key="tx", event_time="ts", df=rows)
    group.insert(rows)
    return fs.create_feature_view(
        "fraud",
        root=group,
        features=["amount", "night"],
        labels=["is_fraud"],
        request=["amount", "night"],
    )


def test_a_model_trained_in_the_engine_is_deployed_and_predicts(fs: kairos.Client) -> None:
    view = fraud_view(fs)
    view.create_training_data(
        split={"kind": "random", "seed": 1, "train": 0.6, "validation": 0.2, "test": 0.2}
    )
    model = fs.train(view, label="is_fraud", trees=20)
    assert model.version == 1
    assert model.metrics is not None and model.metrics["task"] == "binary"
    assert [m.name for m in fs.models()] == [model.name]

    deployment = fs.deploy("fraud", model)
    assert (deployment.model, deployment.model_version) == (model.name, 1)
    risky, calm = deployment.predict(
        [10_000, 10_001],
        request=[{"amount": 400.0, "night": 1.0}, {"amount": 5.0, "night": 0.0}],
    )
    assert risky["probability"] > calm["probability"]
    assert risky["label"] in (0, 1)
    assert fs.get_deployment("fraud").status()["model_version"] == 1
    assert [d.name for d in fs.deployments()] == ["fraud"]


def test_a_scikit_learn_model_predicts_through_a_deployment_as_it_does_in_python(
    fs: kairos.Client,
) -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    pytest.importorskip("skl2onnx")
    view = fraud_view(fs)
    x_train, _, y_train, _ = view.train_test_split(0.2, seed=3)
    estimator = sklearn.LogisticRegression(max_iter=1000).fit(x_train.to_numpy(), y_train)
    model = fs.register_model("fraud_lr", estimator, feature_view=view)
    assert model.lineage["features"] == ["amount", "night"]

    deployment = fs.deploy("fraud_lr", model)
    requests = [{"amount": 250.0, "night": 1.0}, {"amount": 12.5, "night": 0.0}]
    predicted = fs.predict("fraud_lr", [20_000, 20_001], request=requests)
    expected = estimator.predict_proba(np.array([[250.0, 1.0], [12.5, 0.0]], dtype=np.float32))[
        :, 1
    ]
    assert [p["probability"] for p in predicted] == pytest.approx(expected.tolist(), abs=1e-5)

    with pytest.raises(kairos.BadInput):
        fs.register_model("broken", b"not an onnx graph", feature_view=view)
    deployment.delete()
    with pytest.raises(kairos.NotFound):
        fs.get_deployment("fraud_lr")


def test_a_monitor_watches_a_deployment(fs: kairos.Client, tmp_path: pathlib.Path) -> None:
    view = fraud_view(fs)
    view.create_training_data(
        split={"kind": "random", "seed": 1, "train": 0.6, "validation": 0.2, "test": 0.2}
    )
    fs.deploy("fraud", fs.train(view, label="is_fraud", trees=10))
    for i in range(30):
        fs.predict("fraud", [30_000 + i], request={"amount": 10.0 * i, "night": float(i % 2)})
    definition = tmp_path / "monitor.toml"
    definition.write_text('name = "watch"\ndeployment = "fraud"\nwindow = "1d"\nmin_rows = 10\n')
    monitor = fs.apply_monitor(definition)
    assert (monitor.name, monitor.deployment) == ("watch", "fraud")
    assert [m.name for m in fs.monitors()] == ["watch"]
    # The inference log is written off the request path: a run sees the rows once it is.
    deadline = time.monotonic() + 30
    run = monitor.run()
    while run["rows"] < 30 and time.monotonic() < deadline:
        time.sleep(0.5)
        run = monitor.run()
    assert run["rows"] >= 30, run
    assert "<html" in monitor.report().lower()
    scores = monitor.history()["scores"]
    while not scores and time.monotonic() < deadline:
        time.sleep(0.5)
        scores = monitor.history()["scores"]
    assert {s["run_id"] for s in scores} >= {run["run_id"]}, "the run is in the history"
    with pytest.raises(kairos.BadInput, match="nowhere"):
        fs.apply_monitor({"name": "bad", "deployment": "fraud", "window": "nowhere"})
    monitor.delete()
    with pytest.raises(kairos.NotFound):
        fs.get_monitor("watch")


def test_recommenders_are_listed_and_missing_ones_named(fs: kairos.Client) -> None:
    assert fs.recommenders() == []
    with pytest.raises(kairos.NotFound, match="movies"):
        fs.get_recommender("movies")
