//! The detectors signal where River's do on the same streams (`make_fixtures.py`).

use kairos_monitor::detectors::{Adwin, Ddm, DriftDetector, PageHinkley, Signal};

use super::fixture;

fn run(detector: &mut dyn DriftDetector, stream: &[f64]) -> (Vec<usize>, Vec<usize>) {
    let (mut drifts, mut warnings) = (Vec::new(), Vec::new());
    for (i, x) in stream.iter().enumerate() {
        match detector.update(*x) {
            Signal::Drift => drifts.push(i),
            Signal::Warning => warnings.push(i),
            Signal::Stable => {}
        }
    }
    (drifts, warnings)
}

fn indices(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn river_docstring_examples() {
    let fixture = fixture("river_detectors.json");
    let stream = |name: &str| -> Vec<f64> {
        fixture["streams"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    // River 0.26's documented indices.
    let docstring = stream("adwin_docstring");
    assert_eq!(
        run(&mut Adwin::new(Default::default()), &docstring).0,
        [1023]
    );
    assert_eq!(
        run(&mut PageHinkley::new(Default::default()), &docstring).0,
        [1006]
    );
    let errors = stream("ddm_docstring");
    let (drifts, warnings) = run(&mut Ddm::new(Default::default()), &errors);
    assert_eq!(drifts, [1334]);
    assert_eq!(warnings.first(), Some(&1084));
    assert_eq!(warnings.iter().find(|i| **i > 1334), Some(&1492));
}

#[test]
fn every_signal_matches_river() {
    let fixture = fixture("river_detectors.json");
    let results = fixture["results"].as_array().unwrap();
    assert!(results.len() >= 10);
    for result in results {
        let stream_name = result["stream"].as_str().unwrap();
        let stream: Vec<f64> = fixture["streams"][stream_name]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let detector_name = result["detector"].as_str().unwrap();
        let mut detector: Box<dyn DriftDetector> = match detector_name {
            "adwin" => Box::new(Adwin::new(Default::default())),
            "page_hinkley" => Box::new(PageHinkley::new(Default::default())),
            "ddm" => Box::new(Ddm::new(Default::default())),
            other => panic!("unknown detector {other}"),
        };
        let (drifts, warnings) = run(detector.as_mut(), &stream);
        assert_eq!(
            drifts,
            indices(&result["drifts"]),
            "{detector_name} on {stream_name}: drifts"
        );
        assert_eq!(
            warnings,
            indices(&result["warnings"]),
            "{detector_name} on {stream_name}: warnings"
        );
    }
}
