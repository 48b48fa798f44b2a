//! Feature-view definitions and their validation against the feature groups they read.
//!
//! A view is a root feature group (usually the one holding labels) left-joined point-in-time
//! with other groups on join keys, a selection of features from each, label columns, on-demand
//! features and model-dependent transforms. [`ViewPlan::resolve`] checks a definition against
//! the catalog's groups and turns it into the plan both the training path and the online path
//! execute, so the two cannot disagree about columns, order or types.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};

use kairos_transform::{FunctionRegistry, OnDemand, OnDemandSpec, TransformSpec};
use kairos_types::{FeatureGroup, FeatureGroupSpec, FeatureType};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Result, ViewError};

/// What a user writes to define a feature view (TOML or JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureViewSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub root: RootSpec,
    /// Groups joined point-in-time to the root, in order.
    #[serde(default, alias = "joins", skip_serializing_if = "Vec::is_empty")]
    pub join: Vec<JoinSpec>,
    /// Features computed at request time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_demand: Vec<OnDemandSpec>,
    /// Model-dependent transforms, fitted on a training dataset's statistics.
    #[serde(default, alias = "transforms", skip_serializing_if = "Vec::is_empty")]
    pub transform: Vec<TransformSpec>,
}

/// The root feature group: its rows (or a spine's) are the rows of the training data, and its
/// primary key is what online requests name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RootSpec {
    pub group: String,
    /// Pinned when the view is applied; the latest version when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Selected features; all columns but the key, event time and labels when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// Label columns: in training data, never in online vectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Root columns whose values an online request passes (the event being scored), rather
    /// than the online store. The root's event-time column may always be passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request: Vec<String>,
}

/// One joined group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Root columns to this group's primary-key columns: a list when the names are the same,
    /// a table `{root_column = "group_column"}` otherwise. The group's primary key when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub on: Option<JoinOn>,
    /// Selected features; all but the key and event time when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// Put before each feature name, to keep names apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A joined row older than this (relative to the root row's time) is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback_seconds: Option<u64>,
    /// Label columns of this group. A join with labels is a label join: it selects no
    /// features, it is left out of online vectors, and it takes the key's latest row known
    /// when the training dataset is made rather than the row as of the root row's time, since
    /// a label (a chargeback, a settlement) arrives after the event it describes. Rows whose
    /// label is not known yet are not training rows, and are left out of the dataset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JoinOn {
    Same(Vec<String>),
    Map(BTreeMap<String, String>),
}

/// A feature view as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FeatureView {
    /// The definition, with every group version pinned.
    #[serde(flatten)]
    pub spec: FeatureViewSpec,
    pub version: u32,
    pub created_at: String,
}

/// A joined group, resolved.
#[derive(Debug, Clone)]
pub struct JoinPlan {
    pub group: FeatureGroup,
    /// Root columns, aligned with the group's primary key.
    pub left: Vec<String>,
    /// `(group column, output column, type)`: the features, or a label join's labels.
    pub features: Vec<(String, String, FeatureType)>,
    pub lookback_micros: Option<i64>,
}

/// A validated view, ready to execute.
#[derive(Debug, Clone)]
pub struct ViewPlan {
    pub name: String,
    pub root: FeatureGroup,
    pub root_features: Vec<String>,
    /// Every label column: the root's, then the label joins'.
    pub labels: Vec<(String, FeatureType)>,
    pub request: Vec<String>,
    /// Feature joins, point-in-time.
    pub joins: Vec<JoinPlan>,
    /// Label joins: the key's latest row, in training data only.
    pub label_joins: Vec<JoinPlan>,
    /// In an order where every input is computed before it is read.
    pub on_demand: Vec<OnDemand>,
    pub transforms: Vec<TransformSpec>,
    /// The vector's columns, in order: root features, joined features, on-demand features.
    pub features: Vec<(String, FeatureType)>,
    root_columns: Vec<String>,
    vector_root_columns: Vec<String>,
    /// Online, the schema of the looked-up columns (the root's, then each join's features)
    /// and of the vector: made once here, not for every vector.
    pub(crate) looked_up_schema: SchemaRef,
    pub(crate) vector_schema: SchemaRef,
}

fn bad<T>(message: String) -> Result<T> {
    Err(ViewError::Definition(message))
}

impl ViewPlan {
    /// Checks `spec` against the groups `lookup` finds (by name and optional version) and plans it.
    pub fn resolve(
        spec: &FeatureViewSpec,
        lookup: &dyn Fn(&str, Option<u32>) -> Option<FeatureGroup>,
        registry: &FunctionRegistry,
    ) -> Result<ViewPlan> {
        if !kairos_types::schema::is_identifier(&spec.name) {
            return bad(format!(
                "name '{}' must be 1-128 characters of letters, digits, '_' or '-', starting with a letter",
                spec.name
            ));
        }
        let find = |what: &str, name: &str, version: Option<u32>| {
            lookup(name, version).ok_or_else(|| {
                ViewError::Definition(match version {
                    Some(v) => format!("{what}: feature group '{name}' has no version {v}"),
                    None => format!("{what}: unknown feature group '{name}'"),
                })
            })
        };
        let root = find("root", &spec.root.group, spec.root.version)?;
        let rs = &root.spec;
        let column_of = |what: &str, col: &str| -> Result<FeatureType> {
            rs.column(col).map(|c| c.ty).ok_or_else(|| {
                ViewError::Definition(format!(
                    "{what}: column '{col}' is not in root group '{}'",
                    rs.name
                ))
            })
        };
        for label in &spec.root.labels {
            column_of("root.labels", label)?;
        }
        for r in &spec.root.request {
            column_of("root.request", r)?;
            if spec.root.labels.contains(r) {
                return bad(format!(
                    "root.request: '{r}' is a label; labels are never request values"
                ));
            }
        }
        let structural = |g: &FeatureGroupSpec, c: &str| {
            g.primary_key.iter().any(|k| k == c) || g.event_time == c
        };
        let root_features = match &spec.root.features {
            Some(list) => {
                for f in list {
                    column_of("root.features", f)?;
                    if spec.root.labels.contains(f) {
                        return bad(format!("root.features: '{f}' is also a label"));
                    }
                }
                list.clone()
            }
            None => rs
                .columns
                .iter()
                .filter(|c| !structural(rs, &c.name) && !spec.root.labels.contains(&c.name))
                .map(|c| c.name.clone())
                .collect(),
        };

        // Every column a row has before on-demand features: name → type.
        let mut available: HashMap<String, FeatureType> = HashMap::new();
        for c in &rs.columns {
            available.insert(c.name.clone(), c.ty);
        }
        let mut features: Vec<(String, FeatureType)> = root_features
            .iter()
            .map(|f| (f.clone(), rs.column(f).expect("checked").ty))
            .collect();
        let mut output_names: HashSet<String> = rs.columns.iter().map(|c| c.name.clone()).collect();

        let mut labels: Vec<(String, FeatureType)> = spec
            .root
            .labels
            .iter()
            .map(|l| (l.clone(), rs.column(l).expect("checked").ty))
            .collect();
        let (mut joins, mut label_joins) = (Vec::new(), Vec::new());
        for (j, join) in spec.join.iter().enumerate() {
            let what = format!("join[{j}] ({})", join.group);
            let group = find(&what, &join.group, join.version)?;
            let gs = &group.spec;
            let pairs: Vec<(String, String)> = match &join.on {
                None => gs
                    .primary_key
                    .iter()
                    .map(|k| (k.clone(), k.clone()))
                    .collect(),
                Some(JoinOn::Same(cols)) => cols.iter().map(|c| (c.clone(), c.clone())).collect(),
                Some(JoinOn::Map(map)) => map.iter().map(|(l, r)| (l.clone(), r.clone())).collect(),
            };
            let mut left = Vec::new();
            for key in &gs.primary_key {
                let Some((l, _)) = pairs.iter().find(|(_, r)| r == key) else {
                    return bad(format!(
                        "{what}: join key '{key}' of '{}' is not given in 'on'; the group's primary key is ({})",
                        gs.name,
                        gs.primary_key.join(", ")
                    ));
                };
                let lt = column_of(&format!("{what}.on"), l)?;
                let rt = gs.column(key).expect("validated key").ty;
                if lt != rt {
                    return bad(format!(
                        "{what}: join key type mismatch: root column '{l}' is {lt}, but '{}.{key}' is {rt}",
                        gs.name
                    ));
                }
                left.push(l.clone());
            }
            if let Some((_, r)) = pairs.iter().find(|(_, r)| !gs.primary_key.contains(r)) {
                return bad(format!(
                    "{what}: '{r}' is not a primary-key column of '{}'; its key is ({})",
                    gs.name,
                    gs.primary_key.join(", ")
                ));
            }
            let is_label_join = !join.labels.is_empty();
            if is_label_join && join.features.as_ref().is_some_and(|f| !f.is_empty()) {
                return bad(format!(
                    "{what}: a join with labels selects no features (its rows arrive after the \
                     event, which serving never has); join the group a second time for features"
                ));
            }
            let (field, selected): (&str, Vec<String>) = match (&join.features, is_label_join) {
                (_, true) => ("labels", join.labels.clone()),
                (Some(list), false) => ("features", list.clone()),
                (None, false) => (
                    "features",
                    gs.columns
                        .iter()
                        .filter(|c| !structural(gs, &c.name))
                        .map(|c| c.name.clone())
                        .collect(),
                ),
            };
            let prefix = join.prefix.clone().unwrap_or_default();
            let mut cols = Vec::new();
            for f in selected {
                let Some(col) = gs.column(&f) else {
                    return bad(format!(
                        "{what}.{field}: column '{f}' is not in feature group '{}'",
                        gs.name
                    ));
                };
                let out = format!("{prefix}{f}");
                if !output_names.insert(out.clone()) {
                    return bad(format!(
                        "{what}: '{out}' clashes with another column of the view; give the join a prefix"
                    ));
                }
                if is_label_join {
                    labels.push((out.clone(), col.ty));
                } else {
                    available.insert(out.clone(), col.ty);
                    features.push((out.clone(), col.ty));
                }
                cols.push((f, out, col.ty));
            }
            let plan = JoinPlan {
                group,
                left,
                features: cols,
                lookback_micros: join.lookback_seconds.map(|s| s as i64 * 1_000_000),
            };
            if is_label_join {
                label_joins.push(plan);
            } else {
                joins.push(plan);
            }
        }

        let on_demand = order_on_demand(
            spec,
            registry,
            &rs.event_time,
            &mut available,
            &mut output_names,
        )?;
        for f in &on_demand {
            features.push((f.name().to_string(), f.output_type()));
        }

        let mut transformed = HashSet::new();
        for t in &spec.transform {
            let Some((_, ty)) = features.iter().find(|(n, _)| *n == t.feature) else {
                return bad(format!(
                    "transform of '{}': not a feature of the view (labels and keys are not transformed)",
                    t.feature
                ));
            };
            t.check_input(&ty.arrow_type())
                .map_err(|e| ViewError::Definition(e.to_string()))?;
            if !transformed.insert(t.feature.clone()) {
                return bad(format!(
                    "transform of '{}': a feature has at most one transform",
                    t.feature
                ));
            }
        }

        let mut plan = ViewPlan {
            name: spec.name.clone(),
            root_features,
            labels,
            request: spec.root.request.clone(),
            joins,
            label_joins,
            on_demand,
            transforms: spec.transform.clone(),
            features,
            root,
            root_columns: Vec::new(),
            vector_root_columns: Vec::new(),
            looked_up_schema: Arc::new(Schema::empty()),
            vector_schema: Arc::new(Schema::empty()),
        };
        plan.root_columns = plan.needed_root_columns(true);
        plan.vector_root_columns = plan.needed_root_columns(false);
        plan.looked_up_schema = plan.looked_up_fields();
        plan.vector_schema = crate::rows::schema_of(&plan.features, 0);
        Ok(plan)
    }

    /// The definition with every group version pinned, as it is stored.
    pub fn pinned(&self, spec: &FeatureViewSpec) -> FeatureViewSpec {
        let mut pinned = spec.clone();
        pinned.root.version = Some(self.root.version);
        for (join, plan) in pinned.join.iter_mut().zip(&self.joins) {
            join.version = Some(plan.group.version);
        }
        pinned
    }

    /// The root's primary-key columns and types.
    pub fn keys(&self) -> Vec<(String, FeatureType)> {
        let spec = &self.root.spec;
        spec.primary_key
            .iter()
            .map(|k| (k.clone(), spec.column(k).expect("validated").ty))
            .collect()
    }

    pub fn event_time(&self) -> &str {
        &self.root.spec.event_time
    }

    /// The columns of the training data: keys, event time, features, labels.
    pub fn training_columns(&self) -> Vec<(String, FeatureType)> {
        let rs = &self.root.spec;
        let mut out = self.keys();
        out.push((rs.event_time.clone(), FeatureType::Timestamp));
        out.extend(self.features.iter().cloned());
        out.extend(self.labels.iter().cloned());
        out
    }

    /// Whether `name` is a label column.
    pub fn is_label(&self, name: &str) -> bool {
        self.labels.iter().any(|(l, _)| l == name)
    }

    /// Whether `name` is a label column of the root group.
    pub fn is_root_label(&self, name: &str) -> bool {
        self.is_label(name) && self.root.spec.column(name).is_some()
    }

    /// The root columns the left side of the join needs: keys, event time, features, labels,
    /// request values, join columns and on-demand inputs. Worked out once, when planning.
    pub fn root_columns(&self) -> &[String] {
        &self.root_columns
    }

    /// The root columns an online vector needs: [`Self::root_columns`] less the labels and
    /// what only label joins read.
    pub fn vector_root_columns(&self) -> &[String] {
        &self.vector_root_columns
    }

    fn needed_root_columns(&self, training: bool) -> Vec<String> {
        let rs = &self.root.spec;
        let mut out: Vec<String> = rs.primary_key.clone();
        let mut add = |c: &String| {
            if !out.contains(c) {
                out.push(c.clone());
            }
        };
        add(&rs.event_time);
        self.root_features.iter().for_each(&mut add);
        if training {
            self.labels
                .iter()
                .map(|(l, _)| l)
                .filter(|l| rs.column(l).is_some())
                .for_each(&mut add);
            self.label_joins
                .iter()
                .flat_map(|j| &j.left)
                .for_each(&mut add);
        }
        self.request.iter().for_each(&mut add);
        self.joins.iter().flat_map(|j| &j.left).for_each(&mut add);
        self.on_demand
            .iter()
            .flat_map(|f| f.inputs())
            .filter(|c| rs.column(c).is_some())
            .for_each(&mut add);
        out
    }
}

/// Compiles the on-demand features and orders them so each input exists before it is read.
fn order_on_demand(
    spec: &FeatureViewSpec,
    registry: &FunctionRegistry,
    event_time: &str,
    available: &mut HashMap<String, FeatureType>,
    output_names: &mut HashSet<String>,
) -> Result<Vec<OnDemand>> {
    let compiled: Vec<OnDemand> = spec
        .on_demand
        .iter()
        .map(|s| {
            OnDemand::compile(s, registry, event_time)
                .map_err(|e| ViewError::Definition(e.to_string()))
        })
        .collect::<Result<_>>()?;
    for f in &compiled {
        if !output_names.insert(f.name().to_string()) {
            return bad(format!(
                "on-demand feature '{}': the name is already a column of the view",
                f.name()
            ));
        }
    }
    let by_name: HashMap<&str, usize> = compiled
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name(), i))
        .collect();
    for f in &compiled {
        for input in f.inputs() {
            if spec.root.labels.contains(input) {
                return bad(format!(
                    "on-demand feature '{}': input '{input}' is a label, which serving never has",
                    f.name()
                ));
            }
            if !available.contains_key(input) && !by_name.contains_key(input.as_str()) {
                return bad(format!(
                    "on-demand feature '{}': unknown input '{input}'; inputs are root columns, joined \
                     features (with their prefix) and other on-demand features",
                    f.name()
                ));
            }
        }
    }
    // Depth-first topological order; a grey node met again is a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        White,
        Grey,
        Black,
    }
    fn visit(
        i: usize,
        compiled: &[OnDemand],
        by_name: &HashMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<String>,
        order: &mut Vec<usize>,
    ) -> Result<()> {
        match marks[i] {
            Mark::Black => return Ok(()),
            Mark::Grey => {
                path.push(compiled[i].name().to_string());
                let start = path
                    .iter()
                    .position(|n| n == compiled[i].name())
                    .unwrap_or(0);
                return bad(format!(
                    "cyclic on-demand features: {}",
                    path[start..].join(" -> ")
                ));
            }
            Mark::White => {}
        }
        marks[i] = Mark::Grey;
        path.push(compiled[i].name().to_string());
        for input in compiled[i].inputs() {
            if let Some(&j) = by_name.get(input.as_str()) {
                visit(j, compiled, by_name, marks, path, order)?;
            }
        }
        path.pop();
        marks[i] = Mark::Black;
        order.push(i);
        Ok(())
    }
    let mut marks = vec![Mark::White; compiled.len()];
    let mut order = Vec::new();
    for i in 0..compiled.len() {
        visit(
            i,
            &compiled,
            &by_name,
            &mut marks,
            &mut Vec::new(),
            &mut order,
        )?;
    }
    let mut ordered = Vec::new();
    for i in order {
        let f = compiled[i].clone();
        let types: Vec<FeatureType> = f
            .inputs()
            .iter()
            .map(|n| available.get(n).copied().expect("inputs resolved in order"))
            .collect();
        f.check_inputs(&types)
            .map_err(|e| ViewError::Definition(e.to_string()))?;
        available.insert(f.name().to_string(), f.output_type());
        ordered.push(f);
    }
    Ok(ordered)
}
