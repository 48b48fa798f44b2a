//! Throwaway S3 locations for the test suites: a fresh prefix of the bucket
//! `KAIROS_TEST_S3_URL` names (CI runs a moto server and exports the `AWS_*` variables that
//! reach it). Nothing is deleted afterwards: the service is as throwaway as the prefix.

/// `s3://<bucket>/<prefix>-<pid>-<random>`, or `None` when `KAIROS_TEST_S3_URL` is not set.
pub fn s3_url(prefix: &str) -> Option<String> {
    let base = std::env::var("KAIROS_TEST_S3_URL").ok()?;
    use std::hash::{BuildHasher, RandomState};
    let suffix = RandomState::new().hash_one(std::time::SystemTime::now());
    Some(format!(
        "{}/{prefix}-{}-{suffix:x}",
        base.trim_end_matches('/'),
        std::process::id()
    ))
}
