//! Definitions as a client posts them, in TOML or JSON — feature groups, streaming pipelines,
//! feature views (with their on-demand features and transforms) and on-demand features alone:
//! refused with a reason, or accepted and planned, never a crash.
//!
//! The first byte picks the kind (its low two bits) and the syntax (bit 2: JSON).
#![no_main]

use kairos_stream::PipelineSpec;
use kairos_transform::{FunctionRegistry, OnDemand, OnDemandSpec};
use kairos_types::{FeatureGroup, FeatureGroupSpec};
use kairos_view::{FeatureViewSpec, ViewPlan};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

fn read<T: DeserializeOwned>(text: &str, json: bool) -> Option<T> {
    if json {
        serde_json::from_str(text).ok()
    } else {
        toml::from_str(text).ok()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let json = first & 4 != 0;
    match first % 4 {
        0 => {
            if let Some(spec) = read::<FeatureGroupSpec>(text, json)
                && spec.validate().is_ok()
            {
                let _ = spec.arrow_schema();
            }
        }
        1 => {
            let file = if json { "p.json" } else { "p.toml" };
            if let Ok(spec) = PipelineSpec::parse(file, text) {
                let _ = spec.plan();
            }
        }
        2 => {
            if let Some(spec) = read::<FeatureViewSpec>(text, json) {
                let group = FeatureGroup {
                    spec: kairos_fuzz::group(),
                    version: 1,
                    created_at: "2024-01-01T00:00:00Z".into(),
                };
                let lookup = |name: &str, _: Option<u32>| (name == "fuzzed").then(|| group.clone());
                let _ = ViewPlan::resolve(&spec, &lookup, &FunctionRegistry::default());
            }
        }
        _ => {
            if let Some(spec) = read::<OnDemandSpec>(text, json) {
                let _ = OnDemand::compile(&spec, &FunctionRegistry::default(), "ts");
            }
        }
    }
});
