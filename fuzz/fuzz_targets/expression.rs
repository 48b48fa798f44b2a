//! The expression language — on-demand features, pipeline filters, vector-search filters:
//! any text is refused or parsed, and a parsed expression evaluates over a batch with nulls,
//! extremes and every column type to a value or an error, never a crash.
#![no_main]

use std::sync::LazyLock;

use arrow::array::RecordBatch;
use kairos_transform::Expr;
use libfuzzer_sys::fuzz_target;

static ROWS: LazyLock<RecordBatch> = LazyLock::new(kairos_fuzz::rows);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = Expr::parse(text) else {
        return;
    };
    let _ = expr.columns();
    if let Ok(values) = expr.eval(&ROWS) {
        assert_eq!(values.len(), ROWS.num_rows());
    }
});
