#!/usr/bin/env bash
# The serving benchmark BENCHMARKS.md records, in one run on one machine:
#  1. a fraud-style deployment on Kairos (2 feature-group lookups, 2 on-demand features, GBDT of
#     100 trees) over HTTP, open loop at fixed rates and closed loop;
#  2. KServe's Python model server with an equivalent scikit-learn model (100 trees, same
#     features) under the same load, given the feature vectors;
#  3. the V2 REST infer path's cost over the model's own predict time, in process.
# Needs: python3 with kserve, scikit-learn, pyarrow (pip install kserve scikit-learn pyarrow).
# Usage: bench/serve.sh [seconds-per-run] [kairos-rates] [kserve-rates]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-10}"
KAIROS_RATES="${2:-1000,2000,5000,8000,10000}"
KSERVE_RATES="${3:-250,500,1000,2000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kairos-target}"
cargo build --release -p kairos --bin kairos
KAIROS="$CARGO_TARGET_DIR/release/kairos"
WORK=$(mktemp -d)
cleanup() {
    [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null || true
    [ -n "${KSERVE:-}" ] && kill "$KSERVE" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
export KAIROS_LOG=warn
K() { "$KAIROS" --data-dir "$WORK/data" "$@"; }

echo "== machine"
echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(lscpu | sed -n 's/^Model name: *//p')"

echo "== setup: data, groups, view, training dataset, GBDT of 100 trees, deployment"
"$KAIROS" bench serve-data --dir "$WORK/in"
for g in bench_profiles bench_activity bench_tx; do
    K fg create "$WORK/in/$g.toml" > /dev/null
    K fg insert "$g" "$WORK/in/$g.csv" --wait-online > /dev/null
done
K fv apply "$WORK/in/bench_fraud.toml" > /dev/null
K fv training-data bench_fraud --split random:0.8,0.1,0.1:7 > /dev/null
K train --feature-view bench_fraud --label is_fraud --trees 100 --max-depth 3 --name bench_fraud_gbdt \
    | python3 -c 'import json,sys; m=json.load(sys.stdin); print("trained:", json.dumps(m["metrics"]["test"]))'
K deploy apply "$WORK/in/deployment.toml" > /dev/null
FEATURES=$(K model describe bench_fraud_gbdt | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["lineage"]["features"]))')
K fv read bench_fraud 1 --split train --format parquet -o "$WORK/train.parquet"

echo "== V2 infer overhead over the model's own time (in process)"
K bench v2-overhead --model bench_fraud_gbdt

echo "== Kairos: deployment bench_fraud over HTTP"
K serve --listen 127.0.0.1:7073 > "$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:7073/v2/health/ready >/dev/null && break; sleep 0.1; done
"$KAIROS" bench serve --url http://127.0.0.1:7073 --rates "$KAIROS_RATES" --seconds "$SECONDS_EACH"
curl -s 127.0.0.1:7073/v1/deployments/bench_fraud | python3 -c 'import json,sys; s=json.load(sys.stdin); print("server-side:", json.dumps(s["latency"]), "log dropped:", s["inference_log_dropped"])'

echo "== KServe $(python3 -c 'import importlib.metadata as m; print(m.version("kserve"), "with scikit-learn", m.version("scikit-learn"))'): scikit-learn GradientBoostingClassifier(100 trees)"
python3 bench/serve_kserve.py train "$WORK/train.parquet" "$FEATURES" "$WORK/model.joblib"
python3 bench/serve_kserve.py serve "$WORK/model.joblib" 7074 > "$WORK/kserve.log" 2>&1 &
KSERVE=$!
for _ in $(seq 300); do curl -sf 127.0.0.1:7074/v2/models/bench_fraud/ready >/dev/null && break; sleep 0.1; done
"$KAIROS" bench serve --target kserve --url http://127.0.0.1:7074 --features-from http://127.0.0.1:7073 \
    --rates "$KSERVE_RATES" --seconds "$SECONDS_EACH"
