//! ONNX models trained elsewhere (scikit-learn through skl2onnx, XGBoost, PyTorch), run by
//! tract in pure Rust. A classifier exported with `zipmap=False` gives a label tensor and a
//! `[rows, classes]` probability tensor; [`OnnxModel::predict_proba`] returns the positive
//! class's column. A graph tract cannot run (an operator it lacks, such as ZipMap or
//! TreeEnsembleRegressor) is refused when the model is loaded, with tract's reason.

use std::sync::Arc;

use tract_onnx::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("the ONNX model cannot be run: {0:#}")]
    Load(TractError),
    #[error("running the ONNX model: {0:#}")]
    Run(TractError),
    #[error("{values} values are not {rows} rows of {features} features")]
    Shape {
        values: usize,
        rows: usize,
        features: usize,
    },
    #[error(
        "the model gives no [rows, 2] probability output (export classifiers with zipmap=False)"
    )]
    NoProbabilities,
}

/// A loaded, optimised ONNX graph taking one `[rows, features]` f32 input.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    plan: Arc<TypedRunnableModel>,
    features: usize,
}

impl OnnxModel {
    /// Loads `bytes` for inputs of `features` columns and any number of rows.
    pub fn load(bytes: &[u8], features: usize) -> Result<OnnxModel, OnnxError> {
        let plan = (|| {
            let mut model = tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(bytes))?;
            let rows = model.symbols.sym("rows");
            model.set_input_fact(0, f32::fact([rows.into(), features.to_dim()]).into())?;
            model.into_optimized()?.into_runnable()
        })()
        .map_err(OnnxError::Load)?;
        Ok(OnnxModel { plan, features })
    }

    /// The positive class's probability for each row of `values` (row by row).
    pub fn predict_proba(&self, values: &[f32], rows: usize) -> Result<Vec<f64>, OnnxError> {
        if values.len() != rows * self.features {
            return Err(OnnxError::Shape {
                values: values.len(),
                rows,
                features: self.features,
            });
        }
        let input = Tensor::from_shape(&[rows, self.features], values).map_err(OnnxError::Run)?;
        let outputs = self
            .plan
            .run(tvec!(input.into_tvalue()))
            .map_err(OnnxError::Run)?;
        let probabilities = outputs
            .iter()
            .find(|t| t.datum_type() == f32::datum_type() && t.shape() == [rows, 2])
            .ok_or(OnnxError::NoProbabilities)?;
        let view = probabilities
            .to_plain_array_view::<f32>()
            .map_err(OnnxError::Run)?;
        Ok((0..rows).map(|r| f64::from(view[[r, 1]])).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(file: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/models")
            .join(file)
    }

    /// `examples/models/make_onnx.py` exported a logistic regression (LinearClassifier) and
    /// gradient-boosted trees (TreeEnsembleClassifier) and recorded scikit-learn's
    /// probabilities for eight rows; tract gives the same to float precision.
    #[test]
    fn scikit_learn_models_exported_to_onnx_predict_what_scikit_learn_did() {
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(example("expected.json")).unwrap()).unwrap();
        let inputs: Vec<f32> = expected["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .collect();
        for name in ["fraud_logistic", "fraud_trees"] {
            let bytes = std::fs::read(example(&format!("{name}.onnx"))).unwrap();
            let model = OnnxModel::load(&bytes, 4).unwrap();
            let got = model.predict_proba(&inputs, 8).unwrap();
            let want: Vec<f64> = expected[name]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{name}: {got:?} != {want:?}");
            }
            // Any number of rows, one at a time too.
            assert_eq!(model.predict_proba(&inputs[4..8], 1).unwrap()[0], got[1]);
            assert!(matches!(
                model.predict_proba(&inputs[..5], 2),
                Err(OnnxError::Shape { .. })
            ));
        }
    }

    #[test]
    fn bytes_that_are_not_an_onnx_graph_are_refused_on_load() {
        let e = OnnxModel::load(b"not a model", 4).unwrap_err();
        assert!(
            e.to_string().starts_with("the ONNX model cannot be run"),
            "{e}"
        );
    }
}
