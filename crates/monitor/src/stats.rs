//! Two-sample statistics with SciPy's definitions, on samples sorted once: the
//! Kolmogorov–Smirnov test (`scipy.stats.ks_2samp`, method `auto`), the Wasserstein distance
//! (`scipy.stats.wasserstein_distance`), the Jensen–Shannon distance
//! (`scipy.spatial.distance.jensenshannon`), Pearson's chi-squared test
//! (`scipy.stats.chisquare`), and the binned shares Evidently compares (`get_binned_data`).
//! `tests/fixtures/make_fixtures.py` records SciPy's values; the tests hold these to 1e-9.

/// Past this many rows in either sample the p-value of the Kolmogorov–Smirnov test comes from
/// the limiting Kolmogorov distribution instead of the exact one (SciPy's `MAX_AUTO_N`).
pub const KS_EXACT_MAX_ROWS: usize = 10_000;

/// A sample of finite numbers, sorted ascending.
#[derive(Debug, Clone, PartialEq)]
pub struct Sorted(Vec<f64>);

impl Sorted {
    /// Sorts the finite values of `values`; NaN and infinities are left out (a missing value
    /// has no place on the number line).
    pub fn new(mut values: Vec<f64>) -> Self {
        values.retain(|v| v.is_finite());
        values.sort_unstable_by(f64::total_cmp);
        Self(values)
    }

    pub fn values(&self) -> &[f64] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Rows at or below `value`.
    fn count_le(&self, value: f64) -> usize {
        self.0.partition_point(|v| *v <= value)
    }

    /// Rows below `value`.
    fn count_lt(&self, value: f64) -> usize {
        self.0.partition_point(|v| *v < value)
    }

    /// The population standard deviation (NumPy's `std`).
    pub fn std(&self) -> f64 {
        let n = self.0.len() as f64;
        let mean = self.0.iter().sum::<f64>() / n;
        (self.0.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt()
    }

    /// Distinct values, at most `limit + 1` of them counted.
    fn distinct_up_to(&self, limit: usize) -> usize {
        let mut distinct = 0;
        let mut last = None;
        for v in &self.0 {
            if last != Some(*v) {
                distinct += 1;
                if distinct > limit {
                    break;
                }
                last = Some(*v);
            }
        }
        distinct
    }
}

/// The two-sample Kolmogorov–Smirnov test, two-sided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsTest {
    /// The greatest distance between the two empirical distribution functions.
    pub statistic: f64,
    pub p_value: f64,
    /// Whether the p-value is exact (both samples within [`KS_EXACT_MAX_ROWS`]).
    pub exact: bool,
}

/// `scipy.stats.ks_2samp(a, b)`; both samples non-empty. Within [`KS_EXACT_MAX_ROWS`] the
/// p-value is SciPy's exact one (lattice paths, Hodges' inside method with Viehmann's
/// recursion for 1 − p); past it, the limiting Kolmogorov distribution at √(n·m/(n+m))·D.
pub fn ks_2samp(a: &Sorted, b: &Sorted) -> KsTest {
    let (n1, n2) = (a.len() as u64, b.len() as u64);
    assert!(
        n1 > 0 && n2 > 0,
        "the Kolmogorov–Smirnov test needs two non-empty samples"
    );
    let g = gcd(n1, n2);
    // The distance in units of 1/lcm(n1, n2), so that it is an exact integer.
    let (step1, step2) = (n2 / g, n1 / g);
    let lcm = n1 / g * n2;
    let (x, y) = (a.values(), b.values());
    let (mut i, mut j, mut h) = (0usize, 0usize, 0u64);
    while i < x.len() || j < y.len() {
        // The next distinct value; every row equal to it moves both distribution functions.
        let v = match (x.get(i), y.get(j)) {
            (Some(p), Some(q)) => p.min(*q),
            (Some(p), None) => *p,
            (None, Some(q)) => *q,
            (None, None) => unreachable!(),
        };
        while i < x.len() && x[i] == v {
            i += 1;
        }
        while j < y.len() && y[j] == v {
            j += 1;
        }
        h = h.max((i as u64 * step1).abs_diff(j as u64 * step2));
    }
    let statistic = h as f64 / lcm as f64;
    let exact = n1.max(n2) as usize <= KS_EXACT_MAX_ROWS;
    if exact {
        let p = if h == 0 {
            Some(1.0)
        } else if n1 == n2 {
            Some(prob_outside_square(n1, h))
        } else {
            Some(outer_prob_inside(n1, n2, g, h))
        };
        if let Some(p) = p.filter(|p| (0.0..=1.0).contains(p)) {
            return KsTest {
                statistic,
                p_value: p,
                exact,
            };
        }
    }
    let en = (n1 as f64 * n2 as f64) / (n1 + n2) as f64;
    KsTest {
        statistic,
        p_value: kolmogorov_sf(en.sqrt() * statistic).clamp(0.0, 1.0),
        exact: false,
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// P(D ≥ h/n) for two samples of n rows (SciPy's `_compute_prob_outside_square`): the
/// alternating sum of binomial ratios evaluated Horner-like to avoid cancellation.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as f64, h as f64);
    let mut p = 0.0;
    let mut k = (n / h).floor();
    while k >= 0.0 {
        let mut p1 = 1.0;
        let mut j = 0.0;
        while j < h {
            p1 = (n - k * h - j) * p1 / (n + k * h + j + 1.0);
            j += 1.0;
        }
        p = p1 * (1.0 - p);
        k -= 1.0;
    }
    2.0 * p
}

/// The share of lattice paths from (0, 0) to (m, n) that leave the band |x/m − y/n| < h/lcm
/// (SciPy's `_compute_outer_prob_inside_method`), one sliding column at a time.
fn outer_prob_inside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (m, n, g, h) = (m as i64, n as i64, g as i64, h as i64);
    let (mg, ng) = (m / g, n / g);
    let floor_div = |a: i64| a.div_euclid(mg);
    let ceil_div = |a: i64| -(-a).div_euclid(mg);
    let mut minj = 0i64;
    let mut maxj = ceil_div(h).min(n + 1);
    let mut curlen = maxj - minj;
    let len = (2 * maxj + 2).min(n + 1) as usize;
    let mut column = vec![1.0f64; len];
    column[minj as usize..maxj as usize].fill(0.0);
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        minj = (floor_div(ng * i - h) + 1).max(0).min(n);
        maxj = ceil_div(ng * i + h).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        let fi = i as f64;
        for jj in 0..(maxj - minj) {
            let j = (jj + minj) as f64;
            val = (column[(jj + minj - lastminj) as usize] * fi + val * j) / (fi + j);
            column[jj as usize] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let from = (maxj - minj) as usize;
            column[from..from + (lastlen - curlen) as usize].fill(1.0);
        }
    }
    column[(maxj - minj - 1) as usize]
}

/// The survival function of the limiting Kolmogorov distribution (`scipy.special.kolmogorov`):
/// Jacobi's theta form below x = 0.82, the alternating series above it.
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x <= 0.82 {
        let w = (2.0 * std::f64::consts::PI).sqrt() / x;
        let logu8 = -std::f64::consts::PI * std::f64::consts::PI / (x * x); // ln(u^8)
        let u = (logu8 / 8.0).exp();
        if u == 0.0 {
            return 1.0;
        }
        let u8 = logu8.exp();
        // Σ u^((2k−1)²) = u (1 + u^8 + u^24 + u^48 + …), enough terms for doubles below 0.82.
        let (u16, u24) = (u8 * u8, u8 * u8 * u8);
        let cdf = w * u * (1.0 + u8 * (1.0 + u16 * (1.0 + u24 * (1.0 + u16 * u16))));
        return 1.0 - cdf;
    }
    let mut sf = 0.0;
    let mut sign = 1.0;
    for k in 1..=100 {
        let k = k as f64;
        let term = (-2.0 * k * k * x * x).exp();
        sf += sign * term;
        if term <= f64::EPSILON * sf.abs() * 1e-3 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sf).clamp(0.0, 1.0)
}

/// `scipy.stats.wasserstein_distance(a, b)`: the area between the two empirical distribution
/// functions.
pub fn wasserstein(a: &Sorted, b: &Sorted) -> f64 {
    let (x, y) = (a.values(), b.values());
    let (n1, n2) = (x.len() as f64, y.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut distance = 0.0;
    let mut previous: Option<f64> = None;
    while i < x.len() || j < y.len() {
        let v = match (x.get(i), y.get(j)) {
            (Some(p), Some(q)) => p.min(*q),
            (Some(p), None) => *p,
            (None, Some(q)) => *q,
            (None, None) => unreachable!(),
        };
        if let Some(p) = previous {
            // Between the previous value and this one both functions stand still.
            distance += (i as f64 / n1 - j as f64 / n2).abs() * (v - p);
        }
        while i < x.len() && x[i] == v {
            i += 1;
        }
        while j < y.len() && y[j] == v {
            j += 1;
        }
        previous = Some(v);
    }
    distance
}

/// Equal-width bin edges over both samples together (`numpy.histogram_bin_edges`).
pub fn bin_edges(a: &Sorted, b: &Sorted, bins: usize) -> Vec<f64> {
    let first = a.values()[0].min(b.values()[0]);
    let last = a.values()[a.len() - 1].max(b.values()[b.len() - 1]);
    let (first, last) = if first == last {
        (first - 0.5, last + 0.5)
    } else {
        (first, last)
    };
    let step = (last - first) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|i| i as f64 * step + first).collect();
    edges[bins] = last;
    edges
}

/// Rows per bin (`numpy.histogram(sample, edges)`): bins are closed on the left, the last on
/// both sides; rows outside the edges are not counted.
pub fn histogram(sample: &Sorted, edges: &[f64]) -> Vec<u64> {
    let bins = edges.len() - 1;
    (0..bins)
        .map(|i| {
            let high = if i + 1 == bins {
                sample.count_le(edges[i + 1])
            } else {
                sample.count_lt(edges[i + 1])
            };
            (high - sample.count_lt(edges[i])) as u64
        })
        .collect()
}

/// Shares of two samples over the same bins or categories, as Evidently compares them.
#[derive(Debug, Clone, PartialEq)]
pub struct Binned {
    /// Bin edges; `None` when each share is a distinct value's (`labels` names them).
    pub edges: Option<Vec<f64>>,
    pub labels: Vec<String>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// Evidently's `get_binned_data` for a numerical column: equal-width bins over both samples
/// when the reference holds more than 20 distinct values, else one share per value.
pub fn binned_numerical(reference: &Sorted, current: &Sorted, bins: usize) -> Binned {
    if reference.distinct_up_to(20) > 20 {
        let edges = bin_edges(reference, current, bins);
        let shares = |s: &Sorted| {
            let n = s.len() as f64;
            histogram(s, &edges)
                .into_iter()
                .map(|c| c as f64 / n)
                .collect::<Vec<_>>()
        };
        let labels = edges.windows(2).map(|w| format!("{}", w[0])).collect();
        return Binned {
            reference: shares(reference),
            current: shares(current),
            edges: Some(edges),
            labels,
        };
    }
    let mut values: Vec<f64> = reference.values().to_vec();
    values.extend_from_slice(current.values());
    values.sort_unstable_by(f64::total_cmp);
    values.dedup();
    let shares = |s: &Sorted| {
        let n = s.len() as f64;
        values
            .iter()
            .map(|v| (s.count_le(*v) - s.count_lt(*v)) as f64 / n)
            .collect::<Vec<_>>()
    };
    Binned {
        reference: shares(reference),
        current: shares(current),
        labels: values.iter().map(|v| v.to_string()).collect(),
        edges: None,
    }
}

/// Counts of a categorical column's values, in one order for both samples.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryCounts {
    pub categories: Vec<String>,
    pub reference: Vec<u64>,
    pub current: Vec<u64>,
}

impl CategoryCounts {
    /// Counts both samples over the union of their values (missing values left out).
    pub fn new<'a>(
        reference: impl IntoIterator<Item = &'a str>,
        current: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut index: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for v in reference {
            index.entry(v).or_default().0 += 1;
        }
        for v in current {
            index.entry(v).or_default().1 += 1;
        }
        let mut counts = Self {
            categories: Vec::with_capacity(index.len()),
            reference: Vec::with_capacity(index.len()),
            current: Vec::with_capacity(index.len()),
        };
        for (category, (r, c)) in index {
            counts.categories.push(category.to_string());
            counts.reference.push(r);
            counts.current.push(c);
        }
        counts
    }

    pub fn reference_rows(&self) -> u64 {
        self.reference.iter().sum()
    }

    pub fn current_rows(&self) -> u64 {
        self.current.iter().sum()
    }

    /// The shares of each category in both samples.
    pub fn binned(&self) -> Binned {
        let shares = |counts: &[u64]| {
            let n = counts.iter().sum::<u64>() as f64;
            counts.iter().map(|c| *c as f64 / n).collect::<Vec<_>>()
        };
        Binned {
            edges: None,
            labels: self.categories.clone(),
            reference: shares(&self.reference),
            current: shares(&self.current),
        }
    }
}

/// Pearson's chi-squared test of the current counts against the reference's shares
/// (`scipy.stats.chisquare(current, reference · n_current / n_reference)`), as Evidently runs
/// it. A category the reference never saw makes the statistic infinite and the p-value 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChiSquared {
    pub statistic: f64,
    pub p_value: f64,
}

pub fn chi_squared(counts: &CategoryCounts) -> ChiSquared {
    let scale = counts.current_rows() as f64 / counts.reference_rows() as f64;
    let mut statistic = 0.0;
    for (r, c) in counts.reference.iter().zip(&counts.current) {
        let expected = *r as f64 * scale;
        let diff = *c as f64 - expected;
        statistic += if expected == 0.0 {
            if *c == 0 { 0.0 } else { f64::INFINITY }
        } else {
            diff * diff / expected
        };
    }
    let dof = counts.categories.len().saturating_sub(1) as f64;
    let p_value = if dof == 0.0 {
        1.0
    } else {
        chi_squared_sf(statistic, dof)
    };
    ChiSquared { statistic, p_value }
}

/// The survival function of the chi-squared distribution with `dof` degrees of freedom.
pub fn chi_squared_sf(x: f64, dof: f64) -> f64 {
    if x.is_infinite() {
        return 0.0;
    }
    gamma_q(dof / 2.0, x / 2.0)
}

/// `scipy.spatial.distance.jensenshannon(p, q)` with the natural logarithm: both normalised
/// to sum to one.
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    let rel_entr = |x: f64, y: f64| {
        if x > 0.0 && y > 0.0 {
            x * (x / y).ln()
        } else if x == 0.0 && y >= 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    };
    let (mut left, mut right) = (0.0, 0.0);
    for (p, q) in p.iter().zip(q) {
        let (p, q) = (p / sp, q / sq);
        let m = (p + q) / 2.0;
        left += rel_entr(p, m);
        right += rel_entr(q, m);
    }
    ((left + right) / 2.0).sqrt()
}

/// The population stability index Σ (r − c)·ln(r/c) over shares, with Evidently's stand-in
/// for an empty bin (a millionth of the smallest share when that is at most 0.0001, else
/// 0.0001), so that a bin one side never saw counts instead of dividing by zero.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    let (reference, current) = (fill_zeroes(reference), fill_zeroes(current));
    reference
        .iter()
        .zip(&current)
        .map(|(r, c)| (r - c) * (r / c).ln())
        .sum()
}

fn fill_zeroes(shares: &[f64]) -> Vec<f64> {
    let smallest = shares
        .iter()
        .copied()
        .filter(|s| *s != 0.0)
        .fold(f64::INFINITY, f64::min);
    let fill = if smallest <= 0.0001 {
        smallest / 1e6
    } else {
        0.0001
    };
    shares
        .iter()
        .map(|s| if *s == 0.0 { fill } else { *s })
        .collect()
}

/// The regularised upper incomplete gamma function Q(a, x) (Cephes' `igamc`): a power series
/// for P below x < max(1, a), a continued fraction for Q above it.
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if x.is_nan() || a.is_nan() || x < 0.0 || a <= 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    if x < 1.0 || x < a {
        return 1.0 - gamma_p_series(a, x);
    }
    let log_front = a * x.ln() - x - ln_gamma(a);
    if log_front < -709.0 {
        return 0.0;
    }
    let front = log_front.exp();
    const BIG: f64 = 4.503599627370496e15;
    const BIG_INV: f64 = 2.220446049250313e-16;
    let mut y = 1.0 - a;
    let mut z = x + y + 1.0;
    let mut c = 0.0;
    let (mut pkm2, mut qkm2) = (1.0, x);
    let (mut pkm1, mut qkm1) = (x + 1.0, z * x);
    let mut ans = pkm1 / qkm1;
    loop {
        c += 1.0;
        y += 1.0;
        z += 2.0;
        let yc = y * c;
        let pk = pkm1 * z - pkm2 * yc;
        let qk = qkm1 * z - qkm2 * yc;
        let t = if qk != 0.0 {
            let r = pk / qk;
            let t = ((ans - r) / r).abs();
            ans = r;
            t
        } else {
            1.0
        };
        (pkm2, pkm1, qkm2, qkm1) = (pkm1, pk, qkm1, qk);
        if pk.abs() > BIG {
            pkm2 *= BIG_INV;
            pkm1 *= BIG_INV;
            qkm2 *= BIG_INV;
            qkm1 *= BIG_INV;
        }
        if t <= f64::EPSILON / 2.0 || c > 10_000.0 {
            break;
        }
    }
    ans * front
}

fn gamma_p_series(a: f64, x: f64) -> f64 {
    let log_front = a * x.ln() - x - ln_gamma(a);
    if log_front < -709.0 {
        return 0.0;
    }
    let (mut r, mut c, mut sum) = (a, 1.0, 1.0);
    loop {
        r += 1.0;
        c *= x / r;
        sum += c;
        if c / sum <= f64::EPSILON / 2.0 {
            break;
        }
    }
    sum * log_front.exp() / a
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine terms: about 15 significant digits).
pub fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (i, c) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_of_integers_is_the_log_factorial() {
        let mut factorial = 1.0f64;
        for n in 1..30 {
            let expected = factorial.ln();
            let got = ln_gamma(n as f64);
            assert!(
                (got - expected).abs() <= 1e-12 * expected.abs().max(1.0),
                "ln Γ({n}) = {got}, expected {expected}"
            );
            factorial *= n as f64;
        }
    }

    #[test]
    fn chi_squared_with_two_degrees_of_freedom_is_exponential() {
        // Q(1, x/2) = exp(−x/2) exactly.
        for x in [0.1, 1.0, 3.0, 10.0, 50.0, 300.0] {
            let got = chi_squared_sf(x, 2.0);
            let expected = (-x / 2.0f64).exp();
            assert!(
                ((got - expected) / expected).abs() < 1e-12,
                "{x}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn identical_samples_do_not_differ() {
        let a = Sorted::new(vec![3.0, 1.0, 2.0, 2.0]);
        let ks = ks_2samp(&a, &a);
        assert_eq!(ks.statistic, 0.0);
        assert_eq!(ks.p_value, 1.0);
        assert_eq!(wasserstein(&a, &a), 0.0);
    }
}
