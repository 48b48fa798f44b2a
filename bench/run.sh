#!/usr/bin/env bash
# Runs every benchmark of the feature-store core and prints the figures BENCHMARKS.md records.
# Needs: a release build (made here), redis-server, redis-cli and redis-benchmark (apt: redis-server).
# Usage: bench/run.sh [seconds-per-load-test]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kairos-target}"
cargo build --release -p kairos --bin kairos
KAIROS="$CARGO_TARGET_DIR/release/kairos"
WORK=$(mktemp -d)
REDIS_PORT=6395
CLUSTER_PORTS="6396 6397 6398"
cleanup() {
    [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null || true
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    for port in $CLUSTER_PORTS; do redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
export KAIROS_LOG=warn

echo "== machine"
echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(lscpu | sed -n 's/^Model name: *//p')"

echo "== in-process online get (redb)"
"$KAIROS" --data-dir "$WORK/inproc" bench online --mode in-process --batch 1 --seconds "$SECONDS_EACH"
"$KAIROS" --data-dir "$WORK/inproc" bench online --mode in-process --batch 100 --seconds "$SECONDS_EACH" --no-setup

echo "== bulk insert, 1M rows x 10 features, Parquet, into both stores"
"$KAIROS" --data-dir "$WORK/bulk" bench insert --rows 1000000

serve_and_bench() {
    local label="$1"; shift
    "$KAIROS" --data-dir "$WORK/$label" serve --listen 127.0.0.1:7071 "$@" > "$WORK/$label.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 100); do curl -sf 127.0.0.1:7071/healthz >/dev/null && break; sleep 0.1; done
    echo "== HTTP online read, $label backend"
    for c in 4 32; do "$KAIROS" bench online --url http://127.0.0.1:7071 --batch 1 --concurrency "$c" --seconds "$SECONDS_EACH" $([ "$c" = 32 ] && echo --no-setup); done
    "$KAIROS" bench online --url http://127.0.0.1:7071 --batch 100 --concurrency 8 --seconds "$SECONDS_EACH" --no-setup
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
}

serve_and_bench redb

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
serve_and_bench redis --online-backend redis --redis-url "redis://127.0.0.1:$REDIS_PORT"

echo "== redis-benchmark floor (same server, 32 clients): GET of one key, MGET of 100 keys"
redis-cli -p "$REDIS_PORT" set bench:k "$(head -c 120 /dev/zero | tr '\0' x)" >/dev/null
KEYS=$(for i in $(seq 100); do printf 'bench:k%d ' "$i"; done)
for i in $(seq 100); do redis-cli -p "$REDIS_PORT" set "bench:k$i" "$(head -c 120 /dev/zero | tr '\0' x)" >/dev/null; done
redis-benchmark -p "$REDIS_PORT" -c 32 -n 300000 --precision 3 GET bench:k | grep -E "throughput|avg|[0-9]\.[0-9]+ +[0-9]" | tail -3
# shellcheck disable=SC2086
redis-benchmark -p "$REDIS_PORT" -c 8 -n 100000 --precision 3 MGET $KEYS | grep -E "throughput|avg|[0-9]\.[0-9]+ +[0-9]" | tail -3

echo "== Redis Cluster of three masters: Kairos over HTTP, and redis-benchmark MGET of 100 keys in one slot"
nodes=()
for port in $CLUSTER_PORTS; do
    mkdir -p "$WORK/cluster-$port"
    (cd "$WORK/cluster-$port" && redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file nodes.conf --save '' --appendonly no --daemonize yes >/dev/null)
    nodes+=("127.0.0.1:$port")
done
sleep 0.5
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
until redis-cli -p 6396 cluster info | grep -q cluster_state:ok; do sleep 0.1; done
serve_and_bench redis-cluster --online-backend redis-cluster \
    --redis-url "$(printf 'redis://%s,' "${nodes[@]}" | sed 's/,$//')"
CLUSTER_KEYS=$(for i in $(seq 100); do printf '{bench}:k%d ' "$i"; done)
for i in $(seq 100); do redis-cli -c -p 6396 set "{bench}:k$i" "$(head -c 120 /dev/zero | tr '\0' x)" >/dev/null; done
# shellcheck disable=SC2086
# redis-benchmark sends a command with arguments of its own to any node: ask the slot's owner.
OWNER=$(for port in $CLUSTER_PORTS; do
    if [ "$(redis-cli -p "$port" exists "{bench}:k1")" = 1 ]; then echo "$port"; fi
done)
redis-benchmark -p "$OWNER" -c 8 -n 100000 --precision 3 MGET $CLUSTER_KEYS | grep -E "throughput|avg|[0-9]\.[0-9]+ +[0-9]" | tail -3
redis-benchmark -p "$OWNER" -c 32 -n 300000 --precision 3 GET "{bench}:k1" | grep -E "throughput|avg|[0-9]\.[0-9]+ +[0-9]" | tail -3

echo "== embedded KV choice and online-store get (criterion)"
cargo bench --workspace --bench online -- --noplot --warm-up-time 1 --measurement-time 3 2>&1 | grep -E "^(kv_|online_)|time:"
