//! On-demand features: computed when a vector is asked for, from request-time values and stored
//! features, by the same vectorised code for training datasets and online vectors.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int32Array};
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use kairos_types::FeatureType;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::expr::{Expr, as_f64, finite};
use crate::{Result, TransformError, definition};

const MICROS_PER_SECOND: f64 = 1e6;
const MICROS_PER_HOUR: i64 = 3_600_000_000;
const MICROS_PER_DAY: i64 = 86_400_000_000;
/// The mean Earth radius used by the haversine distance, in kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0;

/// An on-demand feature as written in a feature-view definition: either a `function` over
/// `inputs`, or an `expression`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OnDemandSpec {
    /// The output column's name.
    pub name: String,
    /// `haversine` (lat, lon, lat2, lon2 in degrees → km), `seconds_since` (a timestamp → seconds
    /// before the row's event time; or two timestamps), `hour_of_day`, `day_of_week` (Monday = 0),
    /// `log1p`, `bucketize` (with `boundaries`), or a registered user function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// An arithmetic expression over numeric columns, e.g. `amount / avg_amount_1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// Ascending bucket boundaries for `bucketize`: bucket i holds boundaries[i-1] <= x < boundaries[i].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boundaries: Vec<f64>,
    /// A Python function (`function` names it in its source), stored with the view version so
    /// the view never changes behaviour: what runs is this source, wherever it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonUdf>,
}

/// A Python user-defined function as a view stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PythonUdf {
    /// The module source that defines the function.
    pub source: String,
    /// SHA-256 of `source`, hex: checked when the view is compiled, so a stored definition
    /// edited by hand is refused rather than run.
    pub sha256: String,
    /// `vectorized` (whole columns in, as numpy arrays) or `row` (one call per row).
    pub mode: UdfMode,
    /// The output column's type.
    #[schema(value_type = String, example = "float64")]
    pub returns: FeatureType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UdfMode {
    Vectorized,
    Row,
}

impl PythonUdf {
    /// The SHA-256 of a source, as `sha256` holds it.
    pub fn digest(source: &str) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(source.as_bytes()))
    }
}

/// What runs Python user-defined functions in this process: the Python SDK's interpreter
/// (embedded), or a server's pool of Python workers. A process with none refuses a view that
/// calls one, naming it.
pub trait PythonHost: Send + Sync + fmt::Debug {
    /// The function `name` of `udf`'s source, ready to call on columns.
    fn load(&self, name: &str, udf: &PythonUdf, arity: usize) -> Result<Box<UserFn>>;
}

/// The signature of a user-registered function: input columns in, one column out, as many rows.
pub type UserFn = dyn Fn(&[ArrayRef]) -> Result<ArrayRef> + Send + Sync;

/// A Rust function registered under a name, usable as an on-demand feature.
pub struct UserFunction {
    pub name: String,
    pub arity: usize,
    pub output: FeatureType,
    pub function: Box<UserFn>,
}

impl fmt::Debug for UserFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserFunction")
            .field("name", &self.name)
            .field("arity", &self.arity)
            .field("output", &self.output)
            .finish()
    }
}

/// The user functions on-demand features may call by name. Cheap to clone; clones share.
#[derive(Debug, Clone, Default)]
pub struct FunctionRegistry {
    functions: Arc<RwLock<HashMap<String, Arc<UserFunction>>>>,
    python: Arc<RwLock<Option<Arc<dyn PythonHost>>>>,
}

impl FunctionRegistry {
    /// Registers `function`; a built-in name cannot be taken, a user name can be replaced.
    pub fn register(&self, function: UserFunction) -> Result<()> {
        if Builtin::parse(&function.name).is_some() {
            return definition(format!(
                "'{}' is a built-in function and cannot be registered",
                function.name
            ));
        }
        self.functions
            .write()
            .expect("registry lock")
            .insert(function.name.clone(), Arc::new(function));
        Ok(())
    }

    /// Runs views' Python functions on `host` from now on.
    pub fn set_python_host(&self, host: Arc<dyn PythonHost>) {
        *self.python.write().expect("registry lock") = Some(host);
    }

    /// `udf` loaded on this process's Python host, as a function of `arity` columns.
    fn python(&self, name: &str, udf: &PythonUdf, arity: usize) -> Result<Arc<UserFunction>> {
        if PythonUdf::digest(&udf.source) != udf.sha256 {
            return definition(format!(
                "Python function '{name}': its source does not match its SHA-256 {}; the \
                 stored definition was changed",
                udf.sha256
            ));
        }
        let host = self.python.read().expect("registry lock").clone();
        let Some(host) = host else {
            return definition(format!(
                "'{name}' is a Python function, and this process runs no Python: use it from \
                 the Python SDK, or through a server with Python workers"
            ));
        };
        Ok(Arc::new(UserFunction {
            name: name.to_string(),
            arity,
            output: udf.returns,
            function: host.load(name, udf, arity)?,
        }))
    }

    fn get(&self, name: &str) -> Option<Arc<UserFunction>> {
        self.functions
            .read()
            .expect("registry lock")
            .get(name)
            .cloned()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    Haversine,
    SecondsSince,
    HourOfDay,
    DayOfWeek,
    Log1p,
    Bucketize,
}

impl Builtin {
    fn parse(name: &str) -> Option<Builtin> {
        Some(match name {
            "haversine" => Builtin::Haversine,
            "seconds_since" => Builtin::SecondsSince,
            "hour_of_day" => Builtin::HourOfDay,
            "day_of_week" => Builtin::DayOfWeek,
            "log1p" => Builtin::Log1p,
            "bucketize" => Builtin::Bucketize,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Builtin(Builtin),
    Expression(Expr),
    User(Arc<UserFunction>),
}

/// A compiled on-demand feature.
#[derive(Debug, Clone)]
pub struct OnDemand {
    name: String,
    kind: Kind,
    inputs: Vec<String>,
    boundaries: Vec<f64>,
}

impl OnDemand {
    /// Compiles `spec`. `event_time` names the column holding each row's time, which
    /// `seconds_since` with one input measures against.
    pub fn compile(
        spec: &OnDemandSpec,
        registry: &FunctionRegistry,
        event_time: &str,
    ) -> Result<OnDemand> {
        let here = |m: String| {
            TransformError::Definition(format!("on-demand feature '{}': {m}", spec.name))
        };
        let (kind, inputs) = match (&spec.function, &spec.expression) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(here(
                    "give exactly one of 'function' and 'expression'".into(),
                ));
            }
            (None, Some(text)) => {
                let expr = Expr::parse(text).map_err(|e| here(e.to_string()))?;
                let inputs = expr.columns();
                (Kind::Expression(expr), inputs)
            }
            (Some(name), None) => {
                let kind = match (&spec.python, Builtin::parse(name)) {
                    (Some(udf), _) => Kind::User(
                        registry
                            .python(name, udf, spec.inputs.len())
                            .map_err(|e| here(e.to_string()))?,
                    ),
                    (None, Some(b)) => Kind::Builtin(b),
                    (None, None) => Kind::User(registry.get(name).ok_or_else(|| {
                        here(format!(
                            "unknown function '{name}'; built in: haversine, seconds_since, hour_of_day, \
                             day_of_week, log1p, bucketize; or register a Rust function"
                        ))
                    })?),
                };
                let mut inputs = spec.inputs.clone();
                if kind_is(&kind, Builtin::SecondsSince) && inputs.len() == 1 {
                    inputs.push(event_time.to_string());
                }
                let arity = match &kind {
                    Kind::Builtin(Builtin::Haversine) => 4,
                    Kind::Builtin(Builtin::SecondsSince) => 2,
                    Kind::Builtin(_) => 1,
                    Kind::User(f) => f.arity,
                    Kind::Expression(_) => unreachable!("functions only"),
                };
                if inputs.len() != arity {
                    return Err(here(format!(
                        "function '{name}' takes {arity} input(s), got {}",
                        spec.inputs.len()
                    )));
                }
                (kind, inputs)
            }
        };
        if kind_is(&kind, Builtin::Bucketize)
            && (spec.boundaries.is_empty() || spec.boundaries.windows(2).any(|w| w[0] >= w[1]))
        {
            return Err(here(
                "bucketize needs 'boundaries' in strictly ascending order".into(),
            ));
        }
        Ok(OnDemand {
            name: spec.name.clone(),
            kind,
            inputs,
            boundaries: spec.boundaries.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The columns this feature reads, in argument order.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// The type of the output column.
    pub fn output_type(&self) -> FeatureType {
        match &self.kind {
            Kind::Builtin(Builtin::HourOfDay | Builtin::DayOfWeek | Builtin::Bucketize) => {
                FeatureType::Int32
            }
            Kind::Builtin(_) | Kind::Expression(_) => FeatureType::Float64,
            Kind::User(f) => f.output,
        }
    }

    /// Checks the input columns' types; the error names the input and what was expected.
    pub fn check_inputs(&self, types: &[FeatureType]) -> Result<()> {
        let numeric = |t: FeatureType| {
            matches!(
                t,
                FeatureType::Int32
                    | FeatureType::Int64
                    | FeatureType::Float32
                    | FeatureType::Float64
            )
        };
        for (input, ty) in self.inputs.iter().zip(types) {
            let ok = match &self.kind {
                Kind::Builtin(Builtin::SecondsSince | Builtin::HourOfDay | Builtin::DayOfWeek) => {
                    *ty == FeatureType::Timestamp
                }
                Kind::Builtin(_) | Kind::Expression(_) => numeric(*ty),
                Kind::User(_) => true,
            };
            if !ok {
                let expected = match &self.kind {
                    Kind::Builtin(
                        Builtin::SecondsSince | Builtin::HourOfDay | Builtin::DayOfWeek,
                    ) => "timestamp",
                    _ => "a number",
                };
                return definition(format!(
                    "on-demand feature '{}': input '{input}' has type {ty}, expected {expected}",
                    self.name
                ));
            }
        }
        Ok(())
    }

    /// Computes the feature for every row of `batch`, which holds the inputs by name.
    pub fn eval(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        let column = |name: &str| {
            batch.column_by_name(name).cloned().ok_or_else(|| {
                TransformError::Definition(format!(
                    "on-demand feature '{}': input column '{name}' is missing",
                    self.name
                ))
            })
        };
        let f64_input = |i: usize| as_f64(&self.inputs[i], &column(&self.inputs[i])?);
        let out: ArrayRef = match &self.kind {
            Kind::Expression(expr) => expr.eval(batch)?,
            Kind::Builtin(Builtin::Haversine) => {
                let (lat1, lon1, lat2, lon2) =
                    (f64_input(0)?, f64_input(1)?, f64_input(2)?, f64_input(3)?);
                let out: Float64Array = (0..batch.num_rows())
                    .map(|i| {
                        let get = |a: &Float64Array| a.is_valid(i).then(|| a.value(i));
                        Some(haversine_km(
                            get(&lat1)?,
                            get(&lon1)?,
                            get(&lat2)?,
                            get(&lon2)?,
                        ))
                        .and_then(finite)
                    })
                    .collect();
                Arc::new(out)
            }
            Kind::Builtin(Builtin::SecondsSince) => {
                let (from, to) = (column(&self.inputs[0])?, column(&self.inputs[1])?);
                let (from, to) = (
                    micros(&self.inputs[0], &from)?,
                    micros(&self.inputs[1], &to)?,
                );
                let out: Float64Array = from
                    .iter()
                    .zip(to.iter())
                    .map(|(a, b)| Some((b? - a?) as f64 / MICROS_PER_SECOND))
                    .collect();
                Arc::new(out)
            }
            Kind::Builtin(Builtin::HourOfDay) => {
                let ts = micros(&self.inputs[0], &column(&self.inputs[0])?)?;
                let out: Int32Array = ts
                    .iter()
                    .map(|t| t.map(|t| (t.rem_euclid(MICROS_PER_DAY) / MICROS_PER_HOUR) as i32))
                    .collect();
                Arc::new(out)
            }
            Kind::Builtin(Builtin::DayOfWeek) => {
                let ts = micros(&self.inputs[0], &column(&self.inputs[0])?)?;
                // 1970-01-01 was a Thursday (3 when Monday is 0).
                let out: Int32Array = ts
                    .iter()
                    .map(|t| t.map(|t| (t.div_euclid(MICROS_PER_DAY) + 3).rem_euclid(7) as i32))
                    .collect();
                Arc::new(out)
            }
            Kind::Builtin(Builtin::Log1p) => {
                Arc::new(crate::expr::unary(&f64_input(0)?, f64::ln_1p))
            }
            Kind::Builtin(Builtin::Bucketize) => {
                let x = f64_input(0)?;
                let out: Int32Array = x
                    .iter()
                    .map(|v| {
                        v.filter(|v| v.is_finite())
                            .map(|v| self.boundaries.partition_point(|b| *b <= v) as i32)
                    })
                    .collect();
                Arc::new(out)
            }
            Kind::User(f) => {
                let args = self
                    .inputs
                    .iter()
                    .map(|n| column(n))
                    .collect::<Result<Vec<_>>>()?;
                let out = (f.function)(&args)?;
                if out.len() != batch.num_rows() || out.data_type() != &f.output.arrow_type() {
                    return Err(TransformError::Value(format!(
                        "function '{}' returned {} rows of {}, expected {} rows of {}",
                        f.name,
                        out.len(),
                        out.data_type(),
                        batch.num_rows(),
                        f.output.arrow_type()
                    )));
                }
                out
            }
        };
        Ok(out)
    }
}

fn kind_is(kind: &Kind, builtin: Builtin) -> bool {
    matches!(kind, Kind::Builtin(b) if *b == builtin)
}

fn micros(name: &str, column: &ArrayRef) -> Result<arrow::array::TimestampMicrosecondArray> {
    match column.data_type() {
        DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, _) => {
            Ok(column.as_primitive::<TimestampMicrosecondType>().clone())
        }
        other => definition(format!(
            "column '{name}' has type {other}, expected timestamp"
        )),
    }
}

/// The great-circle distance between two points given in degrees, in kilometres.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dlat = p2 - p1;
    let dlon = (lon2 - lon1).to_radians();
    let a = (dlat / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMicrosecondArray;
    use arrow::datatypes::{Field, Schema, TimeUnit};

    fn spec(function: &str, inputs: &[&str]) -> OnDemandSpec {
        OnDemandSpec {
            name: "out".into(),
            function: Some(function.into()),
            expression: None,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            boundaries: vec![],
            python: None,
        }
    }

    fn batch() -> RecordBatch {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("lat", DataType::Float64, true),
                Field::new("lon", DataType::Float64, true),
                Field::new("lat2", DataType::Float64, true),
                Field::new("lon2", DataType::Float64, true),
                Field::new("prev", ts.clone(), true),
                Field::new("ts", ts, false),
            ])),
            vec![
                // Stockholm → Gothenburg, and a null.
                Arc::new(Float64Array::from(vec![Some(59.3293), None])),
                Arc::new(Float64Array::from(vec![18.0686, 0.0])),
                Arc::new(Float64Array::from(vec![57.7089, 0.0])),
                Arc::new(Float64Array::from(vec![11.9746, 0.0])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1_714_521_600_000_000), None])
                        .with_timezone("UTC"),
                ),
                // 2024-05-01T10:30:00Z, a Wednesday.
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        1_714_559_400_000_000,
                        1_714_559_400_000_000,
                    ])
                    .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    fn eval(spec: &OnDemandSpec) -> ArrayRef {
        OnDemand::compile(spec, &FunctionRegistry::default(), "ts")
            .unwrap()
            .eval(&batch())
            .unwrap()
    }

    #[test]
    fn builtins_compute_what_they_say() {
        let km = eval(&spec("haversine", &["lat", "lon", "lat2", "lon2"]));
        let km = km.as_primitive::<arrow::datatypes::Float64Type>();
        assert!((km.value(0) - 398.0).abs() < 2.0, "{}", km.value(0));
        assert!(km.is_null(1));
        let secs = eval(&spec("seconds_since", &["prev"]));
        assert_eq!(
            secs.as_primitive::<arrow::datatypes::Float64Type>()
                .value(0),
            37_800.0
        );
        assert!(secs.is_null(1));
        let hour = eval(&spec("hour_of_day", &["ts"]));
        assert_eq!(
            hour.as_primitive::<arrow::datatypes::Int32Type>().value(0),
            10
        );
        let dow = eval(&spec("day_of_week", &["ts"]));
        assert_eq!(
            dow.as_primitive::<arrow::datatypes::Int32Type>().value(0),
            2
        );
        let mut b = spec("bucketize", &["lat"]);
        b.boundaries = vec![0.0, 50.0, 59.3293, 70.0];
        let buckets = eval(&b);
        assert_eq!(
            buckets
                .as_primitive::<arrow::datatypes::Int32Type>()
                .value(0),
            3
        );
    }

    #[test]
    fn bad_definitions_are_refused_with_a_reason() {
        let registry = FunctionRegistry::default();
        let err = OnDemand::compile(&spec("nope", &["lat"]), &registry, "ts").unwrap_err();
        assert!(err.to_string().contains("unknown function 'nope'"));
        let err = OnDemand::compile(&spec("haversine", &["lat"]), &registry, "ts").unwrap_err();
        assert!(err.to_string().contains("takes 4"));
        let err = OnDemand::compile(&spec("bucketize", &["lat"]), &registry, "ts").unwrap_err();
        assert!(err.to_string().contains("boundaries"));
        let f = OnDemand::compile(&spec("hour_of_day", &["lat"]), &registry, "ts").unwrap();
        let err = f.check_inputs(&[FeatureType::Float64]).unwrap_err();
        assert!(err.to_string().contains("expected timestamp"));
    }

    #[test]
    fn user_functions_run_by_name() {
        let registry = FunctionRegistry::default();
        registry
            .register(UserFunction {
                name: "double".into(),
                arity: 1,
                output: FeatureType::Float64,
                function: Box::new(|args| {
                    let x = as_f64("x", &args[0])?;
                    Ok(Arc::new(crate::expr::unary(&x, |v| v * 2.0)) as ArrayRef)
                }),
            })
            .unwrap();
        let f = OnDemand::compile(&spec("double", &["lat2"]), &registry, "ts").unwrap();
        let out = f.eval(&batch()).unwrap();
        assert_eq!(
            out.as_primitive::<arrow::datatypes::Float64Type>().value(0),
            57.7089 * 2.0
        );
        assert!(
            registry
                .register(UserFunction {
                    name: "haversine".into(),
                    arity: 1,
                    output: FeatureType::Float64,
                    function: Box::new(|args| Ok(args[0].clone())),
                })
                .is_err()
        );
    }
}
