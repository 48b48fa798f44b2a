//! Writes the seed corpus of every target under `fuzz/corpus/` (checked in), so each run starts
//! from inputs that reach deep into its parser: `cargo run --example seeds` in `fuzz/`.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::StreamWriter;
use kairos_tensor::TensorData;
use kairos_tensor::binary::to_binary;
use parquet::arrow::ArrowWriter;

const JSONL: &str = r#"{"id": 1, "ts": "2024-01-01T00:00:00Z", "flag": true, "small": 3, "ratio": 0.5, "amount": 12.5, "category": "food", "day": "2024-01-01", "emb": [1, 0, 0]}
{"id": 2, "ts": 1704067201000, "amount": null, "category": "kr\u00f6na"}
{"id": 3, "ts": "2024-01-01 00:00:02.5+01:00", "emb": null}
"#;

const V2_JSON: &str = r#"{"id":"r1","inputs":[{"name":"id","shape":[2],"datatype":"INT64","data":[1,2]},{"name":"amount","shape":[2,1],"datatype":"FP64","data":[[12.5],[3]]},{"name":"category","shape":[2],"datatype":"BYTES","data":["food","travel"]}],"outputs":[{"name":"probability"},{"name":"label","parameters":{"binary_data":true}}]}"#;

const V2_BINARY_HEAD: &str = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},{"name":"s","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":8}}],"parameters":{"binary_data_output":true}}"#;

const EXPRESSIONS: [&str; 6] = [
    "amount / ratio + small * 2",
    "flag = true AND category = 'food'",
    "max(abs(amount), sqrt(ratio)) >= -1e30 OR small != 3",
    "pow(ln(amount + 1), 2) - exp(-(small))",
    "(((log1p(amount))))",
    "min(amount, 1, 2) < 0.5 and not_a_column > 1",
];

const GROUP_TOML: &str = include_str!("../../examples/feature_groups/card_transactions.toml");
const CHECKED_GROUP_TOML: &str = include_str!("../../examples/feature_groups/card_payments.toml");
const PIPELINE_TOML: &str = include_str!("../../examples/pipelines/card_amount_10m.toml");

const GROUP_JSON: &str = r#"{"name":"items","columns":[{"name":"id","type":"int64"},{"name":"ts","type":"timestamp"},{"name":"emb","type":"embedding(4)"},{"name":"in_stock","type":"bool"}],"primary_key":["id"],"event_time":"ts","ttl_seconds":60,"vector_index":{"column":"emb","metric":"cosine","attributes":["in_stock"]}}"#;

const VIEW_TOML: &str = r#"
name = "fuzzed_view"
[root]
group = "fuzzed"
features = ["amount", "category", "emb"]
labels = ["flag"]
request = ["ratio"]

[[join]]
group = "fuzzed"
version = 1
on = ["id"]
features = ["small", "day"]
prefix = "other_"
lookback_seconds = 3600

[[on_demand]]
name = "scaled"
expression = "amount * ratio"

[[on_demand]]
name = "hour"
function = "hour_of_day"
inputs = ["ts"]

[[transform]]
feature = "amount"
kind = "standard_scaler"

[[transform]]
feature = "category"
kind = "one_hot"
"#;

const ON_DEMAND_JSON: &str =
    r#"{"name":"distance","function":"haversine","inputs":["a","b","c","d"]}"#;

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

fn with_kind(kind: u8, text: &str) -> Vec<u8> {
    let mut bytes = vec![kind];
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

fn parquet(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), None).expect("writer");
    writer.write(batch).expect("rows written");
    writer.close().expect("footer written");
    out
}

fn arrow_stream(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema()).expect("writer");
    writer.write(batch).expect("rows written");
    writer.finish().expect("stream ended");
    drop(writer);
    out
}

fn main() {
    let rows = kairos_fuzz::rows();
    // A client's own types: epoch milliseconds and text where the group has other types.
    let loose = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("category", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![7, 8])),
            Arc::new(Int64Array::from(vec![1_704_067_200_000, 1_704_067_201_000])),
            Arc::new(StringArray::from(vec![Some("food"), None])),
        ],
    )
    .expect("a batch");

    write("ingest_csv", "rows.csv", kairos_fuzz::ROWS_CSV);
    write(
        "ingest_csv",
        "epochs.csv",
        "ts,id,amount\n1704067200,1,1.5\n1704067200123,2,\"2\"\n",
    );
    write("ingest_jsonl", "rows.jsonl", JSONL);
    write("ingest_parquet", "rows.parquet", parquet(&rows));
    write("ingest_parquet", "loose.parquet", parquet(&loose));
    write("ingest_arrow", "rows.arrow", arrow_stream(&rows));
    write("ingest_arrow", "loose.arrow", arrow_stream(&loose));

    write("v2_request", "json", V2_JSON);
    let mut binary = format!("H{}\n{V2_BINARY_HEAD}", V2_BINARY_HEAD.len()).into_bytes();
    binary.extend(to_binary(&TensorData::Fp32(vec![0.5, -2.0])));
    binary.extend(to_binary(&TensorData::Bytes(vec![b"food".to_vec()])));
    write("v2_request", "binary", binary);
    let tensors = [
        TensorData::Bool(vec![true, false]),
        TensorData::Int32(vec![-1, 7]),
        TensorData::Int64(vec![i64::MIN, 4]),
        TensorData::Fp32(vec![0.5, f32::NAN]),
        TensorData::Fp64(vec![1e-300, f64::INFINITY]),
        TensorData::Bytes(vec![b"travel".to_vec(), Vec::new()]),
    ];
    for (kind, data) in tensors.iter().enumerate() {
        let mut bytes = vec![kind as u8];
        bytes.extend(to_binary(data));
        write("v2_binary", &format!("{:?}", data.datatype()), bytes);
    }

    for (i, text) in EXPRESSIONS.iter().enumerate() {
        write("expression", &format!("e{i}"), text);
    }

    write("definition", "group.toml", with_kind(0, GROUP_TOML));
    write("definition", "group.json", with_kind(4, GROUP_JSON));
    write(
        "definition",
        "group_expectations.toml",
        with_kind(0, CHECKED_GROUP_TOML),
    );
    write("definition", "pipeline.toml", with_kind(1, PIPELINE_TOML));
    write("definition", "view.toml", with_kind(2, VIEW_TOML));
    write("definition", "on_demand.json", with_kind(7, ON_DEMAND_JSON));
}
