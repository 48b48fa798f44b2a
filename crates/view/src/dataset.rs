//! Training datasets: rows split into train / validation / test, written as Parquet files, with
//! statistics of the training split and the transforms fitted on them, frozen together.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};
use arrow::row::{RowConverter, SortField};
use kairos_transform::{FeatureStatistics, StatisticsBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::rows::TransformSet;
use crate::{Result, ViewError};

/// How rows are split.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Split {
    /// Every row is training data.
    #[default]
    None,
    /// Each row goes to a split by a seeded hash of its key and time: the same row lands in the
    /// same split whatever the order or partitioning of the join.
    Random {
        seed: u64,
        train: f64,
        validation: f64,
        test: f64,
    },
    /// By event time: before `validation_start` train, then validation, from `test_start` test.
    /// Held as microseconds since the epoch; written and read as RFC 3339.
    Time {
        #[serde(with = "rfc3339")]
        #[schema(value_type = String, example = "2024-05-02T00:00:00Z")]
        validation_start: i64,
        #[serde(with = "rfc3339")]
        #[schema(value_type = String)]
        test_start: i64,
    },
}

/// Microseconds since the epoch as RFC 3339 text, the way users write times.
mod rfc3339 {
    use kairos_types::ingest::parse_timestamp;
    use kairos_types::value::format_timestamp;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(micros: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_timestamp(*micros))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        parse_timestamp(&text).map_err(|e| D::Error::custom(format!("{e}, got '{text}'")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SplitName {
    Train,
    Validation,
    Test,
}

impl SplitName {
    pub fn as_str(self) -> &'static str {
        match self {
            SplitName::Train => "train",
            SplitName::Validation => "validation",
            SplitName::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<SplitName> {
        Some(match s {
            "train" => SplitName::Train,
            "validation" => SplitName::Validation,
            "test" => SplitName::Test,
            _ => return None,
        })
    }
}

impl Split {
    pub fn validate(&self) -> Result<()> {
        match self {
            Split::None => Ok(()),
            Split::Random {
                train,
                validation,
                test,
                ..
            } => {
                let parts = [*train, *validation, *test];
                if parts.iter().any(|p| !(0.0..=1.0).contains(p))
                    || ((parts.iter().sum::<f64>()) - 1.0).abs() > 1e-9
                {
                    return Err(ViewError::Request(format!(
                        "split: train, validation and test must be fractions summing to 1, got {train}, {validation}, {test}"
                    )));
                }
                Ok(())
            }
            Split::Time {
                validation_start,
                test_start,
            } if validation_start > test_start => Err(ViewError::Request(
                "split: validation_start must not be after test_start".into(),
            )),
            Split::Time { .. } => Ok(()),
        }
    }

    /// The split of every row of `batch`.
    pub fn assign(
        &self,
        batch: &RecordBatch,
        keys: &[String],
        time: &str,
    ) -> Result<Vec<SplitName>> {
        let times = batch
            .column_by_name(time)
            .ok_or_else(|| ViewError::Join(format!("no time column '{time}'")))?
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        Ok(match self {
            Split::None => vec![SplitName::Train; batch.num_rows()],
            Split::Time {
                validation_start,
                test_start,
            } => times
                .iter()
                .map(|t| match t.unwrap_or(i64::MIN) {
                    t if t >= *test_start => SplitName::Test,
                    t if t >= *validation_start => SplitName::Validation,
                    _ => SplitName::Train,
                })
                .collect(),
            Split::Random {
                seed,
                train,
                validation,
                ..
            } => {
                let mut columns: Vec<ArrayRef> = keys
                    .iter()
                    .map(|k| {
                        batch
                            .column_by_name(k)
                            .cloned()
                            .ok_or_else(|| ViewError::Join(format!("no key column '{k}'")))
                    })
                    .collect::<Result<_>>()?;
                columns.push(batch.column_by_name(time).expect("checked").clone());
                let fields = columns
                    .iter()
                    .map(|c| SortField::new(c.data_type().clone()))
                    .collect();
                let rows = RowConverter::new(fields)?.convert_columns(&columns)?;
                rows.iter()
                    .map(|row| {
                        let h = row
                            .data()
                            .iter()
                            .fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| {
                                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                            });
                        let u = (mix(h) >> 11) as f64 / (1u64 << 53) as f64;
                        if u < *train {
                            SplitName::Train
                        } else if u < train + validation {
                            SplitName::Validation
                        } else {
                            SplitName::Test
                        }
                    })
                    .collect()
            }
        })
    }
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What a caller asks of a training dataset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingDatasetRequest {
    /// Root event time at or after (µs).
    pub start: Option<i64>,
    /// Root event time before (µs).
    pub end: Option<i64>,
    pub split: Split,
    /// Joined rows must be strictly older than the root row.
    pub strict: bool,
    /// Joined rows must have been ingested at or before the root row's time.
    pub as_known_at: bool,
    pub description: String,
}

/// A materialised training dataset, as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainingDataset {
    pub view: String,
    pub view_version: u32,
    pub version: u32,
    pub created_at: String,
    #[serde(default)]
    pub description: String,
    /// Root event-time range, RFC 3339.
    pub start: Option<String>,
    pub end: Option<String>,
    pub split: Split,
    pub strict: bool,
    pub as_known_at: bool,
    /// The spine file's name, when a spine replaced the root group's rows.
    pub spine: Option<String>,
    /// `(name, type)` of each column of the files.
    pub columns: Vec<(String, String)>,
    /// Rows per split.
    pub row_counts: BTreeMap<SplitName, u64>,
    /// Rows left out because a label-join label was not known yet.
    #[serde(default)]
    pub unlabelled: u64,
    /// Per feature group (`name@version`), the log offset its offline table held when read.
    pub log_offsets: BTreeMap<String, u64>,
    /// Statistics of the training split, per feature and label.
    pub statistics: Vec<FeatureStatistics>,
    /// The model-dependent transforms fitted on those statistics.
    #[schema(value_type = Object)]
    pub transforms: TransformSet,
    /// The folder holding `<split>.parquet`, relative to the data dir.
    pub path: String,
}

impl TrainingDataset {
    /// The Arrow schema of its files, from `columns`: what a read of an empty split answers
    /// with.
    pub fn schema(&self) -> Schema {
        let field = |(name, ty): &(String, String)| {
            let ty = ty
                .parse::<kairos_types::FeatureType>()
                .map_or(DataType::Utf8, kairos_types::FeatureType::arrow_type);
            Field::new(name, ty, true)
        };
        Schema::new(self.columns.iter().map(field).collect::<Vec<_>>())
    }
}

/// Writes a training dataset's split files into a staging folder, moved into place only when
/// everything is written: a failed or interrupted run leaves no half dataset behind.
pub struct DatasetWriter {
    staging: PathBuf,
    target: PathBuf,
    schema: SchemaRef,
    split: Split,
    keys: Vec<String>,
    time: String,
    writers: BTreeMap<SplitName, ArrowWriter<File>>,
    counts: BTreeMap<SplitName, u64>,
    stats: StatisticsBuilder,
}

impl std::fmt::Debug for DatasetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetWriter")
            .field("target", &self.target)
            .finish()
    }
}

impl DatasetWriter {
    /// A writer of rows in `schema` into `target`; statistics are kept for `stats_columns`.
    pub fn new(
        target: &Path,
        schema: SchemaRef,
        split: Split,
        keys: Vec<String>,
        time: String,
        stats_columns: &[String],
    ) -> Result<Self> {
        let parent = target
            .parent()
            .ok_or_else(|| ViewError::Io("dataset path has no parent".into()))?;
        std::fs::create_dir_all(parent)
            .map_err(|e| ViewError::Io(format!("cannot create {}: {e}", parent.display())))?;
        let staging = parent.join(format!(
            ".staging-{}",
            target
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        ));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)
            .map_err(|e| ViewError::Io(format!("cannot create {}: {e}", staging.display())))?;
        let stats = StatisticsBuilder::new(
            &stats_columns
                .iter()
                .map(|c| {
                    let ty = schema.field_with_name(c).map(|f| f.data_type().clone())?;
                    Ok((c.clone(), ty))
                })
                .collect::<Result<Vec<_>>>()?,
        );
        Ok(Self {
            staging,
            target: target.to_path_buf(),
            schema,
            split,
            keys,
            time,
            writers: BTreeMap::new(),
            counts: BTreeMap::new(),
            stats,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let splits = self.split.assign(batch, &self.keys, &self.time)?;
        for name in [SplitName::Train, SplitName::Validation, SplitName::Test] {
            let mask: BooleanArray = splits.iter().map(|s| Some(*s == name)).collect();
            if mask.true_count() == 0 {
                continue;
            }
            let part = if mask.true_count() == batch.num_rows() {
                batch.clone()
            } else {
                filter_record_batch(batch, &mask)?
            };
            if name == SplitName::Train {
                self.stats.push(&part);
            }
            *self.counts.entry(name).or_default() += part.num_rows() as u64;
            if !self.writers.contains_key(&name) {
                let path = self.staging.join(split_file(name));
                let file = File::create(&path)
                    .map_err(|e| ViewError::Io(format!("cannot write {}: {e}", path.display())))?;
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                self.writers.insert(
                    name,
                    ArrowWriter::try_new(file, self.schema.clone(), Some(props))?,
                );
            }
            self.writers.get_mut(&name).expect("opened").write(&part)?;
        }
        Ok(())
    }

    /// Closes the files, moves them into place, and returns rows per split and the training
    /// split's statistics.
    pub fn finish(self) -> Result<(BTreeMap<SplitName, u64>, Vec<FeatureStatistics>)> {
        for (_, writer) in self.writers {
            writer.close()?;
        }
        let _ = std::fs::remove_dir_all(&self.target);
        std::fs::rename(&self.staging, &self.target).map_err(|e| {
            ViewError::Io(format!(
                "cannot move the dataset into {}: {e}",
                self.target.display()
            ))
        })?;
        Ok((self.counts, self.stats.finish()))
    }
}

/// The file name of one split of a training dataset.
pub fn split_file(split: SplitName) -> String {
    format!("{}.parquet", split.as_str())
}

/// Decodes one split file of a training dataset.
pub fn decode_split(file: bytes::Bytes) -> Result<Vec<RecordBatch>> {
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}
