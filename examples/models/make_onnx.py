"""Trains two small scikit-learn classifiers and exports them to ONNX, with the probabilities
scikit-learn predicts for a few rows, so the ONNX test can check Kairos' predictions against
them. The data is computed, not drawn, so the script gives the same files every time.

    pip install scikit-learn skl2onnx onnx
    python3 examples/models/make_onnx.py
"""

import json
import math
import pathlib

import numpy as np
from skl2onnx import to_onnx
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

HERE = pathlib.Path(__file__).parent


def rows(n):
    x, y = [], []
    for i in range(n):
        a, b, c = math.sin(i * 0.7), math.cos(i * 1.3), ((i * 37) % 101) / 50 - 1
        x.append([a, b, c, a * b])
        y.append(1 if a + 0.5 * b - c + 0.8 * math.sin(i * 5.1) > 0 else 0)
    return np.array(x, dtype=np.float32), np.array(y)


def main():
    x, y = rows(300)
    probe = x[:8]
    models = {
        "fraud_logistic": LogisticRegression(C=1.0, max_iter=1000),
        # A forest, not GradientBoostingClassifier: skl2onnx gives a binary GBM two
        # base_values, which tract 0.23's TreeEnsembleClassifier refuses.
        "fraud_trees": RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0),
    }
    expected = {"inputs": probe.tolist()}
    for name, model in models.items():
        model.fit(x, y)
        onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=15)
        (HERE / f"{name}.onnx").write_bytes(onx.SerializeToString())
        expected[name] = model.predict_proba(probe)[:, 1].tolist()
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
