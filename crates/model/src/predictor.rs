//! A registered model loaded to predict: whatever its framework, rows of features in, one
//! number per row out (the positive class's probability for a classifier). What a deployment's
//! predictor stage will hold, and swap whole for a new version.

use crate::gbdt::{Features, Gbdt, Task};
use crate::logistic::Logistic;
use crate::onnx::OnnxModel;
use crate::registry::{Evaluation, Framework, Model};

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("model {name} v{version}: {reason}")]
    Load {
        name: String,
        version: u32,
        reason: String,
    },
    #[error("{values} values are not {rows} rows of {features} features")]
    Shape {
        values: usize,
        rows: usize,
        features: usize,
    },
    #[error(transparent)]
    Onnx(#[from] crate::onnx::OnnxError),
}

/// A model ready to predict.
#[derive(Debug)]
pub struct Predictor {
    features: usize,
    engine: Engine,
}

#[derive(Debug)]
enum Engine {
    Gbdt(Gbdt),
    Logistic(Logistic),
    Onnx(OnnxModel),
}

impl Predictor {
    /// Loads `model`'s `artifact` (the bytes its registration stored).
    pub fn load(model: &Model, artifact: &[u8]) -> Result<Predictor, PredictError> {
        let spec = &model.spec;
        let failed = |reason: String| PredictError::Load {
            name: spec.name.clone(),
            version: model.version,
            reason,
        };
        let features = match spec.signature.inputs.as_slice() {
            [input] if input.shape.len() == 2 && input.shape[1] > 0 => input.shape[1] as usize,
            other => {
                return Err(failed(format!(
                    "expected one input of shape [-1, features], the signature gives {other:?}"
                )));
            }
        };
        let engine = match spec.framework {
            Framework::Gbdt => {
                let task = match spec.metrics {
                    Some(Evaluation::Regression { .. }) => Task::Regression,
                    _ => Task::Binary,
                };
                Engine::Gbdt(Gbdt::from_json(artifact, task).map_err(|e| failed(e.to_string()))?)
            }
            Framework::Logistic => Engine::Logistic(
                serde_json::from_slice(artifact).map_err(|e| failed(e.to_string()))?,
            ),
            Framework::Onnx => Engine::Onnx(
                OnnxModel::load(artifact, features).map_err(|e| failed(e.to_string()))?,
            ),
            Framework::Candle => {
                return Err(failed(
                    "a candle network is served by the recommender that trained it, not by a \
                     deployment"
                        .into(),
                ));
            }
        };
        Ok(Predictor { features, engine })
    }

    /// The feature count of a row.
    pub fn features(&self) -> usize {
        self.features
    }

    /// One prediction per row of `values`, given row by row (NaN: missing).
    pub fn predict(&self, values: &[f64], rows: usize) -> Result<Vec<f64>, PredictError> {
        if values.len() != rows * self.features {
            return Err(PredictError::Shape {
                values: values.len(),
                rows,
                features: self.features,
            });
        }
        let columns = || {
            let mut data = vec![0.0; values.len()];
            for r in 0..rows {
                for c in 0..self.features {
                    data[c * rows + r] = values[r * self.features + c];
                }
            }
            Features {
                data,
                rows,
                cols: self.features,
            }
        };
        Ok(match &self.engine {
            Engine::Gbdt(m) => m.predict(&columns()),
            Engine::Logistic(m) => m.predict(&columns()),
            Engine::Onnx(m) => {
                let values: Vec<f32> = values.iter().map(|v| *v as f32).collect();
                m.predict_proba(&values, rows)?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gbdt::GbdtParams;
    use crate::registry::{Lineage, ModelSpec};
    use crate::train::{Algorithm, Labelled, train};

    fn data() -> Labelled {
        let rows = 300;
        let x: Vec<f64> = (0..rows).map(|i| (i as f64 * 0.37).sin()).collect();
        let z: Vec<f64> = (0..rows).map(|i| ((i * 13) % 17) as f64 / 17.0).collect();
        let labels = x
            .iter()
            .zip(&z)
            .map(|(x, z)| f64::from(x + z > 0.6))
            .collect();
        Labelled {
            names: vec!["x".into(), "z".into()],
            features: Features::from_columns(&[x, z]),
            labels,
        }
    }

    fn registered(t: &crate::train::Trained) -> Model {
        Model {
            spec: ModelSpec {
                name: "m".into(),
                framework: t.framework,
                artifact: t.artifact_name.clone(),
                signature: t.signature.clone(),
                description: String::new(),
                metrics: Some(t.evaluation.clone()),
                lineage: Lineage::default(),
            },
            version: 1,
            created_at: String::new(),
        }
    }

    /// Rows given row by row predict what the fitted model predicts for the same rows.
    #[test]
    fn a_trained_model_loaded_from_its_artifact_predicts_as_at_training() {
        let d = data();
        let rows: Vec<f64> = (0..d.features.rows)
            .flat_map(|r| [d.features.data[r], d.features.data[d.features.rows + r]])
            .collect();
        for algorithm in [
            Algorithm::Gbdt(GbdtParams::default()),
            Algorithm::Logistic { c: 1.0 },
        ] {
            let t = train(algorithm, Task::Binary, &d, None, None, 0.5).unwrap();
            let p = Predictor::load(&registered(&t), &t.artifact).unwrap();
            let got = p.predict(&rows, d.features.rows).unwrap();
            let want = match algorithm {
                Algorithm::Gbdt(_) => Gbdt::from_json(&t.artifact, Task::Binary)
                    .unwrap()
                    .predict(&d.features),
                Algorithm::Logistic { .. } => serde_json::from_slice::<Logistic>(&t.artifact)
                    .unwrap()
                    .predict(&d.features),
            };
            assert_eq!(got, want);
            assert!(matches!(
                p.predict(&rows[..3], 2),
                Err(PredictError::Shape { .. })
            ));
        }
    }

    /// The scikit-learn export from `examples/models`, through the same interface.
    #[test]
    fn an_onnx_model_predicts_through_the_same_interface() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models");
        let spec: ModelSpec =
            toml::from_str(&std::fs::read_to_string(dir.join("fraud_logistic.toml")).unwrap())
                .unwrap();
        let model = Model {
            spec,
            version: 1,
            created_at: String::new(),
        };
        let p = Predictor::load(
            &model,
            &std::fs::read(dir.join("fraud_logistic.onnx")).unwrap(),
        )
        .unwrap();
        assert_eq!(p.features(), 4);
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        let rows: Vec<f64> = expected["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        let got = p.predict(&rows, 8).unwrap();
        for (g, w) in got
            .iter()
            .zip(expected["fraud_logistic"].as_array().unwrap())
        {
            assert!((g - w.as_f64().unwrap()).abs() < 1e-5);
        }
    }

    #[test]
    fn an_artifact_that_does_not_load_names_the_model() {
        let d = data();
        let t = train(
            Algorithm::Logistic { c: 1.0 },
            Task::Binary,
            &d,
            None,
            None,
            0.5,
        )
        .unwrap();
        let e = Predictor::load(&registered(&t), b"{}").unwrap_err();
        assert!(e.to_string().starts_with("model m v1:"), "{e}");
    }
}
