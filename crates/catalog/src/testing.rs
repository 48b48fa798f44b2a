//! Throwaway PostgreSQL databases for the test suites of the crates above the catalog.

/// A database made for one test on the server `KAIROS_TEST_POSTGRES_URL` names (a user that
/// may create databases), dropped with it. The synchronous client runs a runtime of its own:
/// make and drop it off async threads.
#[derive(Debug)]
pub struct TestDatabase {
    admin: String,
    name: String,
}

impl TestDatabase {
    /// A fresh database, or `None` when `KAIROS_TEST_POSTGRES_URL` is not set; a server that
    /// is set but cannot be reached fails the test.
    pub fn create(prefix: &str) -> Option<Self> {
        let admin = std::env::var("KAIROS_TEST_POSTGRES_URL").ok()?;
        let name = format!("{prefix}_{}_{}", std::process::id(), rand_suffix());
        postgres::Client::connect(&admin, postgres::NoTls)
            .expect("KAIROS_TEST_POSTGRES_URL is set but unreachable")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("cannot create a test database");
        Some(Self { admin, name })
    }

    /// The URL of the database.
    pub fn url(&self) -> String {
        let base = self
            .admin
            .rsplit_once('/')
            .map_or(self.admin.as_str(), |(base, _)| base);
        format!("{base}/{}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = client.batch_execute(&drop);
        }
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
