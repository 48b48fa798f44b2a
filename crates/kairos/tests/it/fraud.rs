//! The card-fraud example's data: `kairos gen transactions` output loads as it is into the
//! example's feature groups, and the same seed writes the same files.

use std::path::Path;

use crate::models::{json, kairos};

#[test]
fn generated_transactions_load_into_the_example_groups() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let generate = |out: &Path| {
        let out = out.display().to_string();
        let args = [
            "gen",
            "transactions",
            "--out",
            &out,
            "--cards",
            "100",
            "--days",
            "2",
        ];
        let run = kairos(&data, &args);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    };
    let (first, second) = (dir.path().join("a"), dir.path().join("b"));
    generate(&first);
    generate(&second);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fraud");
    for group in ["transactions", "card_profiles", "labels"] {
        let file = format!("{group}.jsonl");
        let written = std::fs::read(first.join(&file)).unwrap();
        assert_eq!(
            written,
            std::fs::read(second.join(&file)).unwrap(),
            "{file} differs"
        );
        let lines = written.iter().filter(|b| **b == b'\n').count();
        assert!(lines > 0, "{file} is empty");
        let definition = examples.join(format!("{group}.toml")).display().to_string();
        json(&kairos(&data, &["fg", "create", &definition]));
        let path = first.join(&file).display().to_string();
        let ack = json(&kairos(
            &data,
            &["fg", "insert", &format!("fraud_{group}"), &path],
        ));
        assert_eq!(ack["rows"], lines, "{file}");
    }
}
