//! Python functions in worker processes: the answer of a working function, and a function's
//! failure, crash and hang each reported with its name while the pool goes on serving. Skipped
//! where python3 has no pyarrow and numpy, unless `KAIROS_REQUIRE_INTEROP` is set (as in CI).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::datatypes::Float64Type;
use kairos_transform::{
    PythonHost, PythonUdf, PythonWorkers, PythonWorkersConfig, UdfMode, UserFn,
};
use kairos_types::FeatureType;

fn python_available() -> bool {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import pyarrow, numpy"])
        .output();
    if probe.is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(
        std::env::var("KAIROS_REQUIRE_INTEROP").is_err(),
        "python3 with pyarrow and numpy is required but missing"
    );
    eprintln!("skipped: python3 -c 'import pyarrow, numpy' failed");
    false
}

fn load(workers: &PythonWorkers, name: &str, source: &str, mode: UdfMode) -> Box<UserFn> {
    let udf = PythonUdf {
        source: source.into(),
        sha256: PythonUdf::digest(source),
        mode,
        returns: FeatureType::Float64,
    };
    workers.load(name, &udf, 1).unwrap()
}

fn column(values: &[Option<f64>]) -> Vec<ArrayRef> {
    vec![Arc::new(Float64Array::from(values.to_vec()))]
}

#[test]
fn functions_answer_and_failures_crashes_and_hangs_are_contained() {
    if !python_available() {
        return;
    }
    let workers = PythonWorkers::new(PythonWorkersConfig {
        timeout_ms: 2000,
        workers: 1,
        ..PythonWorkersConfig::default()
    });
    let double = load(
        &workers,
        "double",
        "import numpy as np\n\ndef double(x):\n    return np.asarray(x) * 2\n",
        UdfMode::Vectorized,
    );
    let out = double(&column(&[Some(1.5), None, Some(-2.0)])).unwrap();
    let out = out.as_primitive::<Float64Type>();
    assert_eq!(out.value(0), 3.0);
    assert!(out.is_null(1), "a null in is a null out");
    assert_eq!(out.value(2), -4.0);

    let failing = load(
        &workers,
        "failing",
        "def failing(x):\n    raise ValueError('no such amount')\n",
        UdfMode::Row,
    );
    let err = failing(&column(&[Some(1.0)])).unwrap_err().to_string();
    assert!(
        err.contains("'failing'") && err.contains("no such amount"),
        "{err}"
    );

    let crashing = load(
        &workers,
        "crashing",
        "import os\n\ndef crashing(x):\n    os._exit(3)\n",
        UdfMode::Row,
    );
    let err = crashing(&column(&[Some(1.0)])).unwrap_err().to_string();
    assert!(
        err.contains("'crashing'") && err.contains("exit status: 3"),
        "{err}"
    );

    let hanging = load(
        &workers,
        "hanging",
        "import time\n\ndef hanging(x):\n    time.sleep(60)\n",
        UdfMode::Row,
    );
    let started = std::time::Instant::now();
    let err = hanging(&column(&[Some(1.0)])).unwrap_err().to_string();
    assert!(
        err.contains("'hanging'") && err.contains("2000 ms"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    // The one worker place was freed each time: the pool still answers.
    let out = double(&column(&[Some(4.0)])).unwrap();
    assert_eq!(out.as_primitive::<Float64Type>().value(0), 8.0);
}

#[test]
fn a_stored_source_edited_by_hand_is_refused() {
    let registry = kairos_transform::FunctionRegistry::default();
    let spec: kairos_transform::OnDemandSpec = serde_json::from_value(serde_json::json!({
        "name": "out",
        "function": "double",
        "inputs": ["x"],
        "python": {
            "source": "def double(x):\n    return x * 3\n",
            "sha256": PythonUdf::digest("def double(x):\n    return x * 2\n"),
            "mode": "row",
            "returns": "float64",
        },
    }))
    .unwrap();
    let err = kairos_transform::OnDemand::compile(&spec, &registry, "ts").unwrap_err();
    assert!(
        err.to_string().contains("does not match its SHA-256"),
        "{err}"
    );
}
