//! One suite for every catalog engine: SQLite always, PostgreSQL when
//! `KAIROS_TEST_POSTGRES_URL` names a server (`.ci/run` starts one), each test in a database of
//! its own. And two processes racing for the next versions of one name, on each engine.

use std::process::{Command, Stdio};

use kairos_catalog::testing::TestDatabase;
use kairos_catalog::{Catalog, Changes, PostgresCatalog, SqliteCatalog};
use kairos_model::{DeploymentSpec, ModelSpec};
use kairos_types::{Column, FeatureGroupSpec, FeatureType};

/// Where a test's catalog lives, so it can be opened again (by this process or another).
enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl Place {
    fn open(&self) -> Box<dyn Catalog> {
        match self {
            Place::Sqlite(dir) => {
                Box::new(SqliteCatalog::open(&dir.path().join("catalog.db")).unwrap())
            }
            Place::Postgres(db) => Box::new(PostgresCatalog::connect(&db.url()).unwrap()),
        }
    }

    /// The `KAIROS_CATALOG_RACER` value a racing child opens.
    fn url(&self) -> String {
        match self {
            Place::Sqlite(dir) => format!("sqlite:{}", dir.path().join("catalog.db").display()),
            Place::Postgres(db) => db.url(),
        }
    }
}

/// A fresh catalog place on every engine this run has.
fn places() -> Vec<Place> {
    let mut places = vec![Place::Sqlite(tempfile::tempdir().unwrap())];
    places.extend(TestDatabase::create("kairos_catalog_test").map(Place::Postgres));
    places
}

fn spec(name: &str) -> FeatureGroupSpec {
    FeatureGroupSpec {
        name: name.into(),
        description: "test".into(),
        columns: vec![
            Column::new("id", FeatureType::Int64),
            Column::new("ts", FeatureType::Timestamp),
        ],
        primary_key: vec!["id".into()],
        event_time: "ts".into(),
        online: true,
        ttl_seconds: Some(60),
        vector_index: None,
        expectations: Vec::new(),
    }
}

#[test]
fn versions_count_up_and_survive_reopen() {
    for place in places() {
        {
            let catalog = place.open();
            assert_eq!(catalog.create_feature_group(&spec("a")).unwrap().version, 1);
            assert_eq!(catalog.create_feature_group(&spec("a")).unwrap().version, 2);
            assert_eq!(catalog.create_feature_group(&spec("b")).unwrap().version, 1);
        }
        let catalog = place.open();
        assert_eq!(
            catalog
                .get_feature_group("a", None)
                .unwrap()
                .unwrap()
                .version,
            2
        );
        assert_eq!(
            catalog
                .get_feature_group("a", Some(1))
                .unwrap()
                .unwrap()
                .spec,
            spec("a")
        );
        assert!(catalog.get_feature_group("c", None).unwrap().is_none());
        assert_eq!(catalog.list_feature_groups().unwrap().len(), 3);

        assert!(catalog.delete_feature_group("a", 2).unwrap());
        assert!(!catalog.delete_feature_group("a", 2).unwrap());
        assert_eq!(
            catalog
                .get_feature_group("a", None)
                .unwrap()
                .unwrap()
                .version,
            1
        );
        // A deleted version's number is not handed out again.
        catalog.delete_feature_group("a", 1).unwrap();
        assert_eq!(catalog.create_feature_group(&spec("a")).unwrap().version, 3);
    }
}

#[test]
fn models_are_versioned_documents() {
    for place in places() {
        let catalog = place.open();
        let spec: ModelSpec = serde_json::from_str(
            r#"{"name": "fraud", "framework": "gbdt", "artifact": "model.json",
            "signature": {"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 3]}],
                          "outputs": [{"name": "p", "datatype": "FP64", "shape": [-1]}]}}"#,
        )
        .unwrap();
        assert_eq!(catalog.create_model(&spec).unwrap().version, 1);
        let second = catalog.create_model(&spec).unwrap();
        assert_eq!(second.version, 2);
        assert_eq!(catalog.get_model("fraud", None).unwrap().unwrap(), second);
        assert_eq!(
            catalog.get_model("fraud", Some(1)).unwrap().unwrap().spec,
            spec
        );
        assert_eq!(catalog.list_models().unwrap().len(), 2);
        assert!(catalog.delete_model("fraud", 2).unwrap());
        assert!(!catalog.delete_model("fraud", 2).unwrap());
        assert_eq!(
            catalog.get_model("fraud", None).unwrap().unwrap().version,
            1
        );
        assert_eq!(catalog.create_model(&spec).unwrap().version, 3);
    }
}

#[test]
fn deployments_list_their_live_revision() {
    for place in places() {
        let catalog = place.open();
        let mut spec: DeploymentSpec =
            serde_json::from_str(r#"{"name": "fraud", "model": "m", "model_version": 1}"#).unwrap();
        catalog.create_deployment(&spec).unwrap();
        spec.model_version = Some(2);
        let live = catalog.create_deployment(&spec).unwrap();
        assert_eq!(live.revision, 2);
        let other: DeploymentSpec =
            serde_json::from_str(r#"{"name": "churn", "model": "c"}"#).unwrap();
        catalog.create_deployment(&other).unwrap();
        let listed = catalog.list_deployments().unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|d| (d.spec.name.as_str(), d.revision))
                .collect::<Vec<_>>(),
            [("churn", 1), ("fraud", 2)]
        );
        assert_eq!(catalog.get_deployment("fraud").unwrap().unwrap(), live);
        assert!(catalog.delete_deployment("fraud").unwrap());
        assert!(catalog.get_deployment("fraud").unwrap().is_none());
        assert!(!catalog.delete_deployment("fraud").unwrap());
        assert_eq!(catalog.create_deployment(&spec).unwrap().revision, 3);
    }
}

#[test]
fn service_documents_are_versioned_by_kind_and_name() {
    for place in places() {
        let catalog = place.open();
        let body = |n: u32| serde_json::json!({ "window": n });
        assert_eq!(
            catalog
                .put_service_document("monitor", "a", &body(1))
                .unwrap(),
            1
        );
        assert_eq!(
            catalog
                .put_service_document("monitor", "a", &body(2))
                .unwrap(),
            2
        );
        assert_eq!(
            catalog
                .put_service_document("monitor", "b", &body(3))
                .unwrap(),
            1
        );
        // Another kind, and a name the catalog's own kinds use, stay apart.
        assert_eq!(
            catalog
                .put_service_document("other", "a", &body(4))
                .unwrap(),
            1
        );
        assert_eq!(
            catalog.get_service_document("monitor", "a", None).unwrap(),
            Some((2, body(2)))
        );
        assert_eq!(
            catalog
                .get_service_document("monitor", "a", Some(1))
                .unwrap(),
            Some((1, body(1)))
        );
        assert_eq!(
            catalog.list_service_documents("monitor").unwrap(),
            [("a".to_string(), 2, body(2)), ("b".to_string(), 1, body(3))]
        );
        assert!(catalog.delete_service_document("monitor", "a").unwrap());
        assert!(
            catalog
                .get_service_document("monitor", "a", None)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            catalog
                .put_service_document("monitor", "a", &body(5))
                .unwrap(),
            3
        );
        assert!(catalog.list_deployments().unwrap().is_empty());
    }
}

/// The racing child: creates versions of one name and prints the versions it was given. A
/// no-op unless the parent test below runs it.
#[test]
fn racer_child() {
    let Ok(url) = std::env::var("KAIROS_CATALOG_RACER") else {
        return;
    };
    let catalog: Box<dyn Catalog> = match url.strip_prefix("sqlite:") {
        Some(path) => Box::new(SqliteCatalog::open(std::path::Path::new(path)).unwrap()),
        None => Box::new(PostgresCatalog::connect(&url).unwrap()),
    };
    let versions: Vec<String> = (0..RACE_ROUNDS)
        .map(|_| {
            catalog
                .create_feature_group(&spec("race"))
                .unwrap()
                .version
                .to_string()
        })
        .collect();
    println!("RACER {}", versions.join(","));
}

const RACE_ROUNDS: usize = 40;

/// Two processes creating the next version of one name at the same moment never get the same
/// number: between them they get every version from 1 up, each once.
#[test]
fn racing_processes_never_share_a_version() {
    let exe = std::env::current_exe().unwrap();
    for place in places() {
        let children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(&exe)
                    .args(["--exact", "racer_child", "--nocapture", "--test-threads=1"])
                    .env("KAIROS_CATALOG_RACER", place.url())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut versions: Vec<u32> = Vec::new();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "racer failed: {out:?}");
            let stdout = String::from_utf8(out.stdout).unwrap();
            let line = stdout
                .lines()
                .find_map(|l| l.split_once("RACER ").map(|(_, versions)| versions))
                .expect("the racer printed its versions");
            versions.extend(line.split(',').map(|v| v.parse::<u32>().unwrap()));
        }
        versions.sort_unstable();
        let expected: Vec<u32> = (1..=2 * RACE_ROUNDS as u32).collect();
        assert_eq!(versions, expected, "on {}", place.url());
        let catalog = place.open();
        assert_eq!(
            catalog.list_feature_groups().unwrap().len(),
            2 * RACE_ROUNDS
        );
        // The change log has every creation once, in the order the versions were taken.
        let changes = catalog.changes_since(0).unwrap().changes;
        let logged: Vec<Option<u32>> = changes.iter().map(|c| c.version).collect();
        assert_eq!(
            logged,
            expected.iter().copied().map(Some).collect::<Vec<_>>()
        );
        assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    }
}

/// A PostgreSQL server that is not there is an error naming the engine, at once.
#[test]
fn an_unreachable_postgres_is_an_error_naming_it() {
    let err = PostgresCatalog::connect("postgres://kairos@127.0.0.1:1/kairos").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("catalog unavailable (postgresql)"),
        "{err}"
    );
}

fn summary(changes: &Changes) -> Vec<(&str, &str, Option<u32>, bool)> {
    changes
        .changes
        .iter()
        .map(|c| (c.kind.as_str(), c.name.as_str(), c.version, c.deleted))
        .collect()
}

/// Every write records what it changed, in commit order, for another connection (a replica, a
/// CLI beside the server) to follow from where it last read; a bare version reservation
/// changes nothing.
#[test]
fn changes_are_logged_in_order_for_other_connections() {
    for place in places() {
        let (writer, reader) = (place.open(), place.open());
        let start = reader.changes_since(0).unwrap();
        assert!(start.complete && start.changes.is_empty());

        writer.create_feature_group(&spec("cards")).unwrap();
        writer
            .put_service_document("monitor", "drift", &serde_json::json!({}))
            .unwrap();
        let reserved = writer.reserve_model_version("fraud").unwrap();
        let model: kairos_model::Model = serde_json::from_value(serde_json::json!({
            "name": "fraud", "framework": "gbdt", "artifact": "model.json",
            "signature": {"inputs": [], "outputs": []},
            "version": reserved, "created_at": "2026-01-01T00:00:00.000Z"
        }))
        .unwrap();
        writer.save_model(&model).unwrap();
        writer.delete_feature_group("cards", 1).unwrap();
        writer.delete_service_document("monitor", "drift").unwrap();
        assert!(!writer.delete_feature_group("cards", 1).unwrap());

        let seen = reader.changes_since(0).unwrap();
        assert!(seen.complete);
        assert_eq!(
            summary(&seen),
            [
                ("feature_group", "cards", Some(1), false),
                ("service:monitor", "drift", Some(1), false),
                ("model", "fraud", Some(1), false),
                ("feature_group", "cards", Some(1), true),
                ("service:monitor", "drift", None, true),
            ],
            "on {}",
            place.url()
        );
        let last = seen.changes.last().unwrap().seq;
        assert!(reader.changes_since(last).unwrap().changes.is_empty());
        writer.create_feature_group(&spec("cards")).unwrap();
        assert_eq!(
            summary(&reader.changes_since(last).unwrap()),
            [("feature_group", "cards", Some(2), false)]
        );
    }
}

/// A replica whose connection to PostgreSQL was cut reads the changes it missed once it can
/// reach the server again, from where it had read.
#[test]
fn a_reader_cut_off_from_postgres_catches_up_when_it_returns() {
    let Some(db) = TestDatabase::create("kairos_catalog_test") else {
        eprintln!("skipped: KAIROS_TEST_POSTGRES_URL is not set");
        return;
    };
    let writer = PostgresCatalog::connect(&db.url()).unwrap();
    let reader = PostgresCatalog::connect(&db.url()).unwrap();
    writer.create_feature_group(&spec("a")).unwrap();
    let cursor = reader.changes_since(0).unwrap().changes.last().unwrap().seq;

    // Every connection to the database is cut, as a server restart or a network cut does.
    let admin = std::env::var("KAIROS_TEST_POSTGRES_URL").unwrap();
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    let database = db.url().rsplit_once('/').unwrap().1.to_string();
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&database],
        )
        .unwrap();
    let writer = PostgresCatalog::connect(&db.url()).unwrap();
    writer.create_feature_group(&spec("b")).unwrap();

    // The first call may find the connection dead; a later one connects again.
    let caught_up = (0..5)
        .find_map(|_| reader.changes_since(cursor).ok())
        .expect("the reader connects again");
    assert_eq!(
        summary(&caught_up),
        [("feature_group", "b", Some(1), false)]
    );
}

/// Four connections (as four replicas) claim the slots of one schedule at once: each slot goes
/// to exactly one of them, and a slot behind the last claimed goes to none.
#[test]
fn each_slot_is_claimed_once_among_connections() {
    for place in places() {
        let catalogs: Vec<Box<dyn Catalog>> = (0..4).map(|_| place.open()).collect();
        for slot in 1..=20u64 {
            let wins: usize = std::thread::scope(|scope| {
                let claims: Vec<_> = catalogs
                    .iter()
                    .map(|c| scope.spawn(move || c.claim("monitor/drift", slot).unwrap()))
                    .collect();
                claims
                    .into_iter()
                    .map(|claim| usize::from(claim.join().unwrap()))
                    .sum()
            });
            assert_eq!(wins, 1, "slot {slot} on {}", place.url());
        }
        assert!(!catalogs[0].claim("monitor/drift", 7).unwrap());
        assert!(!catalogs[1].claim("monitor/drift", 20).unwrap());
        // Names are claimed apart.
        assert!(catalogs[2].claim("monitor/latency", 3).unwrap());
        assert!(catalogs[3].claim("monitor/drift", 21).unwrap());
    }
}
