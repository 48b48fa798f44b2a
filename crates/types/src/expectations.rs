//! Expectations: rules on a group's columns that every write must meet (the lecture's data
//! validation; Hopsworks' expectation suites, Great Expectations' column expectations).
//!
//! A group declares them with its columns; the store checks every batch against them after
//! ingestion has made it canonical and before anything is appended, so a write is refused
//! whole or split, never half-made. An expectation that fails either refuses the batch (the
//! default) or, when it says `on_failure = "quarantine"`, lets the other rows through and
//! sends the failing ones, with the rules they broke, to the group's quarantine group
//! ([`quarantine_spec`]). Every checked batch gets a [`ValidationReport`].
//!
//! Rules about a value ignore nulls: whether a column may hold nulls is the column's
//! `nullable` and the batch-level `min_not_null_share`.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray};
use arrow::compute;
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::{Column, FeatureGroupSpec, FeatureType, SpecError, is_identifier};

/// The column of a quarantine group that names the expectations a row broke.
pub const FAILED_EXPECTATIONS: &str = "failed_expectations";

/// The longest regular expression an expectation may hold, in bytes.
const MAX_PATTERN_BYTES: usize = 1024;
/// The most memory a compiled regular expression may take.
const MAX_PATTERN_PROGRAM_BYTES: usize = 1 << 20;
/// The most values `one_of` may list.
const MAX_ALLOWED_VALUES: usize = 10_000;

/// Rules on one column. Each rule given is checked on its own and reported on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub column: String,
    /// The smallest value allowed (numeric columns). NaN is below every minimum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The largest value allowed (numeric columns). NaN is above every maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The only values allowed (string, integer and bool columns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub one_of: Vec<serde_json::Value>,
    /// A regular expression each value must match somewhere (string columns); anchor it with
    /// `^…$` to match the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// The share of a batch's rows, 0 to 1, that must hold a value. A rule of the batch, so
    /// it can only refuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_not_null_share: Option<f64>,
    /// How many seconds before the write a timestamp may lie (timestamp columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// What a failed expectation does to the batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The whole batch is refused, naming the column, the rule and the first failing row.
    #[default]
    Refuse,
    /// The failing rows go to the quarantine group; the others are written.
    Quarantine,
}

/// How one rule fared on one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Refused,
    Quarantined,
}

/// One rule's result on one batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RuleResult {
    pub column: String,
    /// The rule as written, e.g. `min 0` or `matches ^[A-Z]{2}$`.
    pub rule: String,
    /// Rows that broke it (for `min_not_null_share`, the rows without a value).
    pub failed_rows: u64,
    /// The first of them, counting the batch's rows from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failed_row: Option<u64>,
    pub outcome: Outcome,
}

/// What the expectations made of one batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ValidationReport {
    /// Rows checked.
    pub rows: u64,
    /// Rows written to the group.
    pub accepted: u64,
    /// Rows sent to the quarantine group.
    pub quarantined: u64,
    /// Every rule, in the order the definition gives them.
    pub results: Vec<RuleResult>,
}

impl ValidationReport {
    /// The first rule that refused the batch, as a sentence for the error.
    fn refusal(&self) -> Option<String> {
        let refused = self
            .results
            .iter()
            .find(|r| r.outcome == Outcome::Refused)?;
        let first = refused
            .first_failed_row
            .map(|row| format!(", the first at row {row}"))
            .unwrap_or_default();
        Some(format!(
            "column '{}': expectation '{}' failed for {} of {} rows{first}; the batch is refused whole",
            refused.column, refused.rule, refused.failed_rows, self.rows
        ))
    }
}

/// A batch the expectations let through.
#[derive(Debug)]
pub struct Checked {
    /// The rows to write to the group (all of them unless some were quarantined).
    pub accepted: RecordBatch,
    /// The quarantined rows in the quarantine group's schema, when there are any.
    pub quarantined: Option<RecordBatch>,
    pub report: ValidationReport,
}

/// A batch the expectations refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub message: String,
    pub report: ValidationReport,
}

/// The quarantine group of a group whose expectations quarantine: the group's columns, its
/// key and event time, plus [`FAILED_EXPECTATIONS`]; offline only. `None` when no expectation
/// quarantines.
pub fn quarantine_spec(spec: &FeatureGroupSpec) -> Option<FeatureGroupSpec> {
    spec.expectations
        .iter()
        .any(|e| e.on_failure == OnFailure::Quarantine)
        .then(|| {
            let mut columns = spec.columns.clone();
            columns.push(Column::new(FAILED_EXPECTATIONS, FeatureType::String).required());
            FeatureGroupSpec {
                name: format!("{}_quarantine", spec.name),
                description: format!("Rows of '{}' that broke its expectations", spec.name),
                columns,
                primary_key: spec.primary_key.clone(),
                event_time: spec.event_time.clone(),
                online: false,
                ttl_seconds: None,
                vector_index: None,
                expectations: Vec::new(),
            }
        })
}

/// A group's expectations, compiled once (regular expressions, sets of allowed values).
#[derive(Debug)]
pub struct Expectations {
    rules: Vec<Rule>,
    quarantine_schema: Option<Arc<Schema>>,
}

#[derive(Debug)]
struct Rule {
    column: usize,
    column_name: String,
    label: String,
    check: Check,
    on_failure: OnFailure,
}

#[derive(Debug)]
enum Check {
    Min(f64),
    Max(f64),
    OneOf(Allowed),
    Matches(regex::Regex),
    MinNotNullShare(f64),
    MaxAge { micros: i64 },
}

#[derive(Debug)]
enum Allowed {
    Strings(HashSet<String>),
    Integers(HashSet<i64>),
    Bools(HashSet<bool>),
}

impl Expectations {
    /// Compiles the expectations of a group definition; `None` when it declares none. Its
    /// errors are the ones [`FeatureGroupSpec::validate`] reports.
    pub fn compile(spec: &FeatureGroupSpec) -> Result<Option<Expectations>, SpecError> {
        if spec.expectations.is_empty() {
            return Ok(None);
        }
        let mut rules = Vec::new();
        for (i, expectation) in spec.expectations.iter().enumerate() {
            let err = |m: String| SpecError(format!("expectations[{i}]: {m}"));
            let column = spec
                .columns
                .iter()
                .position(|c| c.name == expectation.column)
                .ok_or_else(|| err(format!("column '{}' is not in columns", expectation.column)))?;
            let checks = checks(expectation, &spec.columns[column]).map_err(err)?;
            if checks.is_empty() {
                return Err(err(
                    "no rule: give min, max, one_of, matches, min_not_null_share or max_age_seconds"
                        .into(),
                ));
            }
            for (label, check) in checks {
                rules.push(Rule {
                    column,
                    column_name: expectation.column.clone(),
                    label,
                    check,
                    on_failure: expectation.on_failure,
                });
            }
        }
        let quarantine = quarantine_spec(spec);
        if let Some(quarantine) = &quarantine {
            if !is_identifier(&quarantine.name) {
                return Err(SpecError(format!(
                    "expectations: the quarantine group's name '{}' is too long; shorten the group's name",
                    quarantine.name
                )));
            }
            if spec.column(FAILED_EXPECTATIONS).is_some() {
                return Err(SpecError(format!(
                    "expectations: a group that quarantines cannot have a column named '{FAILED_EXPECTATIONS}' (its quarantine group adds it)"
                )));
            }
        }
        Ok(Some(Expectations {
            rules,
            quarantine_schema: quarantine.map(|q| q.arrow_schema()),
        }))
    }

    /// Checks a canonical batch of the group at wall-clock time `now_micros`.
    pub fn check(&self, batch: &RecordBatch, now_micros: i64) -> Result<Checked, Refused> {
        let rows = batch.num_rows();
        let mut results = Vec::with_capacity(self.rules.len());
        // Per row, the quarantining rules it broke (their indices).
        let mut broken: Vec<Vec<usize>> = Vec::new();
        for (r, rule) in self.rules.iter().enumerate() {
            let failed = rule.failures(batch.column(rule.column), now_micros);
            let count = failed.true_count();
            let first = failed.values().set_indices().next();
            let outcome = match (count, rule.on_failure) {
                (0, _) => Outcome::Passed,
                (_, OnFailure::Refuse) => Outcome::Refused,
                (_, OnFailure::Quarantine) => Outcome::Quarantined,
            };
            if outcome == Outcome::Quarantined {
                broken.resize_with(rows, Vec::new);
                for row in failed.values().set_indices() {
                    broken[row].push(r);
                }
            }
            results.push(RuleResult {
                column: rule.column_name.clone(),
                rule: rule.label.clone(),
                failed_rows: count as u64,
                first_failed_row: first.map(|row| row as u64),
                outcome,
            });
        }
        let quarantined_rows = broken.iter().filter(|labels| !labels.is_empty()).count();
        let mut report = ValidationReport {
            rows: rows as u64,
            accepted: (rows - quarantined_rows) as u64,
            quarantined: quarantined_rows as u64,
            results,
        };
        if let Some(message) = report.refusal() {
            report.accepted = 0;
            report.quarantined = 0;
            return Err(Refused { message, report });
        }
        if quarantined_rows == 0 {
            return Ok(Checked {
                accepted: batch.clone(),
                quarantined: None,
                report,
            });
        }
        let to_quarantine: BooleanArray = broken.iter().map(|l| Some(!l.is_empty())).collect();
        let accepted =
            compute::filter_record_batch(batch, &compute::not(&to_quarantine).expect("no nulls"))
                .expect("a mask of the batch's length");
        let kept = compute::filter_record_batch(batch, &to_quarantine)
            .expect("a mask of the batch's length");
        let reasons: StringArray = broken
            .iter()
            .filter(|labels| !labels.is_empty())
            .map(|labels| {
                let named: Vec<String> = labels
                    .iter()
                    .map(|&r| format!("{} {}", self.rules[r].column_name, self.rules[r].label))
                    .collect();
                Some(named.join("; "))
            })
            .collect();
        let mut columns: Vec<ArrayRef> = kept.columns().to_vec();
        columns.push(Arc::new(reasons));
        let schema = self.quarantine_schema.clone().expect("a rule quarantines");
        let quarantined = RecordBatch::try_new(schema, columns).expect("the quarantine schema");
        Ok(Checked {
            accepted,
            quarantined: Some(quarantined),
            report,
        })
    }
}

impl Rule {
    /// Which rows break the rule: true where one does, never null.
    fn failures(&self, values: &ArrayRef, now_micros: i64) -> BooleanArray {
        let rows = values.len();
        let valid = |row: usize| values.is_valid(row);
        match &self.check {
            Check::Min(min) => {
                let numbers = as_f64(values);
                (0..rows)
                    .map(|r| Some(valid(r) && below(numbers.value(r), *min)))
                    .collect()
            }
            Check::Max(max) => {
                let numbers = as_f64(values);
                (0..rows)
                    .map(|r| Some(valid(r) && below(*max, numbers.value(r))))
                    .collect()
            }
            Check::OneOf(Allowed::Strings(allowed)) => {
                let strings = values.as_string::<i32>();
                (0..rows)
                    .map(|r| Some(valid(r) && !allowed.contains(strings.value(r))))
                    .collect()
            }
            Check::OneOf(Allowed::Integers(allowed)) => {
                let integers = compute::cast(values, &DataType::Int64).expect("an integer column");
                let integers = integers.as_primitive::<Int64Type>();
                (0..rows)
                    .map(|r| Some(valid(r) && !allowed.contains(&integers.value(r))))
                    .collect()
            }
            Check::OneOf(Allowed::Bools(allowed)) => {
                let bools = values.as_boolean();
                (0..rows)
                    .map(|r| Some(valid(r) && !allowed.contains(&bools.value(r))))
                    .collect()
            }
            Check::Matches(pattern) => {
                let strings = values.as_string::<i32>();
                (0..rows)
                    .map(|r| Some(valid(r) && !pattern.is_match(strings.value(r))))
                    .collect()
            }
            Check::MinNotNullShare(share) => {
                let held = (rows - values.null_count()) as f64;
                let short = rows > 0 && held < share * rows as f64;
                (0..rows).map(|r| Some(short && !valid(r))).collect()
            }
            Check::MaxAge { micros } => {
                let oldest = now_micros.saturating_sub(*micros);
                let times = values.as_primitive::<TimestampMicrosecondType>();
                (0..rows)
                    .map(|r| Some(valid(r) && times.value(r) < oldest))
                    .collect()
            }
        }
    }
}

/// Whether `value` lies below `bound`, or is not comparable with it (NaN): a value that is no
/// number breaks every range.
fn below(value: f64, bound: f64) -> bool {
    !matches!(
        value.partial_cmp(&bound),
        Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
    )
}

/// A numeric column's values as f64 (integers past 2^53 round, as in any comparison with a
/// JSON number).
fn as_f64(values: &ArrayRef) -> arrow::array::PrimitiveArray<Float64Type> {
    compute::cast(values, &DataType::Float64)
        .expect("a numeric column")
        .as_primitive::<Float64Type>()
        .clone()
}

/// The checks one expectation declares, each with its label, after checking each suits the
/// column's type.
fn checks(expectation: &Expectation, column: &Column) -> Result<Vec<(String, Check)>, String> {
    let ty = column.ty;
    let mut checks = Vec::new();
    let numeric = |rule: &str| {
        if ty.is_numeric() {
            Ok(())
        } else {
            Err(format!(
                "{rule} needs a numeric column; '{}' is {ty}",
                column.name
            ))
        }
    };
    if let Some(min) = expectation.min {
        numeric("min")?;
        checks.push((format!("min {min}"), Check::Min(min)));
    }
    if let Some(max) = expectation.max {
        numeric("max")?;
        checks.push((format!("max {max}"), Check::Max(max)));
    }
    if let (Some(min), Some(max)) = (expectation.min, expectation.max)
        && min > max
    {
        return Err(format!("min {min} is above max {max}"));
    }
    if !expectation.one_of.is_empty() {
        let values = &expectation.one_of;
        if values.len() > MAX_ALLOWED_VALUES {
            return Err(format!(
                "one_of lists {} values; at most {MAX_ALLOWED_VALUES} are allowed",
                values.len()
            ));
        }
        let label = format!(
            "one_of {}",
            serde_json::to_string(values).expect("JSON values")
        );
        checks.push((label, Check::OneOf(allowed(values, column)?)));
    }
    if let Some(pattern) = &expectation.matches {
        if ty != FeatureType::String {
            return Err(format!(
                "matches needs a string column; '{}' is {ty}",
                column.name
            ));
        }
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "matches: the pattern is {} bytes; at most {MAX_PATTERN_BYTES} are allowed",
                pattern.len()
            ));
        }
        let compiled = regex::RegexBuilder::new(pattern)
            .size_limit(MAX_PATTERN_PROGRAM_BYTES)
            .build()
            .map_err(|e| format!("matches: {e}"))?;
        checks.push((format!("matches {pattern}"), Check::Matches(compiled)));
    }
    if let Some(share) = expectation.min_not_null_share {
        if !(0.0..=1.0).contains(&share) {
            return Err(format!("min_not_null_share is {share}; expected 0 to 1"));
        }
        if expectation.on_failure == OnFailure::Quarantine {
            return Err(
                "min_not_null_share is a rule of the batch, not of a row: it can only refuse"
                    .into(),
            );
        }
        checks.push((
            format!("min_not_null_share {share}"),
            Check::MinNotNullShare(share),
        ));
    }
    if let Some(seconds) = expectation.max_age_seconds {
        if ty != FeatureType::Timestamp {
            return Err(format!(
                "max_age_seconds needs a timestamp column; '{}' is {ty}",
                column.name
            ));
        }
        let micros = i64::try_from(seconds)
            .ok()
            .and_then(|s| s.checked_mul(1_000_000))
            .ok_or_else(|| format!("max_age_seconds {seconds} is too large"))?;
        checks.push((
            format!("max_age_seconds {seconds}"),
            Check::MaxAge { micros },
        ));
    }
    Ok(checks)
}

/// `one_of`'s values as a set of the column's type.
fn allowed(values: &[serde_json::Value], column: &Column) -> Result<Allowed, String> {
    let wrong = |value: &serde_json::Value| {
        format!(
            "one_of: {value} is not a value of '{}' ({})",
            column.name, column.ty
        )
    };
    match column.ty {
        FeatureType::String => values
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| wrong(v)))
            .collect::<Result<_, _>>()
            .map(Allowed::Strings),
        FeatureType::Int32 | FeatureType::Int64 => values
            .iter()
            .map(|v| {
                v.as_i64()
                    .filter(|n| column.ty == FeatureType::Int64 || i32::try_from(*n).is_ok())
                    .ok_or_else(|| wrong(v))
            })
            .collect::<Result<_, _>>()
            .map(Allowed::Integers),
        FeatureType::Bool => values
            .iter()
            .map(|v| v.as_bool().ok_or_else(|| wrong(v)))
            .collect::<Result<_, _>>()
            .map(Allowed::Bools),
        ty => Err(format!(
            "one_of needs a string, integer or bool column; '{}' is {ty}",
            column.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_700_000_000_000_000;

    fn spec(expectations: serde_json::Value) -> FeatureGroupSpec {
        serde_json::from_value(json!({
            "name": "payments",
            "columns": [
                {"name": "id", "type": "int64"},
                {"name": "ts", "type": "timestamp"},
                {"name": "amount", "type": "float64"},
                {"name": "country", "type": "string"},
                {"name": "email", "type": "string"},
            ],
            "primary_key": ["id"],
            "event_time": "ts",
            "expectations": expectations,
        }))
        .unwrap()
    }

    fn batch(spec: &FeatureGroupSpec, amounts: &[Option<f64>], ages_s: &[i64]) -> RecordBatch {
        let rows = amounts.len();
        let country: StringArray = (0..rows)
            .map(|i| Some(if i % 2 == 0 { "SE" } else { "NO" }))
            .collect();
        let email: StringArray = (0..rows)
            .map(|i| (i != 1).then(|| format!("user{i}@example.com")))
            .collect();
        RecordBatch::try_new(
            spec.clone().normalised().arrow_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows as i64)),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        ages_s.iter().map(|age| NOW - age * 1_000_000),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(amounts.to_vec())),
                Arc::new(country),
                Arc::new(email),
            ],
        )
        .unwrap()
    }

    fn compiled(spec: &FeatureGroupSpec) -> Expectations {
        spec.validate().unwrap();
        Expectations::compile(spec).unwrap().unwrap()
    }

    #[test]
    fn a_refusing_rule_refuses_the_batch_whole_naming_column_rule_and_row() {
        let spec = spec(json!([{"column": "amount", "min": 0, "max": 100}]));
        let rules = compiled(&spec);
        let ok = batch(&spec, &[Some(0.0), Some(100.0), None], &[0, 0, 0]);
        let checked = rules.check(&ok, NOW).unwrap();
        assert_eq!(checked.accepted.num_rows(), 3);
        assert!(checked.quarantined.is_none());
        assert!(
            checked
                .report
                .results
                .iter()
                .all(|r| r.outcome == Outcome::Passed)
        );

        let bad = batch(
            &spec,
            &[Some(5.0), Some(-1.0), Some(f64::NAN), Some(101.0)],
            &[0; 4],
        );
        let refused = rules.check(&bad, NOW).unwrap_err();
        assert_eq!(
            refused.message,
            "column 'amount': expectation 'min 0' failed for 2 of 4 rows, the first at row 1; \
             the batch is refused whole"
        );
        let failed: Vec<(&str, u64, Outcome)> = refused
            .report
            .results
            .iter()
            .map(|r| (r.rule.as_str(), r.failed_rows, r.outcome))
            .collect();
        assert_eq!(
            failed,
            [
                ("min 0", 2, Outcome::Refused),
                ("max 100", 2, Outcome::Refused)
            ]
        );
        assert_eq!(refused.report.accepted, 0);
    }

    #[test]
    fn quarantine_splits_the_batch_and_names_the_broken_rules_per_row() {
        let spec = spec(json!([
            {"column": "country", "one_of": ["SE"], "on_failure": "quarantine"},
            {"column": "email", "matches": "^[a-z0-9]+@example\\.com$", "on_failure": "quarantine"},
            {"column": "ts", "max_age_seconds": 60, "on_failure": "quarantine"},
        ]));
        let rules = compiled(&spec);
        // Rows 1 and 3 are from NO (row 1's email is null: that passes, a null is no value);
        // row 3 is exactly as old as allowed.
        let input = batch(&spec, &[Some(1.0); 4], &[0, 0, 0, 60]);
        let checked = rules.check(&input, NOW).unwrap();
        let report = &checked.report;
        assert_eq!(
            (report.rows, report.accepted, report.quarantined),
            (4, 2, 2)
        );
        let ids = |b: &RecordBatch| -> Vec<i64> {
            b.column(0).as_primitive::<Int64Type>().values().to_vec()
        };
        assert_eq!(ids(&checked.accepted), [0, 2]);
        let quarantined = checked.quarantined.unwrap();
        assert_eq!(ids(&quarantined), [1, 3]);
        assert_eq!(
            quarantined.schema().as_ref(),
            quarantine_spec(&spec).unwrap().arrow_schema().as_ref()
        );
        let reasons = quarantined
            .column_by_name(FAILED_EXPECTATIONS)
            .unwrap()
            .as_string::<i32>();
        assert_eq!(reasons.value(0), "country one_of [\"SE\"]");
        assert_eq!(reasons.value(1), "country one_of [\"SE\"]");
        // Row 2 is from SE but a second too old.
        let input = batch(&spec, &[Some(1.0); 3], &[0, 0, 61]);
        let quarantined = rules.check(&input, NOW).unwrap().quarantined.unwrap();
        assert_eq!(ids(&quarantined), [1, 2]);
        let reasons = quarantined.column_by_name(FAILED_EXPECTATIONS).unwrap();
        assert_eq!(reasons.as_string::<i32>().value(1), "ts max_age_seconds 60");
    }

    #[test]
    fn a_refusal_wins_over_quarantine() {
        let spec = spec(json!([
            {"column": "country", "one_of": ["SE"], "on_failure": "quarantine"},
            {"column": "email", "min_not_null_share": 0.9},
        ]));
        let rules = compiled(&spec);
        let refused = rules
            .check(&batch(&spec, &[None; 4], &[0; 4]), NOW)
            .unwrap_err();
        assert!(
            refused
                .message
                .contains("'min_not_null_share 0.9' failed for 1 of 4 rows")
        );
        let outcomes: Vec<Outcome> = refused.report.results.iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, [Outcome::Quarantined, Outcome::Refused]);
        // Ten rows with one null email hold a share of 0.9: the batch passes that rule.
        let checked = rules
            .check(&batch(&spec, &[None; 10], &[0; 10]), NOW)
            .unwrap();
        assert_eq!(checked.report.results[1].outcome, Outcome::Passed);
    }

    #[test]
    fn definitions_that_cannot_be_checked_are_refused() {
        let refused = |expectations: serde_json::Value| -> String {
            spec(expectations).validate().unwrap_err().0
        };
        assert!(
            refused(json!([{"column": "nope", "min": 1}])).contains("'nope' is not in columns")
        );
        assert!(refused(json!([{"column": "country", "min": 1}])).contains("numeric"));
        assert!(refused(json!([{"column": "amount"}])).contains("no rule"));
        assert!(refused(json!([{"column": "amount", "min": 2, "max": 1}])).contains("above max"));
        assert!(refused(json!([{"column": "amount", "matches": "x"}])).contains("string column"));
        assert!(refused(json!([{"column": "email", "matches": "("}])).contains("matches:"));
        assert!(
            refused(json!([{"column": "email", "matches": "a{1000}{1000}"}])).contains("matches:")
        );
        assert!(
            refused(json!([{"column": "id", "one_of": ["x"]}])).contains("\"x\" is not a value")
        );
        assert!(refused(json!([{"column": "ts", "one_of": [1]}])).contains("one_of needs"));
        assert!(refused(json!([{"column": "amount", "max_age_seconds": 1}])).contains("timestamp"));
        assert!(
            refused(json!([{"column": "email", "min_not_null_share": 1.5}])).contains("0 to 1")
        );
        assert!(
            refused(
                json!([{"column": "email", "min_not_null_share": 0.5, "on_failure": "quarantine"}])
            )
            .contains("can only refuse")
        );
        let unknown = serde_json::from_value::<Expectation>(json!({"column": "a", "mni": 1}));
        assert!(unknown.unwrap_err().to_string().contains("mni"));
        let mut long = spec(json!([{"column": "amount", "min": 0, "on_failure": "quarantine"}]));
        long.name = "g".repeat(120);
        assert!(long.validate().unwrap_err().0.contains("too long"));
    }
}
