"""hnswlib on the same vectors and queries as `kairos bench ann`, in the same run.

Reads the .fvecs/.ivecs files, builds with the given M and ef_construction on one thread, and
answers all queries for each ef in one batch call on one thread (no per-query Python overhead).
Prints one JSON object: version, build seconds, and recall@k and queries/s per ef.
"""
import json
import sys
import time
from importlib.metadata import version

import hnswlib
import numpy as np


def fvecs(path):
    raw = np.fromfile(path, dtype=np.int32)
    dim = raw[0]
    return raw.reshape(-1, dim + 1)[:, 1:].view(np.float32).copy()


def ivecs(path):
    raw = np.fromfile(path, dtype=np.int32)
    dim = raw[0]
    return raw.reshape(-1, dim + 1)[:, 1:]


base_path, query_path, truth_path, k, m, ef_construction, efs, runs = sys.argv[1:9]
k, m, ef_construction, runs = int(k), int(m), int(ef_construction), int(runs)
base, queries = fvecs(base_path), fvecs(query_path)
truth = ivecs(truth_path)[:, :k]

index = hnswlib.Index(space="l2", dim=base.shape[1])
index.init_index(max_elements=len(base), M=m, ef_construction=ef_construction, random_seed=100)
index.set_num_threads(1)
start = time.perf_counter()
index.add_items(base, np.arange(len(base)), num_threads=1)
build = time.perf_counter() - start

points = []
for ef in [int(e) for e in efs.split(",")]:
    index.set_ef(ef)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        labels, _ = index.knn_query(queries, k=k, num_threads=1)
        best = min(best, time.perf_counter() - start)
    recall = float(np.mean([len(set(l) & set(t)) / k for l, t in zip(labels, truth)]))
    points.append({"ef": ef, "recall": recall, "qps": len(queries) / best})
print(json.dumps({"hnswlib": version("hnswlib"), "build_s": build, "points": points}))
