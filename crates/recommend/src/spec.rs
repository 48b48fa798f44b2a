//! A recommender's definition, one TOML (or JSON) file: the groups it reads and writes, the
//! models it serves, and the request path's settings — candidates, filter rules, diversity.
//! The same file tells `kairos recsys train` what to train on and what to register.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{DeployError, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommenderSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub users: UsersSpec,
    pub items: ItemsSpec,
    pub interactions: InteractionsSpec,
    #[serde(default)]
    pub models: ModelsSpec,
    /// How many candidates the vector index retrieves before the filters and the ranker.
    #[serde(default = "default_candidates")]
    pub candidates: usize,
    /// How many items a request gets when it does not say.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Rules every recommended item passes, in order.
    #[serde(default)]
    pub filters: Vec<FilterRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diversity: Option<Diversity>,
    /// Whether the ranker reorders the filtered candidates (otherwise: retrieval order).
    #[serde(default = "default_true")]
    pub ranking: bool,
}

/// The users' feature group (online): its key is the user id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsersSpec {
    pub group: String,
    /// Text columns the user tower reads one-hot (gender, occupation …).
    #[serde(default)]
    pub traits: Vec<String>,
    /// An integer column of ages, read by the tower and available to the rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<String>,
}

/// The items' feature group (online, for the rules and diversity) and the item-embedding
/// group with its vector index, both keyed by the item id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemsSpec {
    pub group: String,
    /// A text column of `|`-separated categories (genres) the item tower reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<String>,
    /// An integer column of years the item tower reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<String>,
    /// The group `kairos recsys train` writes every item's embedding to, indexed.
    pub embeddings: String,
}

/// The interactions' feature group: one row per event, keyed by (user, item).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InteractionsSpec {
    pub group: String,
    pub user: String,
    pub item: String,
    /// The feature view `kairos recsys train` reads its training data through (created when
    /// missing: the interactions with the user's features as of each event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
    /// Recent items the user tower averages.
    #[serde(default = "default_recent")]
    pub recent: usize,
}

/// The registered models: each pinned to a version, or the latest when applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelsSpec {
    /// Model names' prefix: `<prefix>_user_tower`, `<prefix>_item_tower`, `<prefix>_ranker`
    /// (the recommender's name when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_tower_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranker_version: Option<u32>,
}

/// A filter rule: drop the items the user already interacted with, or keep the items for
/// which an expression over the item's columns and the user's (as `user_<column>`) holds —
/// `available = true`, `min_age <= user_age`, `region = user_region`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterRule {
    pub name: String,
    #[serde(default)]
    pub already_interacted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<String>,
}

/// Per-category caps: at most `max_per_value` recommended items share a value of `column`
/// (an item column; `|`-separated values count for each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Diversity {
    pub column: String,
    pub max_per_value: usize,
}

fn default_candidates() -> usize {
    300
}

fn default_k() -> usize {
    10
}

fn default_recent() -> usize {
    20
}

fn default_true() -> bool {
    true
}

impl RecommenderSpec {
    /// Parses a TOML file's text (or JSON, when it starts with `{`) and checks it.
    pub fn parse(source: &str, text: &str) -> Result<RecommenderSpec> {
        let spec: RecommenderSpec = if text.trim_start().starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| DeployError::Invalid(format!("{source}: {e}")))?
        } else {
            toml::from_str(text).map_err(|e| DeployError::Invalid(format!("{source}: {e}")))?
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks what needs no catalog; `Recommenders::apply` checks the groups and models.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| {
            Err(DeployError::Invalid(format!(
                "recommender '{}': {m}",
                self.name
            )))
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return invalid("the name must be letters, digits, '_' or '-'".into());
        }
        if self.candidates == 0 || self.candidates > 10_000 {
            return invalid(format!(
                "candidates is {}, expected 1 to 10000",
                self.candidates
            ));
        }
        if self.k == 0 || self.k > self.candidates {
            return invalid(format!(
                "k is {}, expected 1 to candidates ({})",
                self.k, self.candidates
            ));
        }
        for rule in &self.filters {
            match (rule.already_interacted, &rule.keep) {
                (true, None) => {}
                (false, Some(expr)) => {
                    kairos_transform::expr::Expr::parse(expr).map_err(|e| {
                        DeployError::Invalid(format!(
                            "recommender '{}': filter '{}': {e}",
                            self.name, rule.name
                        ))
                    })?;
                }
                _ => {
                    return invalid(format!(
                        "filter '{}' needs exactly one of already_interacted = true or keep",
                        rule.name
                    ));
                }
            }
        }
        if let Some(d) = &self.diversity
            && d.max_per_value == 0
        {
            return invalid("diversity.max_per_value must be at least 1".into());
        }
        Ok(())
    }

    pub fn model_prefix(&self) -> &str {
        self.models.prefix.as_deref().unwrap_or(&self.name)
    }

    pub fn user_tower_model(&self) -> String {
        format!("{}_user_tower", self.model_prefix())
    }

    pub fn item_tower_model(&self) -> String {
        format!("{}_item_tower", self.model_prefix())
    }

    pub fn ranker_model(&self) -> String {
        format!("{}_ranker", self.model_prefix())
    }

    pub fn view_name(&self) -> String {
        self.interactions
            .view
            .clone()
            .unwrap_or_else(|| format!("{}_training", self.name))
    }
}
