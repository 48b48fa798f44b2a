//! Pipeline definitions: what a user writes (TOML or JSON) and its validation.
//!
//! A pipeline reads events from one source, keeps the rows its filter accepts, groups them by
//! key into event-time windows, aggregates each window and writes one row per window into a
//! feature group. [`PipelineSpec::plan`] checks a definition whole and turns it into the
//! [`Plan`] the engine runs.

use std::collections::HashSet;
use std::fmt;

use kairos_transform::expr::Expr;
use kairos_types::schema::is_identifier;
use kairos_types::{Column, FeatureGroupSpec, FeatureType, Format};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::agg::AggKind;
use crate::{Result, StreamError};

/// What a user writes to define a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub source: SourceSpec,
    /// The events' columns, keys and event time.
    pub input: InputSpec,
    /// Rows for which this boolean expression is false or null are dropped (a filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    pub window: WindowSpec,
    /// The aggregations, one output feature each (the projection).
    #[serde(default, alias = "features")]
    pub aggregations: Vec<AggregationSpec>,
    pub output: OutputSpec,
    /// How often operator state and source positions are checkpointed together, and the
    /// window rows written since the last checkpoint become visible (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<Duration>,
}

/// A stored pipeline definition: the spec at a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PipelineDef {
    #[serde(flatten)]
    pub spec: PipelineSpec,
    pub version: u32,
    pub created_at: String,
}

/// Where events come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// Replays a file (CSV, JSON lines or Parquet), as fast as it can or paced by event time.
    File {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<String>,
        /// Replays at this many times the speed the events happened at; as fast as possible
        /// when left out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        speed: Option<f64>,
    },
    /// Events `POST`ed to `/v1/streams/{stream}/events`, kept in the stream's durable log.
    Http {
        stream: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<String>,
    },
    /// An Apache Kafka topic, read in a consumer group; offsets are committed to Kafka only
    /// after the checkpoint that holds them.
    Kafka {
        /// `bootstrap.servers`.
        brokers: String,
        topic: String,
        /// The consumer group (default `kairos-<pipeline>`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<String>,
        /// More librdkafka consumer properties (security, timeouts), as Kafka names them.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        properties: std::collections::BTreeMap<String, String>,
    },
    /// The rows written to another feature group, so pipelines chain.
    FeatureGroup {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
    },
}

impl SourceSpec {
    /// The wire format of a source of raw events.
    pub fn format(&self) -> Result<Format> {
        let (named, fallback) = match self {
            SourceSpec::File { path, format, .. } => (format.as_deref(), path.as_str()),
            SourceSpec::Http { format, .. } | SourceSpec::Kafka { format, .. } => {
                (format.as_deref(), "jsonl")
            }
            SourceSpec::FeatureGroup { .. } => (None, "arrow"),
        };
        let name = named.unwrap_or(fallback);
        // A Kafka message is one event with no header line to name CSV columns by.
        if matches!(self, SourceSpec::Kafka { .. })
            && Format::from_name(name) != Some(Format::JsonLines)
        {
            return definition(format!(
                "source.format: a Kafka source reads one JSON object per message; '{name}' is not supported"
            ));
        }
        match Format::from_name(name) {
            Some(Format::ArrowIpc) if named.is_some() => definition(format!(
                "source.format: '{name}' is not a source format; expected csv, jsonl or parquet"
            )),
            Some(format) => Ok(format),
            None => definition(format!(
                "source.format: cannot tell the format of '{name}'; expected csv, jsonl or parquet"
            )),
        }
    }
}

/// The events' schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The key column(s) windows are grouped by; they become the output's primary key.
    #[serde(deserialize_with = "one_or_many")]
    pub key: Vec<String>,
    /// The event-time column.
    pub event_time: String,
    /// Every column the pipeline reads, with its type; other fields of an event are ignored.
    pub columns: Vec<Column>,
}

/// The window every key's events are grouped into, and how late events may be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    pub kind: WindowKindName,
    /// Tumbling and hopping windows: the window length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Duration>,
    /// Hopping windows: how often a window starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<Duration>,
    /// Session windows: the longest quiet time inside one session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Duration>,
    /// How far behind the greatest event time seen an event may arrive and still be on time:
    /// the watermark is the greatest event time seen minus this.
    #[serde(default, skip_serializing_if = "Duration::is_zero")]
    pub out_of_orderness: Duration,
    /// Events behind the watermark by up to this much still update their (closed) window,
    /// which is written again; later ones go to the dead-letter file.
    #[serde(default, skip_serializing_if = "Duration::is_zero")]
    pub allowed_lateness: Duration,
    /// Writes the windows still open every this much processing time, so features are fresh
    /// before a window closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_emit: Option<Duration>,
    /// A source partition without events for this much processing time stops holding the
    /// watermark back until its next event (a quiet Kafka partition would otherwise keep every
    /// window open). Its next events may then be late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

/// The kind of window, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WindowKindName {
    Tumbling,
    Hopping,
    Session,
}

/// The kinds of event-time window, with their lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Back-to-back windows of `size`.
    Tumbling { size: Duration },
    /// Windows of `size` starting every `slide` (`size` a multiple of `slide`).
    Hopping { size: Duration, slide: Duration },
    /// A key's events closer than `gap` to each other form one window.
    Session { gap: Duration },
}

impl WindowSpec {
    /// The window kind with the lengths it needs; an error names what is missing or extra.
    pub fn kind(&self) -> Result<WindowKind> {
        let (size, slide, gap) = (self.size, self.slide, self.gap);
        let needs = |what: &str| {
            StreamError::Definition(
                format!("window: a {:?} window needs {what}", self.kind).to_lowercase(),
            )
        };
        let extra = |what: &str| {
            Err(StreamError::Definition(
                format!("window: a {:?} window takes no {what}", self.kind).to_lowercase(),
            ))
        };
        match self.kind {
            WindowKindName::Tumbling => {
                if slide.is_some() || gap.is_some() {
                    return extra("slide or gap");
                }
                Ok(WindowKind::Tumbling {
                    size: size.ok_or_else(|| needs("size"))?,
                })
            }
            WindowKindName::Hopping => {
                if gap.is_some() {
                    return extra("gap");
                }
                Ok(WindowKind::Hopping {
                    size: size.ok_or_else(|| needs("size"))?,
                    slide: slide.ok_or_else(|| needs("slide"))?,
                })
            }
            WindowKindName::Session => {
                if size.is_some() || slide.is_some() {
                    return extra("size or slide");
                }
                Ok(WindowKind::Session {
                    gap: gap.ok_or_else(|| needs("gap"))?,
                })
            }
        }
    }
}

/// One aggregation, written as one output column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregationSpec {
    /// The output column.
    pub name: String,
    #[serde(rename = "agg", alias = "function")]
    pub kind: AggKind,
    /// The input column; not needed by `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// `last_n`: how many values to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// `approx_quantile`: which quantile, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<f64>,
}

/// Where the window rows go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The feature group; created from the pipeline's output schema if absent.
    pub feature_group: String,
    /// The output's event-time column, holding the window end (default `window_end`).
    #[serde(default = "default_window_end")]
    pub event_time: String,
    /// Whether a created group is online (default true).
    #[serde(default = "yes")]
    pub online: bool,
}

fn default_window_end() -> String {
    "window_end".into()
}

fn yes() -> bool {
    true
}

/// The name of the output column holding the window start.
pub const WINDOW_START: &str = "window_start";

/// A span of time, written `500ms`, `30s`, `10m`, `1h` or `1d`; held in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = String, example = "10m")]
pub struct Duration(pub i64);

impl Duration {
    pub fn micros(self) -> i64 {
        self.0
    }

    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_micros(self.0.max(0) as u64)
    }

    pub fn parse(text: &str) -> std::result::Result<Duration, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let number: f64 = number.parse().map_err(|_| {
            format!("'{text}' is not a duration; expected e.g. 500ms, 30s, 10m, 1h, 1d")
        })?;
        let scale = match unit.trim() {
            "us" => 1.0,
            "ms" => 1e3,
            "s" => 1e6,
            "m" | "min" => 60e6,
            "h" => 3600e6,
            "d" => 86_400e6,
            _ => {
                return Err(format!(
                    "'{text}' has no known unit; expected one of us, ms, s, m, h, d"
                ));
            }
        };
        Ok(Duration((number * scale).round() as i64))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        for (unit, scale) in [
            ("d", 86_400_000_000),
            ("h", 3_600_000_000),
            ("m", 60_000_000),
        ] {
            if us != 0 && us % scale == 0 {
                return write!(f, "{}{unit}", us / scale);
            }
        }
        if us % 1_000_000 == 0 {
            write!(f, "{}s", us / 1_000_000)
        } else if us % 1000 == 0 {
            write!(f, "{}ms", us / 1000)
        } else {
            write!(f, "{us}us")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The most windows one event may update (a hopping window's size ÷ slide).
pub const MAX_WINDOWS_PER_EVENT: i64 = 1000;
/// The shortest early emission: more often would write rows as fast as a core can.
const MIN_EARLY_EMIT_MICROS: i64 = 10_000;

fn definition<T>(message: String) -> Result<T> {
    Err(StreamError::Definition(message))
}

/// One aggregation, checked: its input column's index and type in the input schema.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedAgg {
    pub name: String,
    pub kind: AggKind,
    /// Index of the input column in [`Plan::input`]; `None` for `count`.
    pub input: Option<usize>,
    pub input_type: Option<FeatureType>,
    pub n: usize,
    pub q: f64,
    pub output_type: FeatureType,
}

/// A checked pipeline: everything the engine and the runtime need.
#[derive(Debug, Clone)]
pub struct Plan {
    pub spec: PipelineSpec,
    pub format: Format,
    /// The events' schema as a feature-group spec, so events are parsed and validated by the
    /// same code as inserts (keys and event time required, types checked).
    pub input: FeatureGroupSpec,
    pub key_indices: Vec<usize>,
    pub event_time_index: usize,
    pub filter: Option<Expr>,
    pub window: WindowKind,
    pub out_of_orderness: i64,
    pub allowed_lateness: i64,
    pub early_emit: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub checkpoint_interval: Duration,
    pub aggs: Vec<PlannedAgg>,
    /// The output feature group's spec: keys, window start, window end (event time), features.
    pub output: FeatureGroupSpec,
}

impl PipelineSpec {
    /// Parses a definition: JSON when `file_name` ends in `.json`, TOML otherwise.
    pub fn parse(file_name: &str, text: &str) -> Result<PipelineSpec> {
        let parsed = if file_name.ends_with(".json") {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else {
            toml::from_str(text).map_err(|e| e.to_string())
        };
        parsed.map_err(|e| StreamError::Definition(format!("{file_name}: {e}")))
    }

    /// Checks the definition whole; the error names the part and what was expected.
    pub fn plan(&self) -> Result<Plan> {
        if !is_identifier(&self.name) {
            return definition(format!(
                "name '{}' must be 1-128 characters of letters, digits, '_' or '-', starting with a letter",
                self.name
            ));
        }
        let format = self.source.format()?;
        if let SourceSpec::File { speed: Some(s), .. } = &self.source
            && !(s.is_finite() && *s > 0.0)
        {
            return definition(format!("source.speed: {s} must be a positive number"));
        }
        let input = FeatureGroupSpec {
            name: format!("{}_input", self.name),
            description: String::new(),
            columns: self.input.columns.clone(),
            primary_key: self.input.key.clone(),
            event_time: self.input.event_time.clone(),
            online: false,
            ttl_seconds: None,
            vector_index: None,
            expectations: Vec::new(),
        };
        input
            .validate()
            .map_err(|e| StreamError::Definition(format!("input: {}", e.0)))?;
        let key_indices = input.key_indices();
        let event_time_index = input.event_time_index();
        let column_of = |name: &str, what: &str| {
            input
                .columns
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| {
                    StreamError::Definition(format!(
                        "{what}: '{name}' is not an input column; the input columns are: {}",
                        names(&input.columns)
                    ))
                })
        };
        let filter = match &self.filter {
            None => None,
            Some(text) => {
                let expr = Expr::parse(text)
                    .map_err(|e| StreamError::Definition(format!("filter: {e}")))?;
                for c in expr.columns() {
                    let i = column_of(&c, "filter")?;
                    if !input.columns[i].ty.is_numeric() {
                        return definition(format!(
                            "filter: column '{c}' is {}, but expressions read numbers",
                            input.columns[i].ty
                        ));
                    }
                }
                Some(expr)
            }
        };
        let window = self.window.kind()?;
        match window {
            WindowKind::Tumbling { size } if size.0 <= 0 => {
                return definition("window.size must be positive".into());
            }
            WindowKind::Hopping { size, slide } => {
                if slide.0 <= 0 || size.0 <= 0 {
                    return definition("window.size and window.slide must be positive".into());
                }
                if size.0 % slide.0 != 0 {
                    return definition(format!(
                        "window.size {size} must be a whole multiple of window.slide {slide}"
                    ));
                }
                // Every event updates size ÷ slide windows: that is the pipeline's cost per
                // event, and it must have a bound.
                if size.0 / slide.0 > MAX_WINDOWS_PER_EVENT {
                    return definition(format!(
                        "window.size {size} over window.slide {slide} puts every event in {} \
                         windows; at most {MAX_WINDOWS_PER_EVENT} are allowed",
                        size.0 / slide.0
                    ));
                }
            }
            WindowKind::Session { gap } if gap.0 <= 0 => {
                return definition("window.gap must be positive".into());
            }
            _ => {}
        }
        if self.window.out_of_orderness.0 < 0 || self.window.allowed_lateness.0 < 0 {
            return definition(
                "window.out_of_orderness and window.allowed_lateness must not be negative".into(),
            );
        }
        if self
            .window
            .early_emit
            .is_some_and(|d| d.0 < MIN_EARLY_EMIT_MICROS)
        {
            return definition("window.early_emit must be at least 10ms".into());
        }
        if self.window.idle_timeout.is_some_and(|d| d.0 <= 0) {
            return definition("window.idle_timeout must be positive".into());
        }
        if self.aggregations.is_empty() {
            return definition("aggregations: at least one aggregation is required".into());
        }
        let out = &self.output;
        let mut taken: HashSet<&str> = self.input.key.iter().map(String::as_str).collect();
        taken.insert(WINDOW_START);
        if !taken.insert(out.event_time.as_str()) {
            return definition(format!(
                "output.event_time: '{}' clashes with a key column or '{WINDOW_START}'",
                out.event_time
            ));
        }
        let mut aggs = Vec::with_capacity(self.aggregations.len());
        for (i, a) in self.aggregations.iter().enumerate() {
            let at = format!("aggregations[{i}] ('{}')", a.name);
            if !is_identifier(&a.name) {
                return definition(format!("{at}: not a valid column name"));
            }
            if !taken.insert(a.name.as_str()) {
                return definition(format!(
                    "{at}: the output already has a column of that name"
                ));
            }
            let (input_index, input_type) = match (&a.column, a.kind) {
                (None, AggKind::Count) => (None, None),
                (None, kind) => {
                    return definition(format!("{at}: {kind} needs an input column"));
                }
                (Some(c), _) => {
                    let i = column_of(c, &at)?;
                    (Some(i), Some(input.columns[i].ty))
                }
            };
            let output_type = a
                .kind
                .output_type(input_type)
                .map_err(|e| StreamError::Definition(format!("{at}: {e}")))?;
            let n = match (a.kind, a.n) {
                (AggKind::LastN, Some(n)) if (1..=1024).contains(&n) => n as usize,
                (AggKind::LastN, _) => {
                    return definition(format!("{at}: last_n needs n, from 1 to 1024"));
                }
                (_, Some(_)) => return definition(format!("{at}: only last_n takes n")),
                (_, None) => 0,
            };
            let q = match (a.kind, a.q) {
                (AggKind::ApproxQuantile, Some(q)) if (0.0..=1.0).contains(&q) => q,
                (AggKind::ApproxQuantile, _) => {
                    return definition(format!("{at}: approx_quantile needs q, from 0 to 1"));
                }
                (_, Some(_)) => return definition(format!("{at}: only approx_quantile takes q")),
                (_, None) => 0.0,
            };
            aggs.push(PlannedAgg {
                name: a.name.clone(),
                kind: a.kind,
                input: input_index,
                input_type,
                n,
                q,
                output_type: if a.kind == AggKind::LastN {
                    FeatureType::Embedding { dim: n as u32 }
                } else {
                    output_type
                },
            });
        }
        let mut columns: Vec<Column> = key_indices
            .iter()
            .map(|&i| input.columns[i].clone().required())
            .collect();
        columns.push(Column::new(WINDOW_START, FeatureType::Timestamp));
        columns.push(Column::new(out.event_time.clone(), FeatureType::Timestamp).required());
        columns.extend(
            aggs.iter()
                .map(|a| Column::new(a.name.clone(), a.output_type)),
        );
        let output = FeatureGroupSpec {
            name: out.feature_group.clone(),
            description: format!("Written by pipeline '{}'.", self.name),
            columns,
            primary_key: self.input.key.clone(),
            event_time: out.event_time.clone(),
            online: out.online,
            ttl_seconds: None,
            vector_index: None,
            expectations: Vec::new(),
        };
        output
            .validate()
            .map_err(|e| StreamError::Definition(format!("output: {}", e.0)))?;
        Ok(Plan {
            spec: self.clone(),
            format,
            input,
            key_indices,
            event_time_index,
            filter,
            window,
            out_of_orderness: self.window.out_of_orderness.0,
            allowed_lateness: self.window.allowed_lateness.0,
            early_emit: self.window.early_emit,
            idle_timeout: self.window.idle_timeout,
            checkpoint_interval: self
                .checkpoint_interval
                .unwrap_or(Duration(1_000_000))
                .max(Duration(1_000)),
            aggs,
            output,
        })
    }
}

fn names(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
