//! The keyed event-time window operator: windows, watermarks, lateness and emission.
//!
//! Pure logic, no I/O and no clock: the runtime hands it batches of events with the partition
//! they came from and their processing (arrival) time, asks for the rows to write, and asks for
//! the state changed since the last checkpoint. The same inputs in the same order give the same
//! outputs, which is what makes a restored run equal to a straight one.
//!
//! Time rules:
//! - The watermark is, per source partition, the greatest event time seen minus the allowed
//!   out-of-orderness; the operator's watermark is the minimum over partitions. It moves with
//!   every event, so whether an event is late depends on the order events arrived in, never
//!   on how they were batched.
//! - A window closes (its row is written) once the watermark reaches its end. Its state is
//!   kept for the allowed lateness after that: a late event within it updates the window and
//!   the row is written again. An event whose windows are all past that is refused as too late.
//! - The written row's event time is the window end.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ahash::RandomState;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int32Array,
    Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::kernels::cmp::gt;
use arrow::row::{RowConverter, SortField};
use kairos_types::{FeatureType, Value};
use serde::{Deserialize, Serialize};

use crate::agg::{Acc, Datum};
use crate::spec::{Plan, WindowKind};
use crate::{Result, StreamError};

type KeyId = u32;

/// One window of one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Window {
    start: i64,
    end: i64,
    accs: Vec<Acc>,
    /// Its closing row was written (the watermark passed its end).
    closed: bool,
    /// Updated since its row was last written.
    dirty: bool,
    /// Processing time of the latest event folded in, for freshness.
    last_arrival: i64,
    #[serde(skip)]
    in_checkpoint_list: bool,
    /// A checkpoint holds a state of it (so removing it must delete that state).
    #[serde(skip)]
    persisted: bool,
}

/// A window row to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Emission {
    /// The key's bytes: a big-endian integer for a single int64 key, else Arrow's row format.
    pub key: Arc<[u8]>,
    pub start: i64,
    pub end: i64,
    pub values: Vec<Value>,
    /// Processing time of the latest event the row includes.
    pub last_arrival: i64,
    /// Whether the window is closed (false for an early emission).
    pub closed: bool,
    /// The source partition the key's events come from: its checkpoint holds the row.
    pub partition: u32,
}

/// An event the operator refused, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// Row in the batch handed in.
    pub row: usize,
    pub event_time: i64,
    pub reason: String,
}

/// What a checkpoint writes for one source partition: the changed windows of the keys whose
/// events come from it, its watermark input and its counters. State is kept per partition so a
/// partition can move to another worker with its windows.
#[derive(Debug, Clone, Default)]
pub struct StateDelta {
    pub partition: u32,
    /// (state key, encoded window) to write.
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// State keys to delete.
    pub deletes: Vec<Vec<u8>>,
    /// The greatest event time seen in the partition (`i64::MIN`: none yet).
    pub max_event_time: i64,
    pub counts: OperatorCounts,
}

impl StateDelta {
    /// Whether no window changed.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// Counters the runtime reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorCounts {
    pub events: u64,
    pub filtered: u64,
    pub late: u64,
    pub emitted: u64,
    pub open_windows: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    Close,
    Purge,
}

/// The window operator of one pipeline.
pub struct WindowOperator {
    plan: Arc<Plan>,
    converter: RowConverter,
    /// A single int64 key (the common case: card numbers, user ids) is looked up as an
    /// integer; other keys by their bytes in Arrow's row format.
    int_key: bool,
    int_ids: HashMap<i64, KeyId, RandomState>,
    key_ids: HashMap<Box<[u8]>, KeyId, RandomState>,
    /// Each key's bytes (the integer big-endian, or its row format), shared with emissions.
    key_bytes: Vec<Arc<[u8]>>,
    /// Each key's source partition: the one its events came from when its first window opened.
    key_partition: Vec<u32>,
    /// Windows per key, sorted by start.
    windows: Vec<Vec<Window>>,
    /// Timers by time: the window (key, start) closes or is purged then, if it still ends then.
    timers: BTreeMap<i64, Vec<(KeyId, i64, TimerKind)>>,
    /// Greatest event time seen per source partition.
    partitions: BTreeMap<u32, i64>,
    /// Partitions marked idle: left out of the watermark until their next event.
    idle: std::collections::BTreeSet<u32>,
    /// Set once a bounded source ended: every window closes.
    finished: bool,
    /// Windows changed since the last checkpoint.
    touched: Vec<(KeyId, i64)>,
    /// Windows removed since the last checkpoint that a checkpoint holds. (One that opened and
    /// went between two checkpoints is in none, so it costs a checkpoint nothing.)
    removed: Vec<(KeyId, i64)>,
    /// Windows updated while open, for early emission.
    early: Vec<(KeyId, i64)>,
    /// Closed windows updated by late events, written again after the batch.
    late: Vec<(KeyId, i64)>,
    out: Vec<Emission>,
    /// Per source partition (a key's rows count for its partition).
    counts: BTreeMap<u32, OperatorCounts>,
    /// Windows held now (kept as a count: status asks for it after every chunk).
    open_windows: u64,
}

impl std::fmt::Debug for WindowOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowOperator")
            .field("pipeline", &self.plan.spec.name)
            .field("keys", &self.key_bytes.len())
            .field("counts", &self.counts)
            .finish()
    }
}

/// The key column(s) of a batch, as the operator looks them up.
enum KeyColumn<'a> {
    Int(&'a Int64Array),
    Rows(arrow::row::Rows),
}

/// A column an aggregation reads, typed once per batch.
enum Input<'a> {
    None,
    I64(&'a Int64Array),
    I32(&'a Int32Array),
    F64(&'a Float64Array),
    F32(&'a Float32Array),
    Ts(&'a TimestampMicrosecondArray),
    Date(&'a Date32Array),
    Str(&'a StringArray),
    Bool(&'a BooleanArray),
}

impl Input<'_> {
    fn of(array: &ArrayRef, ty: FeatureType) -> Input<'_> {
        match ty {
            FeatureType::Int64 => Input::I64(array.as_primitive()),
            FeatureType::Int32 => Input::I32(array.as_primitive()),
            FeatureType::Float64 => Input::F64(array.as_primitive()),
            FeatureType::Float32 => Input::F32(array.as_primitive()),
            FeatureType::Timestamp => Input::Ts(array.as_primitive()),
            FeatureType::Date => Input::Date(array.as_primitive()),
            FeatureType::String => Input::Str(array.as_string()),
            FeatureType::Bool => Input::Bool(array.as_boolean()),
            FeatureType::Embedding { .. } => Input::None,
        }
    }

    #[inline]
    fn datum(&self, row: usize) -> Datum<'_> {
        macro_rules! get {
            ($a:expr, $wrap:expr) => {
                if $a.is_null(row) {
                    Datum::Null
                } else {
                    $wrap($a.value(row))
                }
            };
        }
        match self {
            Input::None => Datum::Null,
            Input::I64(a) => get!(a, Datum::I),
            Input::I32(a) => get!(a, |v: i32| Datum::I(v.into())),
            Input::F64(a) => get!(a, Datum::F),
            Input::F32(a) => get!(a, |v: f32| Datum::F(v.into())),
            Input::Ts(a) => get!(a, Datum::I),
            Input::Date(a) => get!(a, |v: i32| Datum::I(v.into())),
            Input::Str(a) => get!(a, Datum::S),
            Input::Bool(a) => get!(a, Datum::B),
        }
    }
}

fn floor_to(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

impl WindowOperator {
    pub fn new(plan: Arc<Plan>) -> Result<WindowOperator> {
        let fields = plan
            .key_indices
            .iter()
            .map(|&i| SortField::new(plan.input.columns[i].ty.arrow_type()))
            .collect();
        let converter = RowConverter::new(fields).map_err(StreamError::internal)?;
        let int_key = matches!(plan.key_indices.as_slice(), [i] if plan.input.columns[*i].ty == FeatureType::Int64);
        Ok(WindowOperator {
            plan,
            converter,
            int_key,
            int_ids: HashMap::default(),
            key_ids: HashMap::default(),
            key_bytes: Vec::new(),
            key_partition: Vec::new(),
            windows: Vec::new(),
            timers: BTreeMap::new(),
            partitions: BTreeMap::new(),
            idle: std::collections::BTreeSet::new(),
            finished: false,
            touched: Vec::new(),
            removed: Vec::new(),
            early: Vec::new(),
            late: Vec::new(),
            out: Vec::new(),
            counts: BTreeMap::new(),
            open_windows: 0,
        })
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// The current watermark (microseconds); `i64::MIN` before any event.
    pub fn watermark(&self) -> i64 {
        if self.finished {
            return i64::MAX;
        }
        let slowest = self
            .active_except(None)
            // Every partition idle: the watermark stays where the slowest left it.
            .or_else(|| self.partitions.values().copied().min());
        slowest.map_or(i64::MIN, |max| {
            max.saturating_sub(self.plan.out_of_orderness)
        })
    }

    /// The least greatest-event-time over the partitions that are not idle, but `except`.
    fn active_except(&self, except: Option<u32>) -> Option<i64> {
        self.partitions
            .iter()
            .filter(|(p, _)| Some(**p) != except && !self.idle.contains(p))
            .map(|(_, t)| *t)
            .min()
    }

    /// Leaves `partition` out of the watermark until its next event, and closes the windows
    /// the watermark then passes. What the runtime does when a partition has been quiet for
    /// the plan's idle timeout.
    pub fn mark_idle(&mut self, partition: u32) {
        if self.partitions.contains_key(&partition) && self.idle.insert(partition) {
            self.advance();
        }
    }

    /// The counters over every partition held now.
    pub fn counts(&self) -> OperatorCounts {
        let mut total = OperatorCounts {
            open_windows: self.open_windows,
            ..OperatorCounts::default()
        };
        for c in self.counts.values() {
            total.events += c.events;
            total.filtered += c.filtered;
            total.late += c.late;
            total.emitted += c.emitted;
        }
        total
    }

    /// The source partitions held now.
    pub fn partitions(&self) -> impl Iterator<Item = u32> + '_ {
        self.partitions.keys().copied()
    }

    /// Makes `partition` count towards the watermark before it has seen an event (so a
    /// partition that is assigned but quiet holds the watermark back rather than being
    /// ignored).
    pub fn add_partition(&mut self, partition: u32) {
        self.partitions.entry(partition).or_insert(i64::MIN);
        self.counts.entry(partition).or_default();
    }

    /// Forgets `partition`: its keys' windows, its watermark input, its counters and the rows
    /// of its keys not yet taken. Its last checkpoint holds all of that for whoever reads the
    /// partition next (another worker after a rebalance).
    pub fn remove_partition(&mut self, partition: u32) {
        self.partitions.remove(&partition);
        self.idle.remove(&partition);
        self.counts.remove(&partition);
        for (key, list) in self.windows.iter_mut().enumerate() {
            if self.key_partition[key] == partition {
                self.open_windows -= list.len() as u64;
                list.clear();
            }
        }
        let theirs = |key: &KeyId| self.key_partition[*key as usize] == partition;
        self.touched.retain(|(k, _)| !theirs(k));
        self.removed.retain(|(k, _)| !theirs(k));
        self.early.retain(|(k, _)| !theirs(k));
        self.late.retain(|(k, _)| !theirs(k));
        self.out.retain(|e| e.partition != partition);
    }

    /// Folds a batch of events (in the plan's input schema) from `partition` that arrived at
    /// `arrival`; then moves the watermark and closes the windows it passed. Returns the events
    /// refused as too late.
    pub fn process(
        &mut self,
        batch: &RecordBatch,
        partition: u32,
        arrival: i64,
    ) -> Result<Vec<Refused>> {
        let rows = batch.num_rows();
        let plan = self.plan.clone();
        let keep: Option<BooleanArray> = match &plan.filter {
            None => None,
            Some(expr) => {
                let values = expr.eval(batch).map_err(StreamError::internal)?;
                let zero = arrow::array::Float64Array::new_scalar(0.0);
                Some(gt(&values, &zero).map_err(StreamError::internal)?)
            }
        };
        let keys = if self.int_key {
            KeyColumn::Int(batch.column(plan.key_indices[0]).as_primitive())
        } else {
            KeyColumn::Rows(
                self.converter
                    .convert_columns(
                        &plan
                            .key_indices
                            .iter()
                            .map(|&i| batch.column(i).clone())
                            .collect::<Vec<_>>(),
                    )
                    .map_err(StreamError::internal)?,
            )
        };
        let times: &TimestampMicrosecondArray = batch.column(plan.event_time_index).as_primitive();
        let inputs: Vec<Input<'_>> = plan
            .aggs
            .iter()
            .map(|a| match (a.input, a.input_type) {
                (Some(i), Some(ty)) => Input::of(batch.column(i), ty),
                _ => Input::None,
            })
            .collect();
        // The watermark moves with every event (so which events are late depends on the order
        // events arrive in, not on how they were batched); windows close between batches.
        let mut seen = self.partitions.get(&partition).copied().unwrap_or(i64::MIN);
        if self.idle.contains(&partition) {
            // Back from idle: it counts again from where the watermark went without it, so the
            // watermark never moves back (its events behind it are late).
            let watermark = self.watermark();
            self.idle.remove(&partition);
            if watermark > i64::MIN {
                seen = seen.max(watermark.saturating_add(plan.out_of_orderness));
            }
        }
        let others = self.active_except(Some(partition)).unwrap_or(i64::MAX);
        let mut refused = Vec::new();
        let mut counts = OperatorCounts::default();
        for row in 0..rows {
            let t = times.value(row);
            let watermark = if self.finished {
                i64::MAX
            } else {
                others.min(seen).saturating_sub(plan.out_of_orderness)
            };
            // Filtered events still tell the time.
            seen = seen.max(t);
            if let Some(keep) = &keep
                && !(keep.is_valid(row) && keep.value(row))
            {
                counts.filtered += 1;
                continue;
            }
            let key = match &keys {
                KeyColumn::Int(values) => self.intern_int(values.value(row)),
                KeyColumn::Rows(rows) => self.intern(rows.row(row).as_ref()),
            };
            if self.windows[key as usize].is_empty() {
                self.key_partition[key as usize] = partition;
            }
            let accepted = match plan.window {
                WindowKind::Tumbling { size } => {
                    let start = floor_to(t, size.0);
                    self.fold(
                        key,
                        start,
                        start + size.0,
                        &inputs,
                        row,
                        t,
                        arrival,
                        watermark,
                    )
                }
                WindowKind::Hopping { size, slide } => {
                    let last = floor_to(t, slide.0);
                    let mut any = false;
                    let mut start = last - size.0 + slide.0;
                    while start <= last {
                        any |= self.fold(
                            key,
                            start,
                            start + size.0,
                            &inputs,
                            row,
                            t,
                            arrival,
                            watermark,
                        );
                        start += slide.0;
                    }
                    any
                }
                WindowKind::Session { gap } => {
                    self.fold_session(key, gap.0, &inputs, row, t, arrival, watermark)
                }
            };
            counts.events += 1;
            if !accepted {
                counts.late += 1;
                refused.push(Refused {
                    row,
                    event_time: t,
                    reason: format!(
                        "too late: event time {} is behind the watermark {} by more than the allowed lateness of {}",
                        kairos_types::value::format_timestamp(t),
                        kairos_types::value::format_timestamp(watermark),
                        crate::spec::Duration(plan.allowed_lateness)
                    ),
                });
            }
        }
        self.partitions.insert(partition, seen);
        let c = self.counts.entry(partition).or_default();
        c.events += counts.events;
        c.filtered += counts.filtered;
        c.late += counts.late;
        self.advance();
        Ok(refused)
    }

    /// A bounded source ended: the watermark goes to the end of time and every window closes.
    pub fn finish(&mut self) {
        self.finished = true;
        self.advance();
    }

    #[inline]
    fn intern_int(&mut self, key: i64) -> KeyId {
        if let Some(&id) = self.int_ids.get(&key) {
            return id;
        }
        let id = self.key_bytes.len() as KeyId;
        self.key_bytes.push(Arc::from(key.to_be_bytes()));
        self.key_partition.push(0);
        self.int_ids.insert(key, id);
        self.windows.push(Vec::new());
        id
    }

    /// The id of a key given as its bytes (row format, or a big-endian integer when restoring
    /// an integer-keyed operator).
    fn intern(&mut self, key: &[u8]) -> KeyId {
        if self.int_key
            && let Ok(bytes) = <[u8; 8]>::try_from(key)
        {
            return self.intern_int(i64::from_be_bytes(bytes));
        }
        if let Some(&id) = self.key_ids.get(key) {
            return id;
        }
        let id = self.key_bytes.len() as KeyId;
        self.key_bytes.push(Arc::from(key));
        self.key_partition.push(0);
        self.key_ids.insert(key.into(), id);
        self.windows.push(Vec::new());
        id
    }

    fn new_accs(&self) -> Vec<Acc> {
        self.plan
            .aggs
            .iter()
            .map(|a| Acc::new(a.kind, a.input_type, a.n, a.q))
            .collect()
    }

    /// Folds row `row` into window [start, end) of `key`; false when the window is past its
    /// allowed lateness.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn fold(
        &mut self,
        key: KeyId,
        start: i64,
        end: i64,
        inputs: &[Input<'_>],
        row: usize,
        t: i64,
        arrival: i64,
        watermark: i64,
    ) -> bool {
        if end.saturating_add(self.plan.allowed_lateness) <= watermark {
            return false;
        }
        let list = &mut self.windows[key as usize];
        let at = match list.iter().position(|w| w.start == start) {
            Some(at) => at,
            None => {
                let closed = end <= watermark;
                let accs = self.new_accs();
                let list = &mut self.windows[key as usize];
                let at = list.partition_point(|w| w.start < start);
                list.insert(
                    at,
                    Window {
                        start,
                        end,
                        accs,
                        closed,
                        dirty: false,
                        last_arrival: arrival,
                        in_checkpoint_list: false,
                        persisted: false,
                    },
                );
                self.open_windows += 1;
                self.schedule(key, start, end, closed);
                at
            }
        };
        let w = &mut self.windows[key as usize][at];
        Self::fold_row(w, &self.plan, inputs, row, t, arrival);
        Self::mark(
            w,
            key,
            &mut self.touched,
            &mut self.early,
            &mut self.late,
            self.plan.early_emit.is_some(),
        );
        true
    }

    /// Folds row `row` (event time `t`, arrived at `arrival`) into window `w`.
    fn fold_row(
        w: &mut Window,
        plan: &Plan,
        inputs: &[Input<'_>],
        row: usize,
        t: i64,
        arrival: i64,
    ) {
        for ((acc, agg), input) in w.accs.iter_mut().zip(&plan.aggs).zip(inputs) {
            acc.update(input.datum(row), t, agg.input.is_none());
        }
        w.last_arrival = w.last_arrival.max(arrival);
    }

    /// The timer of window (key, start): it closes at its end, or, already closed, is purged
    /// once the allowed lateness has passed too.
    fn schedule(&mut self, key: KeyId, start: i64, end: i64, closed: bool) {
        let (time, kind) = if closed {
            (
                end.saturating_add(self.plan.allowed_lateness),
                TimerKind::Purge,
            )
        } else {
            (end, TimerKind::Close)
        };
        self.timers
            .entry(time)
            .or_default()
            .push((key, start, kind));
    }

    fn mark(
        w: &mut Window,
        key: KeyId,
        touched: &mut Vec<(KeyId, i64)>,
        early: &mut Vec<(KeyId, i64)>,
        late: &mut Vec<(KeyId, i64)>,
        early_emit: bool,
    ) {
        if !w.in_checkpoint_list {
            w.in_checkpoint_list = true;
            touched.push((key, w.start));
        }
        if !w.dirty {
            w.dirty = true;
            if w.closed {
                late.push((key, w.start));
            } else if early_emit {
                early.push((key, w.start));
            }
        }
    }

    /// Session windows: the event's span [t, t + gap) merges with every session it overlaps.
    #[allow(clippy::too_many_arguments)]
    fn fold_session(
        &mut self,
        key: KeyId,
        gap: i64,
        inputs: &[Input<'_>],
        row: usize,
        t: i64,
        arrival: i64,
        watermark: i64,
    ) -> bool {
        let lateness = self.plan.allowed_lateness;
        let (mut start, mut end) = (t, t + gap);
        let list = &mut self.windows[key as usize];
        let overlapping: Vec<usize> = list
            .iter()
            .enumerate()
            .filter(|(_, w)| w.start < end && t < w.end)
            .map(|(i, _)| i)
            .collect();
        if overlapping.is_empty() && end.saturating_add(lateness) <= watermark {
            return false;
        }
        let mut merged: Option<Window> = None;
        for &i in overlapping.iter().rev() {
            let w = list.remove(i);
            self.open_windows -= 1;
            if w.persisted {
                self.removed.push((key, w.start));
            }
            start = start.min(w.start);
            end = end.max(w.end);
            merged = Some(match merged {
                None => w,
                Some(mut m) => {
                    for (a, b) in m.accs.iter_mut().zip(w.accs) {
                        a.merge(b);
                    }
                    m.closed &= w.closed;
                    m.last_arrival = m.last_arrival.max(w.last_arrival);
                    m
                }
            });
        }
        let closed = end <= watermark;
        let mut w = match merged {
            Some(mut m) => {
                // A merged session is a new window: its row is written when it closes, or at
                // once if it is already closed.
                m.closed = closed;
                m.dirty = false;
                m.in_checkpoint_list = false;
                m.persisted = false;
                m
            }
            None => Window {
                start,
                end,
                accs: self.new_accs(),
                closed,
                dirty: false,
                last_arrival: arrival,
                in_checkpoint_list: false,
                persisted: false,
            },
        };
        w.start = start;
        w.end = end;
        Self::fold_row(&mut w, &self.plan, inputs, row, t, arrival);
        self.schedule(key, start, end, closed);
        Self::mark(
            &mut w,
            key,
            &mut self.touched,
            &mut self.early,
            &mut self.late,
            self.plan.early_emit.is_some(),
        );
        let list = &mut self.windows[key as usize];
        let at = list.partition_point(|x| x.start < start);
        list.insert(at, w);
        self.open_windows += 1;
        true
    }

    fn find(&mut self, key: KeyId, start: i64) -> Option<&mut Window> {
        self.windows[key as usize]
            .iter_mut()
            .find(|w| w.start == start)
    }

    /// Fires the timers the watermark passed and writes again the closed windows late events
    /// updated.
    fn advance(&mut self) {
        let watermark = self.watermark();
        let lateness = self.plan.allowed_lateness;
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            let time = *entry.key();
            for (key, start, kind) in entry.remove() {
                match kind {
                    TimerKind::Close => {
                        let Some(w) = self.find(key, start) else {
                            continue;
                        };
                        if w.end != time || w.closed {
                            continue;
                        }
                        w.closed = true;
                        w.dirty = false;
                        let purge_at = w.end.saturating_add(lateness);
                        self.emit(key, start, true);
                        if purge_at <= watermark {
                            self.purge(key, start);
                        } else {
                            self.schedule(key, start, time, true);
                        }
                    }
                    TimerKind::Purge => {
                        let Some(w) = self.find(key, start) else {
                            continue;
                        };
                        if w.end.saturating_add(lateness) != time {
                            continue;
                        }
                        if w.dirty {
                            w.dirty = false;
                            self.emit(key, start, true);
                        }
                        self.purge(key, start);
                    }
                }
            }
        }
        for (key, start) in std::mem::take(&mut self.late) {
            if let Some(w) = self.find(key, start)
                && w.dirty
                && w.closed
            {
                w.dirty = false;
                self.emit(key, start, true);
            }
        }
    }

    /// Writes the windows still open that changed since they were last written.
    pub fn emit_early(&mut self) {
        for (key, start) in std::mem::take(&mut self.early) {
            if let Some(w) = self.find(key, start)
                && w.dirty
                && !w.closed
            {
                w.dirty = false;
                self.emit(key, start, false);
            }
        }
    }

    fn emit(&mut self, key: KeyId, start: i64, closed: bool) {
        let plan = self.plan.clone();
        let key_bytes = self.key_bytes[key as usize].clone();
        let partition = self.key_partition[key as usize];
        let Some(w) = self.find(key, start) else {
            return;
        };
        let values = w
            .accs
            .iter_mut()
            .zip(&plan.aggs)
            .map(|(acc, agg)| acc.value(agg.output_type))
            .collect();
        let emission = Emission {
            key: key_bytes,
            start: w.start,
            end: w.end,
            values,
            last_arrival: w.last_arrival,
            closed,
            partition,
        };
        if !w.in_checkpoint_list {
            w.in_checkpoint_list = true;
            self.touched.push((key, start));
        }
        self.counts.entry(partition).or_default().emitted += 1;
        self.out.push(emission);
    }

    fn purge(&mut self, key: KeyId, start: i64) {
        let list = &mut self.windows[key as usize];
        if let Some(at) = list.iter().position(|w| w.start == start) {
            if list.remove(at).persisted {
                self.removed.push((key, start));
            }
            self.open_windows -= 1;
        }
    }

    /// The rows written since the last call.
    pub fn take_emissions(&mut self) -> Vec<Emission> {
        std::mem::take(&mut self.out)
    }

    /// The rows as a batch in the output feature group's schema.
    pub fn to_batch(&self, emissions: &[Emission]) -> Result<RecordBatch> {
        let plan = &self.plan;
        let mut columns: Vec<ArrayRef> = if self.int_key {
            let keys = emissions.iter().map(|e| {
                i64::from_be_bytes(e.key.as_ref().try_into().expect("8-byte integer key"))
            });
            vec![Arc::new(Int64Array::from_iter_values(keys))]
        } else {
            let parser = self.converter.parser();
            self.converter
                .convert_rows(emissions.iter().map(|e| parser.parse(&e.key)))
                .map_err(StreamError::internal)?
        };
        let starts = TimestampMicrosecondArray::from_iter_values(emissions.iter().map(|e| e.start))
            .with_timezone(kairos_types::schema::UTC);
        let ends = TimestampMicrosecondArray::from_iter_values(emissions.iter().map(|e| e.end))
            .with_timezone(kairos_types::schema::UTC);
        columns.push(Arc::new(starts));
        columns.push(Arc::new(ends));
        for (i, agg) in plan.aggs.iter().enumerate() {
            columns.push(Value::to_array(
                agg.output_type,
                emissions.iter().map(|e| &e.values[i]),
            ));
        }
        RecordBatch::try_new(plan.output.arrow_schema(), columns).map_err(StreamError::internal)
    }

    /// The state changed since the last call, per partition held, to be written by a
    /// checkpoint (every partition held has an entry, changed or not).
    pub fn checkpoint_delta(&mut self) -> Result<BTreeMap<u32, StateDelta>> {
        let mut deltas: BTreeMap<u32, StateDelta> = self
            .partitions
            .iter()
            .map(|(&partition, &max_event_time)| {
                let counts = self.counts.get(&partition).copied().unwrap_or_default();
                let delta = StateDelta {
                    partition,
                    max_event_time,
                    counts,
                    ..StateDelta::default()
                };
                (partition, delta)
            })
            .collect();
        let state_key = |key_bytes: &[u8], start: i64| {
            let mut state_key = key_bytes.to_vec();
            state_key.extend_from_slice(&start.to_be_bytes());
            state_key
        };
        for (key, start) in std::mem::take(&mut self.touched) {
            let Some(delta) = deltas.get_mut(&self.key_partition[key as usize]) else {
                continue; // a partition let go of: its next owner has its state
            };
            let Some(w) = self.windows[key as usize]
                .iter_mut()
                .find(|w| w.start == start)
            else {
                continue; // gone since; deleted below if a checkpoint holds it
            };
            if !w.in_checkpoint_list {
                continue; // already written under this key in this delta
            }
            w.in_checkpoint_list = false;
            w.persisted = true;
            let bytes = postcard::to_allocvec(&*w).map_err(StreamError::internal)?;
            delta
                .puts
                .push((state_key(&self.key_bytes[key as usize], start), bytes));
        }
        for (key, start) in std::mem::take(&mut self.removed) {
            let Some(delta) = deltas.get_mut(&self.key_partition[key as usize]) else {
                continue;
            };
            // A window at the same start now (a merged session) was put above instead.
            if self.windows[key as usize].iter().any(|w| w.start == start) {
                continue;
            }
            delta
                .deletes
                .push(state_key(&self.key_bytes[key as usize], start));
        }
        Ok(deltas)
    }

    /// Takes on `partition` from its checkpoint: every (state key, window) of its keys, its
    /// greatest event time and its counters.
    pub fn restore_partition<'a>(
        &mut self,
        partition: u32,
        windows: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        max_event_time: i64,
        counts: OperatorCounts,
    ) -> Result<()> {
        self.partitions.insert(partition, max_event_time);
        self.counts.insert(
            partition,
            OperatorCounts {
                open_windows: 0,
                ..counts
            },
        );
        for (state_key, bytes) in windows {
            let (key, _) = state_key.split_at(state_key.len() - 8);
            let mut w: Window = postcard::from_bytes(bytes).map_err(|e| {
                StreamError::Checkpoint(format!("window state does not decode: {e}"))
            })?;
            w.persisted = true;
            let id = self.intern(key);
            self.key_partition[id as usize] = partition;
            self.schedule(id, w.start, w.end, w.closed);
            if w.dirty {
                if w.closed {
                    self.late.push((id, w.start));
                } else if self.plan.early_emit.is_some() {
                    self.early.push((id, w.start));
                }
            }
            let list = &mut self.windows[id as usize];
            let at = list.partition_point(|x| x.start < w.start);
            list.insert(at, w);
            self.open_windows += 1;
        }
        Ok(())
    }
}
