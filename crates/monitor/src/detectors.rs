//! Streaming concept-drift detectors over a stream of numbers (a model's errors, a feature):
//! ADWIN, Page-Hinkley and DDM with River 0.26's defaults and update rules, so that they signal
//! at the same indices as River on the same stream (`tests/fixtures/river_detectors.json`).
//! Each update is O(1) amortised: ADWIN's window is a fixed number of bucket rows per doubling
//! of its length and is checked for a cut every `clock` updates.
//!
//! As in River, a detector that signalled drift starts afresh on its next update.

use serde::{Deserialize, Serialize};

/// What a detector says after an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Stable,
    Warning,
    Drift,
}

pub trait DriftDetector {
    fn update(&mut self, x: f64) -> Signal;
}

/// Which detector, with its settings (River's defaults when left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DetectorSpec {
    Adwin(#[serde(default)] AdwinOptions),
    PageHinkley(#[serde(default)] PageHinkleyOptions),
    Ddm(#[serde(default)] DdmOptions),
}

impl DetectorSpec {
    pub fn build(&self) -> Box<dyn DriftDetector + Send> {
        match self {
            DetectorSpec::Adwin(o) => Box::new(Adwin::new(o.clone())),
            DetectorSpec::PageHinkley(o) => Box::new(PageHinkley::new(o.clone())),
            DetectorSpec::Ddm(o) => Box::new(Ddm::new(o.clone())),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            DetectorSpec::Adwin(_) => "adwin",
            DetectorSpec::PageHinkley(_) => "page_hinkley",
            DetectorSpec::Ddm(_) => "ddm",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdwinOptions {
    /// Significance of a cut.
    pub delta: f64,
    /// Check for a cut every this many updates.
    pub clock: u32,
    /// Sub-windows shorter than this are not compared.
    pub min_window_length: u32,
    /// No check before the window holds more than this many values.
    pub grace_period: u32,
}

impl Default for AdwinOptions {
    fn default() -> Self {
        Self {
            delta: 0.002,
            clock: 32,
            min_window_length: 5,
            grace_period: 10,
        }
    }
}

/// Buckets of one size kept before the two oldest merge into one of the next size (ADWIN2's M).
const MAX_BUCKETS: usize = 5;

/// One row of ADWIN's buckets: up to `MAX_BUCKETS + 1` buckets of 2^row values each, oldest
/// first, each as its total and its variance sum.
#[derive(Debug, Clone, Default)]
struct BucketRow {
    len: usize,
    total: [f64; MAX_BUCKETS + 1],
    variance: [f64; MAX_BUCKETS + 1],
}

impl BucketRow {
    fn push(&mut self, total: f64, variance: f64) {
        self.total[self.len] = total;
        self.variance[self.len] = variance;
        self.len += 1;
    }

    /// Drops the `n` oldest buckets.
    fn drop_oldest(&mut self, n: usize) {
        self.total.copy_within(n.., 0);
        self.variance.copy_within(n.., 0);
        let keep = self.total.len() - n;
        self.total[keep..].fill(0.0);
        self.variance[keep..].fill(0.0);
        self.len -= n;
    }
}

/// ADaptive WINdowing (Bifet and Gavaldà, 2007), ADWIN2's exponential histogram: the window
/// shrinks from its old end while two sub-windows have means further apart than Hoeffding's
/// bound allows.
#[derive(Debug, Clone)]
pub struct Adwin {
    options: AdwinOptions,
    /// Row r holds buckets of 2^r values; row 0 the newest.
    rows: Vec<BucketRow>,
    total: f64,
    variance: f64,
    width: f64,
    tick: u64,
    detections: u64,
    drift: bool,
}

impl Adwin {
    pub fn new(options: AdwinOptions) -> Self {
        Self {
            options,
            rows: vec![BucketRow::default()],
            total: 0.0,
            variance: 0.0,
            width: 0.0,
            tick: 0,
            detections: 0,
            drift: false,
        }
    }

    /// Values in the window.
    pub fn width(&self) -> f64 {
        self.width
    }

    /// The window's mean.
    pub fn estimation(&self) -> f64 {
        if self.width == 0.0 {
            0.0
        } else {
            self.total / self.width
        }
    }

    pub fn detections(&self) -> u64 {
        self.detections
    }

    fn bucket_size(row: usize) -> f64 {
        (1u64 << row) as f64
    }

    fn insert(&mut self, value: f64) {
        self.rows[0].push(value, 0.0);
        self.width += 1.0;
        if self.width > 1.0 {
            let mean = self.total / (self.width - 1.0);
            self.variance += (self.width - 1.0) * (value - mean) * (value - mean) / self.width;
        }
        self.total += value;
        self.compress();
    }

    /// Merges the two oldest buckets of a full row into one of the next, row by row.
    fn compress(&mut self) {
        let mut row = 0;
        while self.rows[row].len == MAX_BUCKETS + 1 {
            if row + 1 == self.rows.len() {
                self.rows.push(BucketRow::default());
            }
            let n = Self::bucket_size(row);
            let r = &self.rows[row];
            let (mu1, mu2) = (r.total[0] / n, r.total[1] / n);
            let total = r.total[0] + r.total[1];
            let variance =
                r.variance[0] + r.variance[1] + n * n * (mu1 - mu2) * (mu1 - mu2) / (2.0 * n);
            self.rows[row + 1].push(total, variance);
            self.rows[row].drop_oldest(2);
            if self.rows[row + 1].len <= MAX_BUCKETS {
                break;
            }
            row += 1;
        }
    }

    /// Drops the oldest bucket; returns its size.
    fn delete_oldest(&mut self) -> f64 {
        let last = self.rows.len() - 1;
        let n = Self::bucket_size(last);
        let (u, v) = (self.rows[last].total[0], self.rows[last].variance[0]);
        let mu = u / n;
        self.width -= n;
        self.total -= u;
        let mu_window = self.total / self.width;
        self.variance -=
            v + n * self.width * (mu - mu_window) * (mu - mu_window) / (n + self.width);
        self.rows[last].drop_oldest(1);
        if self.rows[last].len == 0 && last > 0 {
            self.rows.pop();
        }
        n
    }

    fn detect_change(&mut self) -> bool {
        let mut change = false;
        self.tick += 1;
        if !self.tick.is_multiple_of(self.options.clock as u64)
            || self.width <= self.options.grace_period as f64
        {
            return false;
        }
        let min_len = self.options.min_window_length as f64;
        let mut reduce = true;
        while reduce {
            reduce = false;
            let (mut n0, mut n1) = (0.0, self.width);
            let (mut u0, mut u1) = (0.0, self.total);
            'cuts: for row in (0..self.rows.len()).rev() {
                let n2 = Self::bucket_size(row);
                let len = self.rows[row].len;
                for k in 0..len {
                    let u2 = self.rows[row].total[k];
                    n0 += n2;
                    n1 -= n2;
                    u0 += u2;
                    u1 -= u2;
                    if row == 0 && k + 1 == len {
                        // The cut after the newest value leaves W1 empty.
                        break 'cuts;
                    }
                    let delta_mean = u0 / n0 - u1 / n1;
                    if n1 >= min_len && n0 >= min_len && self.cut(n0, n1, delta_mean) {
                        reduce = true;
                        change = true;
                        if self.width > 0.0 {
                            self.delete_oldest();
                            break 'cuts;
                        }
                    }
                }
            }
        }
        if change {
            self.detections += 1;
        }
        change
    }

    fn cut(&self, n0: f64, n1: f64, delta_mean: f64) -> bool {
        let min_len = self.options.min_window_length as f64;
        let delta_prime = (2.0 * self.width.ln() / self.options.delta).ln();
        let m_recip = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0);
        let variance_in_window = self.variance / self.width;
        let epsilon = (2.0 * m_recip * variance_in_window * delta_prime).sqrt()
            + 2.0 / 3.0 * delta_prime * m_recip;
        delta_mean.abs() > epsilon
    }
}

impl DriftDetector for Adwin {
    fn update(&mut self, x: f64) -> Signal {
        if self.drift {
            let detections = self.detections;
            *self = Self::new(self.options.clone());
            self.detections = detections;
        }
        self.insert(x);
        self.drift = self.detect_change();
        if self.drift {
            Signal::Drift
        } else {
            Signal::Stable
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PageHinkleyOptions {
    /// Values seen before a drift can be signalled.
    pub min_instances: u32,
    /// The magnitude of change tolerated.
    pub delta: f64,
    /// The cumulative deviation that signals drift.
    pub threshold: f64,
    /// The forgetting factor of the cumulative sums.
    pub alpha: f64,
    /// Which way of change to look for.
    pub mode: PageHinkleyMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageHinkleyMode {
    Up,
    Down,
    Both,
}

impl Default for PageHinkleyOptions {
    fn default() -> Self {
        Self {
            min_instances: 30,
            delta: 0.005,
            threshold: 50.0,
            alpha: 1.0 - 0.0001,
            mode: PageHinkleyMode::Both,
        }
    }
}

/// The Page-Hinkley test (Page, 1954): cumulative deviations from the running mean, with a
/// forgetting factor, against their extreme so far.
#[derive(Debug, Clone)]
pub struct PageHinkley {
    options: PageHinkleyOptions,
    mean: RunningMean,
    sum_increase: f64,
    sum_decrease: f64,
    min_increase: f64,
    max_decrease: f64,
    drift: bool,
}

impl PageHinkley {
    pub fn new(options: PageHinkleyOptions) -> Self {
        Self {
            options,
            mean: RunningMean::default(),
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: f64::INFINITY,
            max_decrease: -1.0,
            drift: false,
        }
    }
}

impl DriftDetector for PageHinkley {
    fn update(&mut self, x: f64) -> Signal {
        if self.drift {
            *self = Self::new(self.options.clone());
        }
        self.mean.update(x);
        let dev = x - self.mean.mean;
        let o = &self.options;
        self.sum_increase = o.alpha * self.sum_increase + dev - o.delta;
        self.sum_decrease = o.alpha * self.sum_decrease + dev + o.delta;
        self.min_increase = self.min_increase.min(self.sum_increase);
        self.max_decrease = self.max_decrease.max(self.sum_decrease);
        if self.mean.n >= o.min_instances as f64 {
            let up = self.sum_increase - self.min_increase > o.threshold;
            let down = self.max_decrease - self.sum_decrease > o.threshold;
            self.drift = match o.mode {
                PageHinkleyMode::Up => up,
                PageHinkleyMode::Down => down,
                PageHinkleyMode::Both => up || down,
            };
        }
        if self.drift {
            Signal::Drift
        } else {
            Signal::Stable
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdmOptions {
    /// Values seen before a warning or a drift can be signalled.
    pub warm_start: u32,
    /// Standard deviations above the best error rate that warn.
    pub warning_threshold: f64,
    /// Standard deviations above the best error rate that signal drift.
    pub drift_threshold: f64,
}

impl Default for DdmOptions {
    fn default() -> Self {
        Self {
            warm_start: 30,
            warning_threshold: 2.0,
            drift_threshold: 3.0,
        }
    }
}

/// The Drift Detection Method (Gama et al., 2004) on a stream of errors (1) and successes (0):
/// the error rate plus its binomial standard deviation against the lowest seen so far.
#[derive(Debug, Clone)]
pub struct Ddm {
    options: DdmOptions,
    p: RunningMean,
    p_min: f64,
    s_min: f64,
    ps_min: f64,
    warning: bool,
    drift: bool,
}

impl Ddm {
    pub fn new(options: DdmOptions) -> Self {
        Self {
            options,
            p: RunningMean::default(),
            p_min: f64::NAN,
            s_min: f64::NAN,
            ps_min: f64::INFINITY,
            warning: false,
            drift: false,
        }
    }
}

impl DriftDetector for Ddm {
    fn update(&mut self, x: f64) -> Signal {
        if self.drift {
            *self = Self::new(self.options.clone());
        }
        self.p.update(x);
        let p = self.p.mean;
        let n = self.p.n;
        let s = (p * (1.0 - p) / n).sqrt();
        if n > self.options.warm_start as f64 {
            if p + s <= self.ps_min {
                self.p_min = p;
                self.s_min = s;
                self.ps_min = p + s;
            }
            self.warning = p + s > self.p_min + self.options.warning_threshold * self.s_min;
            if p + s > self.p_min + self.options.drift_threshold * self.s_min {
                self.drift = true;
                self.warning = false;
            }
        }
        if self.drift {
            Signal::Drift
        } else if self.warning {
            Signal::Warning
        } else {
            Signal::Stable
        }
    }
}

/// River's `stats.Mean`: the incremental mean with its count.
#[derive(Debug, Clone, Default)]
struct RunningMean {
    n: f64,
    mean: f64,
}

impl RunningMean {
    fn update(&mut self, x: f64) {
        self.n += 1.0;
        self.mean += (1.0 / self.n) * (x - self.mean);
    }
}
