#!/usr/bin/env bash
# How long a change made through one replica takes to act on another, on a cluster
# configuration: a PostgreSQL catalog, an S3 bucket and Redis, named as the tests name them
# (KAIROS_TEST_POSTGRES_URL: a server whose user may create databases; KAIROS_TEST_S3_URL with
# the AWS_* variables; KAIROS_TEST_REDIS_URL). Makes the card-fraud example, a model and a
# deployment of it on a scratch data dir, then runs `kairos bench replicas` with keys and the
# deployment. Usage: bench/replicas.sh [trials]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KAIROS_TEST_POSTGRES_URL:?}" "${KAIROS_TEST_S3_URL:?}" "${KAIROS_TEST_REDIS_URL:?}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kairos-target}"
cargo build --release -p kairos --bin kairos
KAIROS="$CARGO_TARGET_DIR/release/kairos"
WORK=$(mktemp -d)
DB="kairos_bench_replicas_$$"
cleanup() {
    psql "$KAIROS_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
psql "$KAIROS_TEST_POSTGRES_URL" -qc "CREATE DATABASE $DB" >/dev/null
cat > "$WORK/kairos.toml" <<TOML
[store.catalog]
url = "${KAIROS_TEST_POSTGRES_URL%/*}/$DB"
[store.storage]
url = "${KAIROS_TEST_S3_URL%/}/bench-replicas-$$"
[store.online]
backend = "redis"
url = "$KAIROS_TEST_REDIS_URL"
prefix = "bench-replicas-$$:"
TOML
export KAIROS_CONFIG="$WORK/kairos.toml" KAIROS_LOG=warn
EXAMPLES=examples/feature_views
for group in transactions card_profiles; do
    "$KAIROS" --data-dir "$WORK/prep" fg create "$EXAMPLES/$group.toml" >/dev/null
    "$KAIROS" --data-dir "$WORK/prep" fg insert "$group" "$EXAMPLES/$group.csv" --wait-online >/dev/null
done
"$KAIROS" --data-dir "$WORK/prep" fv apply "$EXAMPLES/card_fraud.toml" >/dev/null
"$KAIROS" --data-dir "$WORK/prep" fv training-data card_fraud \
    --split time:2024-05-02T00:00:00Z,2024-05-02T12:00:00Z >/dev/null
"$KAIROS" --data-dir "$WORK/prep" train --feature-view card_fraud --label is_fraud --trees 10 >/dev/null
printf 'name = "fraud"\nmodel = "card_fraud"\nmodel_version = 1\n' > "$WORK/fraud.toml"
"$KAIROS" --data-dir "$WORK/prep" deploy apply "$WORK/fraud.toml" >/dev/null
"$KAIROS" bench replicas --config "$WORK/kairos.toml" --deployment fraud --trials "${1:-40}"
