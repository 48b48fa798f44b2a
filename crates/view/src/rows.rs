//! What the training path and the online path both do once a view's stored values are in an
//! Arrow batch: compute the on-demand features, put the columns in the view's order, and apply
//! the frozen model-dependent transforms. One implementation, so there is nothing to skew.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use kairos_transform::{FeatureStatistics, FittedTransform};
use kairos_types::FeatureType;
use serde::{Deserialize, Serialize};

use crate::spec::ViewPlan;
use crate::{Result, ViewError};

/// The Arrow schema of `columns`; everything but the first `required` columns is nullable.
pub fn schema_of(columns: &[(String, FeatureType)], required: usize) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| Field::new(name, ty.arrow_type(), i >= required))
            .collect::<Vec<_>>(),
    ))
}

impl ViewPlan {
    /// Appends the on-demand features to `batch`, which holds their inputs by name.
    pub fn compute_on_demand(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if self.on_demand.is_empty() {
            return Ok(batch.clone());
        }
        // Shared fields, not copies: online, this runs for every vector.
        let mut fields: Vec<FieldRef> = batch.schema().fields().iter().cloned().collect();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for f in &self.on_demand {
            let current =
                RecordBatch::try_new(Arc::new(Schema::new(fields.clone())), columns.clone())?;
            let out = f.eval(&current)?;
            fields.push(Arc::new(Field::new(
                f.name(),
                out.data_type().clone(),
                true,
            )));
            columns.push(out);
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }

    /// The columns `wanted` of `batch`, in that order and with those types; a column the batch
    /// lacks is null (a label a spine does not carry).
    pub fn select(
        &self,
        batch: &RecordBatch,
        wanted: &[(String, FeatureType)],
        required: usize,
    ) -> Result<RecordBatch> {
        self.select_into(batch, &schema_of(wanted, required))
    }

    /// [`Self::select`] into a schema made already.
    pub(crate) fn select_into(
        &self,
        batch: &RecordBatch,
        schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let columns = schema
            .fields()
            .iter()
            .map(|field| {
                let (name, ty) = (field.name(), field.data_type());
                match batch.column_by_name(name) {
                    Some(c) if c.data_type() == ty => Ok(c.clone()),
                    Some(c) => cast(c, ty).map_err(|e| {
                        ViewError::Join(format!("column '{name}' cannot be read as {ty}: {e}"))
                    }),
                    None => Ok(new_null_array(ty, batch.num_rows())),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        // The row count too: a selection of no columns (a view without labels) keeps it.
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &options,
        )?)
    }
}

/// The model-dependent transforms of a view, frozen with one training dataset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransformSet {
    pub transforms: Vec<FittedTransform>,
}

impl TransformSet {
    /// Fits the view's transforms on the statistics of a training split.
    pub fn fit(plan: &ViewPlan, statistics: &[FeatureStatistics]) -> Result<TransformSet> {
        let transforms = plan
            .transforms
            .iter()
            .map(|t| {
                let stats = statistics
                    .iter()
                    .find(|s| s.name == t.feature)
                    .ok_or_else(|| {
                        ViewError::Request(format!(
                            "no statistics for transformed feature '{}'",
                            t.feature
                        ))
                    })?;
                Ok(t.fit(stats)?)
            })
            .collect::<Result<_>>()?;
        Ok(TransformSet { transforms })
    }

    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty()
    }

    /// Transforms `batch`: each transformed column is replaced in place by the transform's
    /// outputs; other columns pass through.
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if self.transforms.is_empty() {
            return Ok(batch.clone());
        }
        let schema = batch.schema();
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            match self.transforms.iter().find(|t| t.feature == *field.name()) {
                None => {
                    fields.push(field.as_ref().clone());
                    columns.push(column.clone());
                }
                Some(t) => {
                    for ((name, ty), out) in t.output_columns().into_iter().zip(t.apply(column)?) {
                        fields.push(Field::new(name, ty, true));
                        columns.push(out);
                    }
                }
            }
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}
