"""KServe's Python model server serving a scikit-learn model equivalent to Kairos's: a
GradientBoostingClassifier of 100 trees fitted on the same training dataset's features, answering
V2 inference on the feature vector (KServe's predictor; the feature lookups Kairos does inside
are not part of it).

    python3 bench/serve_kserve.py train TRAIN.parquet FEATURES_JSON MODEL.joblib
    python3 bench/serve_kserve.py serve MODEL.joblib PORT

Needs: pip install kserve scikit-learn pyarrow
"""

import json
import sys
import uuid

import joblib
import numpy as np


def train(parquet, features_json, out):
    import pyarrow.parquet as pq
    from sklearn.ensemble import GradientBoostingClassifier

    features = json.loads(features_json)
    table = pq.read_table(parquet).to_pydict()
    x = np.column_stack([np.asarray(table[f], dtype=np.float64) for f in features])
    y = np.asarray(table["is_fraud"], dtype=np.int64)
    model = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0).fit(x, y)
    joblib.dump(model, out)
    print(f"trained on {len(y)} rows x {len(features)} features: {out}")


def serve(path, port):
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

    class Fraud(Model):
        def __init__(self, name):
            super().__init__(name)
            self.model = joblib.load(path)
            self.ready = True

        def predict(self, payload: InferRequest, headers=None, response_headers=None):
            x = payload.inputs[0].as_numpy().astype(np.float64)
            p = self.model.predict_proba(x)[:, 1]
            out = InferOutput(name="probability", shape=list(p.shape), datatype="FP64", data=p)
            return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or str(uuid.uuid4()))

    ModelServer(http_port=int(port), enable_grpc=False, workers=1,
                enable_latency_logging=False, access_log_format=None).start([Fraud("bench_fraud")])


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train(*sys.argv[2:5])
    else:
        serve(*sys.argv[2:4])
