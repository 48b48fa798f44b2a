#!/usr/bin/env bash
# The feature-view benchmarks BENCHMARKS.md records:
#  1. point-in-time join of 1M spine rows with 3 groups of 10M rows (100k keys), Kairos and
#     DuckDB's ASOF JOIN on the same Parquet files, in the same run, checked to give the same rows;
#  2. online feature vectors over HTTP for 1 / 10 / 100 / 1000 entities per request.
# Needs: python3 with duckdb (pip install duckdb), GNU time (/usr/bin/time).
# Usage: bench/views.sh [seconds-per-load-test] [spine-rows] [group-rows]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-10}"
SPINE_ROWS="${2:-1000000}"
GROUP_ROWS="${3:-10000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kairos-target}"
cargo build --release -p kairos --bin kairos
KAIROS="$CARGO_TARGET_DIR/release/kairos"
WORK=$(mktemp -d)
cleanup() {
    [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
export KAIROS_LOG=warn
peak() { awk -F': ' '/Maximum resident/ {printf "%.2f GiB", $2 / 1048576}' "$1"; }

echo "== machine"
echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(lscpu | sed -n 's/^Model name: *//p')"

echo "== point-in-time join: $SPINE_ROWS spine rows, 3 groups x $GROUP_ROWS rows, 100k keys"
"$KAIROS" bench pit-data --dir "$WORK/pit" --spine-rows "$SPINE_ROWS" --group-rows "$GROUP_ROWS"
du -sh "$WORK/pit"
for budget in 4096 512; do
    /usr/bin/time -v "$KAIROS" bench pit-join --dir "$WORK/pit" --out "$WORK/kairos-$budget.parquet" \
        --memory-budget-mb "$budget" 2> "$WORK/kairos-$budget.time"
    grep "kairos ASOF" "$WORK/kairos-$budget.time"
    echo "kairos (budget $budget MiB) peak RSS by GNU time: $(peak "$WORK/kairos-$budget.time")"
done
/usr/bin/time -v python3 bench/pit_duckdb.py join "$WORK/pit" "$WORK/duckdb.parquet" 2> "$WORK/duckdb.time"
echo "duckdb peak RSS by GNU time: $(peak "$WORK/duckdb.time")"
python3 bench/pit_duckdb.py check "$WORK/kairos-4096.parquet" "$WORK/duckdb.parquet"
python3 bench/pit_duckdb.py check "$WORK/kairos-512.parquet" "$WORK/duckdb.parquet"
rm -rf "$WORK/pit" "$WORK"/*.parquet

echo "== online feature vectors over HTTP: 3 joined groups, 2 on-demand features"
"$KAIROS" --data-dir "$WORK/serve" serve --listen 127.0.0.1:7072 > "$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:7072/healthz >/dev/null && break; sleep 0.1; done
SETUP=""
for batch in 1 10 100 1000; do
    "$KAIROS" bench vectors --url http://127.0.0.1:7072 --batch "$batch" --concurrency 4 --seconds "$SECONDS_EACH" $SETUP
    SETUP=--no-setup
done
"$KAIROS" bench vectors --url http://127.0.0.1:7072 --batch 1 --concurrency 1 --seconds "$SECONDS_EACH" --no-setup
for batch in 100 1000; do
    "$KAIROS" bench vectors --url http://127.0.0.1:7072 --batch "$batch" --concurrency 1 --seconds "$SECONDS_EACH" --no-setup
done
