//! Every statistic against SciPy's value on the same samples (`make_fixtures.py`).

use kairos_monitor::drift::{DriftOptions, Samples, column_drift};
use kairos_monitor::stats::{self, CategoryCounts, Sorted};
use serde_json::Value;

use super::fixture;

fn close(case: &str, what: &str, got: f64, expected: f64) {
    let tolerance = 1e-9 * expected.abs();
    assert!(
        (got - expected).abs() <= tolerance || got == expected,
        "{case}: {what} = {got:e}, SciPy says {expected:e}"
    );
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn statistics_match_scipy() {
    let fixture = fixture("scipy_drift.json");
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        match case["kind"].as_str().unwrap() {
            "numerical" => {
                let (r, c) = (numbers(&case["reference"]), numbers(&case["current"]));
                let (rs, cs) = (Sorted::new(r.clone()), Sorted::new(c.clone()));
                let ks = stats::ks_2samp(&rs, &cs);
                close(
                    name,
                    "KS statistic",
                    ks.statistic,
                    case["ks_statistic"].as_f64().unwrap(),
                );
                close(
                    name,
                    "KS p-value",
                    ks.p_value,
                    case["ks_p_value"].as_f64().unwrap(),
                );
                assert_eq!(ks.exact, case["ks_exact"].as_bool().unwrap(), "{name}");
                let w = stats::wasserstein(&rs, &cs);
                close(
                    name,
                    "Wasserstein",
                    w,
                    case["wasserstein"].as_f64().unwrap(),
                );
                close(
                    name,
                    "std",
                    rs.std(),
                    case["reference_std"].as_f64().unwrap(),
                );
                let drift = column_drift(
                    "x",
                    Samples::Numerical {
                        reference: &r,
                        current: &c,
                    },
                    &DriftOptions::default(),
                )
                .unwrap();
                let s = &drift.statistics;
                close(
                    name,
                    "Jensen–Shannon",
                    s.jensen_shannon,
                    case["jensen_shannon"].as_f64().unwrap(),
                );
                close(name, "PSI", s.psi, case["psi"].as_f64().unwrap());
                close(
                    name,
                    "normed Wasserstein",
                    s.wasserstein.unwrap(),
                    w / rs.std().max(0.001),
                );
            }
            "categorical" => {
                let (r, c) = (strings(&case["reference"]), strings(&case["current"]));
                let counts =
                    CategoryCounts::new(r.iter().map(String::as_str), c.iter().map(String::as_str));
                let chi = stats::chi_squared(&counts);
                match case["chi_squared"].as_f64() {
                    Some(expected) => close(name, "chi-squared", chi.statistic, expected),
                    None => assert!(chi.statistic.is_infinite(), "{name}: {}", chi.statistic),
                }
                close(
                    name,
                    "chi-squared p-value",
                    chi.p_value,
                    case["chi_squared_p_value"].as_f64().unwrap(),
                );
                let drift = column_drift(
                    "x",
                    Samples::Categorical {
                        reference: &r,
                        current: &c,
                    },
                    &DriftOptions::default(),
                )
                .unwrap();
                let s = &drift.statistics;
                close(
                    name,
                    "Jensen–Shannon",
                    s.jensen_shannon,
                    case["jensen_shannon"].as_f64().unwrap(),
                );
                close(name, "PSI", s.psi, case["psi"].as_f64().unwrap());
            }
            other => panic!("unknown kind {other}"),
        }
    }
}
