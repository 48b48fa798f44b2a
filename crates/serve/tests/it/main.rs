//! The OpenAPI document is generated from the code and checked in (`openapi.json`), so a change
//! to the API shows in review. `KAIROS_BLESS=1 cargo test -p kairos-serve` rewrites it.

mod access;

use utoipa::OpenApi;

#[test]
fn openapi_document_matches_the_checked_in_copy() {
    let generated = kairos_serve::ApiDoc::openapi().to_pretty_json().unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var_os("KAIROS_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "crates/serve/openapi.json is out of date; run KAIROS_BLESS=1 cargo test -p kairos-serve and commit it"
    );
}
