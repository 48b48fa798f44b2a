//! Aggregations: what a window keeps per output feature, and the value it writes.
//!
//! Each [`Acc`] is a small, serialisable state folded one event at a time, so operator state
//! checkpoints as plain bytes. Order-sensitive aggregations (`first`, `last`, `last_n`) go by
//! event time, not arrival, so the result does not depend on how out of order events came;
//! between equal event times the later arrival counts as later.

use std::fmt;
use std::hash::{BuildHasher, Hasher};

use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use kairos_types::{FeatureType, Value};
use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};
use utoipa::ToSchema;

/// The aggregation functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AggKind {
    /// Rows (no column) or non-null values of the column.
    Count,
    Sum,
    Avg,
    Min,
    Max,
    /// Sample standard deviation (n − 1); null below two values.
    Stddev,
    /// The value with the smallest event time.
    First,
    /// The value with the greatest event time.
    Last,
    /// The `n` values with the greatest event times, oldest first, written as `embedding(n)`
    /// (NaN where the window holds fewer than `n`): a sequence feature.
    LastN,
    /// Distinct non-null values, estimated with HyperLogLog++ (precision 14, about 0.8 %).
    ApproxDistinct,
    /// The `q` quantile, estimated with DDSketch (1 % relative accuracy).
    ApproxQuantile,
}

impl fmt::Display for AggKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).expect("serialises");
        f.write_str(s.as_str().unwrap_or("?"))
    }
}

impl AggKind {
    /// The output type for an input of type `input`, or why the input does not fit.
    pub fn output_type(self, input: Option<FeatureType>) -> Result<FeatureType, String> {
        use FeatureType as T;
        let numeric = |t: T| matches!(t, T::Int32 | T::Int64 | T::Float32 | T::Float64);
        let Some(t) = input else {
            return Ok(T::Int64);
        };
        let need = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("{self} needs {what} input, not {t}"))
            }
        };
        Ok(match self {
            AggKind::Count | AggKind::ApproxDistinct => {
                need(!matches!(t, T::Embedding { .. }), "a scalar")?;
                T::Int64
            }
            AggKind::Sum => {
                need(numeric(t), "a numeric")?;
                if matches!(t, T::Int32 | T::Int64) {
                    T::Int64
                } else {
                    T::Float64
                }
            }
            AggKind::Avg | AggKind::Stddev | AggKind::ApproxQuantile => {
                need(numeric(t), "a numeric")?;
                T::Float64
            }
            AggKind::Min | AggKind::Max => {
                need(
                    numeric(t) || matches!(t, T::Timestamp | T::Date | T::String),
                    "a numeric, time or string",
                )?;
                widen(t)
            }
            AggKind::First | AggKind::Last => {
                need(!matches!(t, T::Embedding { .. }), "a scalar")?;
                widen(t)
            }
            AggKind::LastN => {
                need(numeric(t), "a numeric")?;
                T::Float32
            }
        })
    }
}

/// Narrow numeric types are kept wide in the state and written wide.
fn widen(t: FeatureType) -> FeatureType {
    match t {
        FeatureType::Int32 => FeatureType::Int64,
        FeatureType::Float32 => FeatureType::Float64,
        t => t,
    }
}

/// One input value as the engine reads it from a column: integers, times and dates as `I`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Datum<'a> {
    Null,
    I(i64),
    F(f64),
    S(&'a str),
    B(bool),
}

impl Datum<'_> {
    fn as_f64(self) -> Option<f64> {
        match self {
            Datum::I(v) => Some(v as f64),
            Datum::F(v) => Some(v),
            _ => None,
        }
    }

    fn to_scalar(self) -> Option<Scalar> {
        Some(match self {
            Datum::Null => return None,
            Datum::I(v) => Scalar::I(v),
            Datum::F(v) => Scalar::F(v),
            Datum::S(v) => Scalar::S(v.to_owned()),
            Datum::B(v) => Scalar::B(v),
        })
    }

    /// A hash that is the same in every build, so sketches restore from checkpoints.
    fn stable_hash(self) -> u64 {
        let (tag, bits): (u64, u64) = match self {
            Datum::Null => (0, 0),
            Datum::I(v) => (1, v as u64),
            Datum::F(v) => (2, v.to_bits()),
            Datum::B(v) => (3, v as u64),
            Datum::S(s) => {
                // FNV-1a, then mixed below.
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in s.as_bytes() {
                    h ^= u64::from(*b);
                    h = h.wrapping_mul(0x0100_0000_01b3);
                }
                (4, h)
            }
        };
        splitmix64(bits ^ tag.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An owned value kept in state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    I(i64),
    F(f64),
    S(String),
    B(bool),
}

impl Scalar {
    fn less(&self, other: &Scalar) -> bool {
        match (self, other) {
            (Scalar::I(a), Scalar::I(b)) => a < b,
            (Scalar::F(a), Scalar::F(b)) => a < b,
            (Scalar::S(a), Scalar::S(b)) => a < b,
            (Scalar::B(a), Scalar::B(b)) => a < b,
            _ => false,
        }
    }

    fn to_value(&self, ty: FeatureType) -> Value {
        match (self, ty) {
            (Scalar::I(v), FeatureType::Timestamp) => Value::Timestamp(*v),
            (Scalar::I(v), FeatureType::Date) => Value::Date(*v as i32),
            (Scalar::I(v), FeatureType::Float64) => Value::Float64(*v as f64),
            (Scalar::I(v), _) => Value::Int64(*v),
            (Scalar::F(v), _) => Value::Float64(*v),
            (Scalar::S(v), _) => Value::String(v.clone()),
            (Scalar::B(v), _) => Value::Bool(*v),
        }
    }
}

/// Feeds HyperLogLog++ hashes already computed by [`Datum::stable_hash`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct PreHashed;

#[derive(Debug, Default)]
pub struct PreHashedHasher(u64);

impl Hasher for PreHashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

impl BuildHasher for PreHashed {
    type Hasher = PreHashedHasher;
    fn build_hasher(&self) -> PreHashedHasher {
        PreHashedHasher(0)
    }
}

const HLL_PRECISION: u8 = 14;

/// A DDSketch (which has no `Debug` of its own).
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sketch(Box<DDSketch>);

impl fmt::Debug for Sketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DDSketch({} values)", self.0.count())
    }
}

/// The state of one aggregation in one window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Acc {
    Count(i64),
    SumI {
        sum: i64,
        n: u64,
    },
    SumF {
        sum: f64,
        n: u64,
    },
    Avg {
        sum: f64,
        n: u64,
    },
    Min(Option<Scalar>),
    Max(Option<Scalar>),
    /// Welford's running mean and sum of squared deviations.
    Stddev {
        n: u64,
        mean: f64,
        m2: f64,
    },
    First(Option<(i64, Scalar)>),
    Last(Option<(i64, Scalar)>),
    /// (event time, value), oldest first, at most `n`.
    LastN {
        n: u32,
        values: Vec<(i64, f64)>,
    },
    Distinct(Box<HyperLogLogPlus<u64, PreHashed>>),
    Quantile {
        q: f64,
        sketch: Sketch,
    },
}

impl Acc {
    /// The empty state of `kind`; `n` and `q` as planned.
    pub fn new(kind: AggKind, input: Option<FeatureType>, n: usize, q: f64) -> Acc {
        let integer = matches!(input, Some(FeatureType::Int32 | FeatureType::Int64));
        match kind {
            AggKind::Count => Acc::Count(0),
            AggKind::Sum if integer => Acc::SumI { sum: 0, n: 0 },
            AggKind::Sum => Acc::SumF { sum: 0.0, n: 0 },
            AggKind::Avg => Acc::Avg { sum: 0.0, n: 0 },
            AggKind::Min => Acc::Min(None),
            AggKind::Max => Acc::Max(None),
            AggKind::Stddev => Acc::Stddev {
                n: 0,
                mean: 0.0,
                m2: 0.0,
            },
            AggKind::First => Acc::First(None),
            AggKind::Last => Acc::Last(None),
            AggKind::LastN => Acc::LastN {
                n: n as u32,
                values: Vec::new(),
            },
            AggKind::ApproxDistinct => Acc::Distinct(Box::new(
                HyperLogLogPlus::new(HLL_PRECISION, PreHashed).expect("precision 14 is valid"),
            )),
            AggKind::ApproxQuantile => Acc::Quantile {
                q,
                sketch: Sketch(Box::new(DDSketch::new(Config::defaults()))),
            },
        }
    }

    /// Folds one event in: its value of the input column (`Datum::Null` for `count` without a
    /// column, which counts rows) and its event time.
    #[inline]
    pub fn update(&mut self, v: Datum<'_>, t: i64, counts_rows: bool) {
        match self {
            Acc::Count(c) => {
                if counts_rows || v != Datum::Null {
                    *c += 1
                }
            }
            Acc::SumI { sum, n } => {
                if let Datum::I(x) = v {
                    *sum = sum.wrapping_add(x);
                    *n += 1;
                }
            }
            Acc::SumF { sum, n } | Acc::Avg { sum, n } => {
                if let Some(x) = v.as_f64() {
                    *sum += x;
                    *n += 1;
                }
            }
            Acc::Min(cur) => {
                if let Some(x) = v.to_scalar()
                    && cur.as_ref().is_none_or(|c| x.less(c))
                {
                    *cur = Some(x);
                }
            }
            Acc::Max(cur) => {
                if let Some(x) = v.to_scalar()
                    && cur.as_ref().is_none_or(|c| c.less(&x))
                {
                    *cur = Some(x);
                }
            }
            Acc::Stddev { n, mean, m2 } => {
                if let Some(x) = v.as_f64() {
                    *n += 1;
                    let delta = x - *mean;
                    *mean += delta / *n as f64;
                    *m2 += delta * (x - *mean);
                }
            }
            Acc::First(cur) => {
                if v != Datum::Null && cur.as_ref().is_none_or(|(ct, _)| t < *ct) {
                    *cur = v.to_scalar().map(|x| (t, x));
                }
            }
            Acc::Last(cur) => {
                if v != Datum::Null && cur.as_ref().is_none_or(|(ct, _)| t >= *ct) {
                    *cur = v.to_scalar().map(|x| (t, x));
                }
            }
            Acc::LastN { n, values } => {
                let Some(x) = v.as_f64() else { return };
                let full = values.len() >= *n as usize;
                if full && t < values[0].0 {
                    return;
                }
                // After every value of equal or smaller time: a later arrival counts as later.
                let at = values.partition_point(|(vt, _)| *vt <= t);
                values.insert(at, (t, x));
                if values.len() > *n as usize {
                    values.remove(0);
                }
            }
            Acc::Distinct(hll) => {
                if v != Datum::Null {
                    hll.insert(&v.stable_hash());
                }
            }
            Acc::Quantile { sketch, .. } => {
                if let Some(x) = v.as_f64() {
                    sketch.0.add(x);
                }
            }
        }
    }

    /// Folds `other`, the state of the same aggregation over other events, in (session
    /// windows merge this way).
    pub fn merge(&mut self, other: Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::SumI { sum, n }, Acc::SumI { sum: s, n: m }) => {
                *sum = sum.wrapping_add(s);
                *n += m;
            }
            (Acc::SumF { sum, n }, Acc::SumF { sum: s, n: m })
            | (Acc::Avg { sum, n }, Acc::Avg { sum: s, n: m }) => {
                *sum += s;
                *n += m;
            }
            (Acc::Min(a), Acc::Min(Some(b))) if a.as_ref().is_none_or(|x| b.less(x)) => {
                *a = Some(b);
            }
            (Acc::Max(a), Acc::Max(Some(b))) if a.as_ref().is_none_or(|x| x.less(&b)) => {
                *a = Some(b);
            }
            (
                Acc::Stddev { n, mean, m2 },
                Acc::Stddev {
                    n: nb,
                    mean: mb,
                    m2: m2b,
                },
            ) => {
                if nb == 0 {
                    return;
                }
                // Chan et al.'s parallel update.
                let total = *n + nb;
                let delta = mb - *mean;
                *m2 += m2b + delta * delta * (*n as f64) * (nb as f64) / total as f64;
                *mean += delta * nb as f64 / total as f64;
                *n = total;
            }
            (Acc::First(a), Acc::First(Some((t, v))))
                if a.as_ref().is_none_or(|(ct, _)| t < *ct) =>
            {
                *a = Some((t, v));
            }
            (Acc::Last(a), Acc::Last(Some((t, v))))
                if a.as_ref().is_none_or(|(ct, _)| t >= *ct) =>
            {
                *a = Some((t, v));
            }
            (Acc::LastN { n, values }, Acc::LastN { values: more, .. }) => {
                values.extend(more);
                values.sort_by_key(|(t, _)| *t);
                let excess = values.len().saturating_sub(*n as usize);
                values.drain(..excess);
            }
            (Acc::Distinct(a), Acc::Distinct(b)) => {
                a.merge(&b).expect("same precision");
            }
            (Acc::Quantile { sketch, .. }, Acc::Quantile { sketch: b, .. }) => {
                sketch.0.merge(&b.0).expect("same configuration");
            }
            _ => {}
        }
    }

    /// The value written for the window, as `ty` (the planned output type).
    pub fn value(&mut self, ty: FeatureType) -> Value {
        match self {
            Acc::Count(c) => Value::Int64(*c),
            Acc::SumI { sum, n } => {
                if *n == 0 {
                    Value::Null
                } else {
                    Value::Int64(*sum)
                }
            }
            Acc::SumF { sum, n } => {
                if *n == 0 {
                    Value::Null
                } else {
                    Value::Float64(*sum)
                }
            }
            Acc::Avg { sum, n } => {
                if *n == 0 {
                    Value::Null
                } else {
                    Value::Float64(*sum / *n as f64)
                }
            }
            Acc::Min(cur) | Acc::Max(cur) => cur.as_ref().map_or(Value::Null, |s| s.to_value(ty)),
            Acc::Stddev { n, m2, .. } => {
                if *n < 2 {
                    Value::Null
                } else {
                    Value::Float64((*m2 / (*n - 1) as f64).sqrt())
                }
            }
            Acc::First(cur) | Acc::Last(cur) => {
                cur.as_ref().map_or(Value::Null, |(_, s)| s.to_value(ty))
            }
            Acc::LastN { n, values } => {
                let mut out = vec![f32::NAN; *n as usize - values.len()];
                out.extend(values.iter().map(|(_, x)| *x as f32));
                Value::Embedding(out)
            }
            Acc::Distinct(hll) => Value::Int64(hll.count().round() as i64),
            Acc::Quantile { q, sketch } => match sketch.0.quantile(*q) {
                Ok(Some(x)) => Value::Float64(x),
                _ => Value::Null,
            },
        }
    }
}
