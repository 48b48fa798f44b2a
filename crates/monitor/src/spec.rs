//! A monitor's definition: which deployment, what to watch (its model's features, its
//! predictions, its quality once labels arrive), against which reference, over which window,
//! how often, with which thresholds, whom to tell, and when to retrain. Written in TOML or
//! JSON, checked whole; the error names the field.

use kairos_stream::spec::Duration;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::detectors::DetectorSpec;
use crate::drift::DriftOptions;

/// A monitor as applied: everything but its version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    pub name: String,
    /// The deployment whose inference log is watched.
    pub deployment: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The model features watched for drift; every feature of the live model when empty.
    #[serde(default)]
    pub features: Vec<String>,
    /// Features left out of the watched set, e.g. the hour of day, which a window shorter
    /// than a day never matches against the whole training set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Whether the predictions' distribution and positive rate are watched too.
    #[serde(default = "yes")]
    pub predictions: bool,
    /// What the current window is compared with.
    #[serde(default)]
    pub reference: Reference,
    /// The current window: the predictions logged in this span before the run.
    #[serde(with = "duration")]
    #[schema(value_type = String, example = "1h")]
    pub window: Duration,
    /// How often a running server evaluates the monitor; only on request when absent.
    #[serde(
        default,
        with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "10m")]
    pub schedule: Option<Duration>,
    /// Fewer logged predictions than this in the window give no drift verdict.
    #[serde(default = "default_min_rows")]
    pub min_rows: usize,
    /// How drift is decided (Evidently's defaults).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub drift: DriftOptions,
    /// Where late labels come from, and what their metrics must stay within.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<LabelSource>,
    /// Who hears of an alert besides the log.
    #[serde(default)]
    pub alert: AlertSpec,
    /// Retrain, evaluate and maybe promote a challenger on an alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrain: Option<RetrainPolicy>,
}

/// The sample the current window is compared with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reference {
    /// The train split of the live model's training dataset, as the model saw it (transformed).
    #[default]
    TrainingDataset,
    /// The logged predictions of the window of the same length that ended `before` earlier.
    Logs {
        #[serde(with = "duration")]
        #[schema(value_type = String, example = "1d")]
        before: Duration,
    },
}

/// A feature group of late labels, joined to the logged predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelSource {
    pub group: String,
    /// The label column (1 or true: positive).
    pub label: String,
    /// The inference-log column the group's primary key matches: `request_id` (clients send
    /// the event's id as the request id), or the deployment's entity key.
    #[serde(default = "default_join")]
    pub join_on: String,
    /// Alert when the window's PR-AUC over labelled predictions falls below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_pr_auc: Option<f64>,
    /// Alert when the window's recall falls below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_recall: Option<f64>,
    /// Alert when the window's precision falls below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_precision: Option<f64>,
    /// Fewer labelled predictions than this give no quality verdict.
    #[serde(default = "default_min_labelled")]
    pub min_labelled: usize,
    /// The concept-drift detector run over the window's errors in time order.
    #[serde(default = "default_detector")]
    #[schema(value_type = Object)]
    pub detector: DetectorSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertSpec {
    /// An HTTP(S) URL that each alert is POSTed to as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// When and how a challenger replaces the live model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrainPolicy {
    /// Retrain when a run raises an alert.
    #[serde(default = "yes")]
    pub on_alert: bool,
    /// Labels may arrive this long after their event: fresh training data ends this long
    /// before the latest label known.
    #[serde(with = "duration")]
    #[schema(value_type = String, example = "4d")]
    pub label_maturity: Duration,
    /// The latest labelled window both models are scored on: the last span of the fresh
    /// training data, which neither trained on; the span before it validates the challenger,
    /// everything earlier trains it.
    #[serde(default = "default_evaluation_window", with = "duration")]
    #[schema(value_type = String, example = "1d")]
    pub evaluation_window: Duration,
    /// The challenger is promoted only when its metric beats the champion's by this much.
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// What the two are compared on, over the latest labelled period.
    #[serde(default)]
    pub metric: RetrainMetric,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetrainMetric {
    #[default]
    PrAuc,
    RocAuc,
}

fn yes() -> bool {
    true
}
fn default_min_rows() -> usize {
    100
}
fn default_min_labelled() -> usize {
    50
}
fn default_join() -> String {
    "request_id".into()
}
fn default_detector() -> DetectorSpec {
    DetectorSpec::Ddm(Default::default())
}
fn default_evaluation_window() -> Duration {
    Duration(86_400_000_000)
}
fn default_margin() -> f64 {
    0.01
}

mod duration {
    use kairos_stream::spec::Duration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

mod optional_duration {
    use kairos_stream::spec::Duration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&d.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| Duration::parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl MonitorSpec {
    /// Reads a definition written as JSON (an object) or TOML.
    pub fn parse(text: &str) -> Result<MonitorSpec, String> {
        let spec: MonitorSpec = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("not a monitor definition: {e}"))?
        } else {
            toml::from_str(text).map_err(|e| format!("not a monitor definition: {e}"))?
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the definition whole; the error names the field and what was expected.
    pub fn validate(&self) -> Result<(), String> {
        if !kairos_types::schema::is_identifier(&self.name) {
            return Err(format!(
                "name '{}' must be 1-128 characters of letters, digits, '_' or '-', starting with a letter",
                self.name
            ));
        }
        if self.deployment.is_empty() {
            return Err("deployment must name a deployment".into());
        }
        if self.window.micros() <= 0 {
            return Err(format!("window must be longer than 0, not {}", self.window));
        }
        if let Some(s) = self.schedule
            && s.micros() < 1_000_000
        {
            return Err(format!("schedule must be at least 1s, not {s}"));
        }
        if let Reference::Logs { before } = &self.reference
            && before.micros() < self.window.micros()
        {
            return Err(format!(
                "reference.before ({before}) must be at least the window ({}), so the two do not overlap",
                self.window
            ));
        }
        if self.min_rows == 0 {
            return Err("min_rows must be at least 1".into());
        }
        self.drift.validate().map_err(|e| format!("drift: {e}"))?;
        if let Some(labels) = &self.labels {
            for (name, v) in [
                ("min_pr_auc", labels.min_pr_auc),
                ("min_recall", labels.min_recall),
                ("min_precision", labels.min_precision),
            ] {
                if let Some(v) = v
                    && !(0.0..=1.0).contains(&v)
                {
                    return Err(format!("labels.{name} must be within [0, 1], not {v}"));
                }
            }
            if labels.group.is_empty() || labels.label.is_empty() {
                return Err("labels needs a group and a label column".into());
            }
        }
        if let Some(webhook) = &self.alert.webhook {
            webhook_host(webhook)?;
        }
        if let Some(retrain) = &self.retrain {
            if !(retrain.margin.is_finite() && retrain.margin >= 0.0) {
                return Err(format!(
                    "retrain.margin must be ≥ 0, not {}",
                    retrain.margin
                ));
            }
            if retrain.evaluation_window.micros() <= 0 {
                return Err("retrain.evaluation_window must be longer than 0".into());
            }
            if self.labels.is_none() {
                return Err(
                    "retrain needs labels: the challenger is judged on labelled predictions".into(),
                );
            }
        }
        Ok(())
    }
}

/// An applied monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Monitor {
    #[serde(flatten)]
    pub spec: MonitorSpec,
    pub version: u32,
}

/// The host of a webhook URL, which must be a plain http(s) URL: no credentials in it, no
/// control characters or spaces (a header could be smuggled through them).
pub fn webhook_host(webhook: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("alert.webhook '{}': {why}", webhook.escape_debug()));
    if webhook.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("control characters and spaces are not allowed");
    }
    let Ok(url) = reqwest::Url::parse(webhook) else {
        return bad("not a URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return bad("must be an http:// or https:// URL");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("credentials in the URL are not allowed");
    }
    match url.host_str() {
        Some(host) => Ok(host.trim_matches(['[', ']']).to_ascii_lowercase()),
        None => bad("no host"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAUD: &str = r#"
name = "fraud_drift"
deployment = "fraud"
exclude = ["hour"]
window = "1h"
schedule = "10m"

[drift]
wasserstein = 0.2

[labels]
group = "fraud_labels"
label = "is_fraud"
min_pr_auc = 0.5
detector = { kind = "adwin", delta = 0.01 }

[alert]
webhook = "http://127.0.0.1:9000/alerts"

[retrain]
label_maturity = "4d"
margin = 0.02
"#;

    #[test]
    fn a_definition_reads_with_defaults() {
        let spec = MonitorSpec::parse(FRAUD).unwrap();
        assert_eq!(spec.window, Duration::parse("1h").unwrap());
        assert_eq!(spec.reference, Reference::TrainingDataset);
        assert!(spec.predictions);
        assert_eq!(spec.exclude, ["hour"]);
        assert_eq!(spec.drift.wasserstein, 0.2);
        assert_eq!(spec.drift.small_reference_rows, 1000);
        let labels = spec.labels.as_ref().unwrap();
        assert_eq!(labels.join_on, "request_id");
        assert!(
            matches!(&labels.detector, DetectorSpec::Adwin(o) if o.delta == 0.01 && o.clock == 32)
        );
        let retrain = spec.retrain.as_ref().unwrap();
        assert!(retrain.on_alert);
        assert_eq!(retrain.metric, RetrainMetric::PrAuc);
        // JSON round trip, as the REST API and the catalog hold it.
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(MonitorSpec::parse(&json).unwrap(), spec);
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |from: &str, to: &str| MonitorSpec::parse(&FRAUD.replace(from, to)).unwrap_err();
        assert!(bad("window = \"1h\"", "window = \"1x\"").contains("no known unit"));
        assert!(bad("wasserstein = 0.2", "wasserstein = -1").contains("drift: wasserstein"));
        assert!(bad("min_pr_auc = 0.5", "min_pr_auc = 5").contains("labels.min_pr_auc"));
        assert!(bad("http://127.0.0.1", "ftp://127.0.0.1").contains("alert.webhook"));
        for url in [
            "http://user:pw@127.0.0.1/alerts",
            "http://127.0.0.1/a\r\nX-Injected: 1",
            "http://127.0.0.1/a b",
            "file:///etc/passwd",
        ] {
            assert!(webhook_host(url).is_err(), "{url}");
        }
        assert_eq!(
            webhook_host("https://Hooks.Example:8443/x").unwrap(),
            "hooks.example"
        );
        assert!(bad("margin = 0.02", "margn = 0.02").contains("unknown field `margn`"));
        assert!(bad("schedule = \"10m\"", "schedule = \"10ms\"").contains("at least 1s"));
    }
}
