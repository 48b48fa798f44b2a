//! The recommendation deployment end to end on a tiny catalogue: groups → `train` (view,
//! towers, ranker, embeddings) → apply → recommend, with the rules, diversity, interactions
//! posted back, the V2 view, and a restart.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kairos_deploy::v2::{InferRequest, Tensor, TensorData, V2Application};
use kairos_recommend::{RecommendRequest, RecommenderSpec, Recommenders};
use kairos_recsys::eval::EvalParams;
use kairos_recsys::two_tower::TwoTowerParams;
use kairos_store::{FeatureStore, InsertOptions, StoreConfig};
use kairos_types::{FeatureGroupSpec, Format};

const USERS: i64 = 40;
const ITEMS: i64 = 60;

/// Users and items in two communities (even and odd ids, genres A and B); every user has
/// interacted with 10 items of their own. Items 0–3 are out of stock, items 4–7 are only
/// sold in region NO, items 8–11 are for ages 18 and up; every user is in SE, the odd ones
/// younger than 18.
async fn catalogue(store: &FeatureStore) {
    let groups = [
        r#"name = "users"
primary_key = ["user_id"]
event_time = "ts"
columns = [
  { name = "user_id", type = "int64" },
  { name = "ts", type = "timestamp" },
  { name = "age", type = "int64" },
  { name = "region", type = "string" },
  { name = "plan", type = "string" },
]"#,
        r#"name = "items"
primary_key = ["item_id"]
event_time = "ts"
columns = [
  { name = "item_id", type = "int64" },
  { name = "ts", type = "timestamp" },
  { name = "genres", type = "string" },
  { name = "year", type = "int64" },
  { name = "in_stock", type = "bool" },
  { name = "region", type = "string" },
  { name = "min_age", type = "int64" },
]"#,
        r#"name = "interactions"
primary_key = ["user_id", "item_id"]
event_time = "ts"
columns = [
  { name = "user_id", type = "int64" },
  { name = "item_id", type = "int64" },
  { name = "ts", type = "timestamp" },
]"#,
    ];
    for text in groups {
        let spec: FeatureGroupSpec = toml::from_str(text).unwrap();
        store.create_group(spec).await.unwrap();
    }
    let mut users = String::from("user_id,ts,age,region,plan\n");
    for u in 0..USERS {
        let age = if u % 2 == 1 { 15 } else { 30 };
        let plan = if u % 2 == 0 { "even" } else { "odd" };
        users.push_str(&format!("{u},2024-01-01T00:00:00Z,{age},SE,{plan}\n"));
    }
    let mut items = String::from("item_id,ts,genres,year,in_stock,region,min_age\n");
    for i in 0..ITEMS {
        let genre = if i % 2 == 0 { "A" } else { "B" };
        let in_stock = i >= 4;
        let region = if (4..8).contains(&i) { "NO" } else { "ALL" };
        let min_age = if (8..12).contains(&i) { 18 } else { 0 };
        items.push_str(&format!(
            "{i},2024-01-01T00:00:00Z,{genre}|G{},{},{in_stock},{region},{min_age}\n",
            i % 5,
            1990 + i % 20
        ));
    }
    let mut interactions = String::from("user_id,item_id,ts\n");
    for u in 0..USERS {
        for step in 0..10 {
            // Items of the user's parity, from 12 on (so the rules' items stay unseen).
            let item = 12 + (u % 2) + 2 * ((u * 7 + step * 5) % 24);
            let t = 1_717_200_000 + step * 3600 + u;
            let ts = chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339();
            interactions.push_str(&format!("{u},{item},{ts}\n"));
        }
    }
    for (group, rows) in [
        ("users", users),
        ("items", items),
        ("interactions", interactions),
    ] {
        store
            .insert(
                group,
                None,
                Format::Csv,
                Bytes::from(rows),
                InsertOptions { wait_online: true },
            )
            .await
            .unwrap();
    }
}

const SPEC: &str = r#"
name = "shop"
candidates = 60
k = 8

[users]
group = "users"
traits = ["plan"]
age = "age"

[items]
group = "items"
categories = "genres"
year = "year"
embeddings = "item_embeddings"

[interactions]
group = "interactions"
user = "user_id"
item = "item_id"
recent = 10

[[filters]]
name = "seen"
already_interacted = true

[[filters]]
name = "sold_out"
keep = "in_stock = true"

[[filters]]
name = "region"
keep = "region = 'ALL' OR region = user_region"

[[filters]]
name = "age"
keep = "min_age <= user_age"
"#;

fn params() -> EvalParams {
    EvalParams {
        two_tower: TwoTowerParams {
            dim: 16,
            hidden: 32,
            epochs: 40,
            batch: 64,
            learning_rate: 0.01,
            ..TwoTowerParams::default()
        },
        candidates: 40,
        negatives: 10,
        ..EvalParams::default()
    }
}

fn request(user_id: i64) -> RecommendRequest {
    RecommendRequest {
        user_id,
        k: None,
        context: Default::default(),
    }
}

/// What user `u` interacted with in the catalogue.
fn seen(u: i64) -> Vec<i64> {
    (0..10)
        .map(|step| 12 + (u % 2) + 2 * ((u * 7 + step * 5) % 24))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_recommender_serves_filtered_ranked_items_and_learns_from_interactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = FeatureStore::open(StoreConfig::with_data_dir(dir.path()))
        .await
        .unwrap();
    catalogue(&store).await;
    let spec = RecommenderSpec::parse("shop.toml", SPEC).unwrap();

    let report = kairos_recommend::train::train(&store, &spec, &params(), |_| {})
        .await
        .unwrap();
    assert_eq!(report.interactions, (USERS * 10) as usize);
    assert_eq!(report.items, ITEMS as usize);
    assert_eq!(report.embeddings_written, ITEMS as usize);
    let names: Vec<&str> = report.models.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["shop_user_tower", "shop_item_tower", "shop_ranker"]);
    // The towers carry their lineage: the view and training dataset they came from.
    let tower = store
        .catalog()
        .get_model("shop_user_tower", None)
        .unwrap()
        .unwrap();
    assert_eq!(
        tower.spec.lineage.feature_view.as_deref(),
        Some("shop_training")
    );
    assert_eq!(
        tower.spec.lineage.training_dataset_version,
        Some(report.training_dataset_version)
    );

    let recommenders = Recommenders::new(store.clone());
    recommenders.apply(spec.clone()).await.unwrap();

    // Every answer passes every rule, and of the items others interacted with, most come from
    // the user's own community.
    let mut own = 0;
    let mut total = 0;
    for u in 0..USERS {
        let answer = recommenders.recommend("shop", &request(u)).await.unwrap();
        assert_eq!(answer.items.len(), 8, "user {u}: {answer:?}");
        assert!(answer.known_user);
        // The stages are laps of one stopwatch: together they fit in the request's time.
        let s = &answer.stages;
        let stages = [
            s.user_features_ms,
            s.user_vector_ms,
            s.retrieval_ms,
            s.item_features_ms,
            s.filters_ms,
            s.ranking_ms,
            s.selection_ms,
        ];
        assert!(stages.iter().all(|&ms| ms >= 0.0), "{s:?}");
        assert!(s.retrieval_ms > 0.0 && s.ranking_ms > 0.0, "{s:?}");
        assert!(stages.iter().sum::<f64>() <= answer.took_ms, "{answer:?}");
        let seen = seen(u);
        for item in &answer.items {
            let i = item.item_id;
            assert!(
                !seen.contains(&i),
                "user {u} got item {i} they interacted with"
            );
            assert!(i >= 4, "user {u} got item {i}, which is out of stock");
            assert!(
                !(4..8).contains(&i),
                "user {u} (SE) got item {i}, sold in NO"
            );
            if u % 2 == 1 {
                assert!(!(8..12).contains(&i), "user {u} (15) got item {i}, 18+");
            }
            // Items 0–11 nobody interacted with: their embeddings are their features only.
            if i >= 12 {
                own += usize::from(i % 2 == u % 2);
                total += 1;
            }
        }
        // Scores come out best first.
        assert!(answer.items.windows(2).all(|w| w[0].score >= w[1].score));
    }
    // By chance 14 of the 38 such items a user has not seen are their community's (37%).
    assert!(
        own * 10 >= total * 6,
        "only {own} of {total} recommendations are in the user's community"
    );

    // The request's context overrides a stored user value: in NO, NO's items may come back.
    let mut in_norway = request(0);
    in_norway.context.insert("region".into(), "NO".into());
    in_norway.k = Some(40);
    let answer = recommenders.recommend("shop", &in_norway).await.unwrap();
    assert!(answer.items.iter().any(|r| (4..8).contains(&r.item_id)));
    assert_eq!(answer.removed["region"], 0);

    // An interaction posted back takes effect within a second: the item is no longer
    // recommended, and the user's history (read by the tower) holds it.
    let user = 2;
    let first = recommenders
        .recommend("shop", &request(user))
        .await
        .unwrap();
    let picked = first.items[0].item_id;
    let mut event = serde_json::Map::new();
    event.insert("user_id".into(), user.into());
    event.insert("item_id".into(), picked.into());
    let posted = Instant::now();
    recommenders.interact("shop", vec![event]).await.unwrap();
    loop {
        let answer = recommenders
            .recommend("shop", &request(user))
            .await
            .unwrap();
        if answer.items.iter().all(|r| r.item_id != picked) {
            break;
        }
        assert!(
            posted.elapsed() < Duration::from_secs(1),
            "item {picked} still recommended a second after the interaction"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // An item going out of stock leaves the recommendations at once.
    let second = recommenders
        .recommend("shop", &request(user))
        .await
        .unwrap();
    let sold = second.items[0].item_id;
    let row = format!(
        "item_id,ts,genres,year,in_stock,region,min_age\n{sold},2024-06-01T00:00:00Z,A,2000,false,ALL,0\n"
    );
    store
        .insert(
            "items",
            None,
            Format::Csv,
            Bytes::from(row),
            InsertOptions { wait_online: true },
        )
        .await
        .unwrap();
    let answer = recommenders
        .recommend("shop", &request(user))
        .await
        .unwrap();
    assert!(answer.items.iter().all(|r| r.item_id != sold));

    // Diversity: at most 2 items share any genre value (A or B, and G0–G4).
    let mut capped = spec.clone();
    capped.diversity = Some(kairos_recommend::spec::Diversity {
        column: "genres".into(),
        max_per_value: 2,
    });
    let status = recommenders.apply(capped).await.unwrap();
    assert_eq!(status.revision, 2);
    let answer = recommenders.recommend("shop", &request(0)).await.unwrap();
    let mut counts = std::collections::HashMap::new();
    for item in &answer.items {
        let letter = if item.item_id % 2 == 0 { "A" } else { "B" };
        for genre in [letter.to_owned(), format!("G{}", item.item_id % 5)] {
            *counts.entry(genre).or_insert(0) += 1;
        }
    }
    assert!(counts.values().all(|&c| c <= 2), "{counts:?}");
    assert!(answer.removed["diversity"] > 0);

    // The V2 view: user_id in, a row of item ids and scores per user out.
    let response = V2Application::infer(
        &recommenders,
        "shop",
        InferRequest {
            id: Some("r1".into()),
            inputs: vec![
                Tensor {
                    name: "user_id".into(),
                    shape: vec![2],
                    data: TensorData::Int64(vec![0, 1]),
                },
                Tensor {
                    name: "k".into(),
                    shape: vec![1],
                    data: TensorData::Int64(vec![5]),
                },
            ],
            outputs: Vec::new(),
        },
    )
    .await
    .expect("the recommender answers its name")
    .unwrap();
    assert_eq!(response.outputs[0].name, "item_id");
    assert_eq!(response.outputs[0].shape, vec![2, 5]);
    assert!(V2Application::metadata(&recommenders, "no_such").is_none());

    // Bad requests are refused with what was wrong; an unknown user still gets items.
    let err = recommenders
        .recommend(
            "shop",
            &RecommendRequest {
                k: Some(0),
                ..request(0)
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("k is 0"), "{err}");
    let mut bad_context = request(0);
    bad_context.context.insert("shoe_size".into(), 42.into());
    let err = recommenders
        .recommend("shop", &bad_context)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("shoe_size"), "{err}");
    // A user the store does not know: a rule that cannot be decided (their age is null)
    // drops the item; with the request's context they get a full answer.
    let stranger = recommenders.recommend("shop", &request(999)).await.unwrap();
    assert!(!stranger.known_user);
    assert!(stranger.items.is_empty());
    let mut stranger = request(999);
    stranger.context.insert("age".into(), 30.into());
    stranger.context.insert("region".into(), "SE".into());
    let answer = recommenders.recommend("shop", &stranger).await.unwrap();
    assert_eq!(answer.removed["age"], 0);
    assert_eq!(answer.removed["region"], 4);
    // Two of genre A and two of B: the diversity caps of this revision.
    assert_eq!(answer.items.len(), 4);

    // A restarted server loads the recommender from the catalog and answers the same.
    let before = recommenders.recommend("shop", &request(5)).await.unwrap();
    recommenders.close().await;
    store.close().await;
    drop((recommenders, store));
    let store = FeatureStore::open(StoreConfig::with_data_dir(dir.path()))
        .await
        .unwrap();
    let recommenders = Recommenders::new(store.clone());
    recommenders.start_all().await;
    let after = recommenders.recommend("shop", &request(5)).await.unwrap();
    let ids = |r: &kairos_recommend::RecommendResponse| {
        r.items.iter().map(|i| i.item_id).collect::<Vec<_>>()
    };
    assert_eq!(ids(&before), ids(&after));

    // Another server on the same catalog follows what this one applies and deletes: it loads
    // the catalog's revision and answers the same, does nothing more for a revision it serves,
    // and takes the recommender out once the catalog no longer has it.
    let other = Recommenders::new(store.clone());
    other.follow("shop").await.unwrap();
    let serving = |r: &Recommenders| r.status("shop").map(|s| s.revision).ok();
    assert_eq!(serving(&other), serving(&recommenders));
    let followed = other.recommend("shop", &request(5)).await.unwrap();
    assert_eq!(ids(&followed), ids(&after));
    other.follow("shop").await.unwrap();
    assert_eq!(serving(&other), serving(&recommenders));
    assert!(
        store
            .catalog()
            .delete_service_document(kairos_recommend::service::KIND, "shop")
            .unwrap()
    );
    other.follow("shop").await.unwrap();
    assert_eq!(serving(&other), None);
    other.close().await;
    recommenders.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recommender_definition_with_a_bad_rule_is_refused_by_name() {
    let text = SPEC.replace("keep = \"in_stock = true\"", "keep = \"in_stock = = true\"");
    let err = RecommenderSpec::parse("shop.toml", &text).unwrap_err();
    assert!(err.to_string().contains("filter 'sold_out'"), "{err}");
    let text = SPEC.replace("already_interacted = true", "");
    let err = RecommenderSpec::parse("shop.toml", &text).unwrap_err();
    assert!(err.to_string().contains("filter 'seen'"), "{err}");

    // Rules naming columns the groups lack are refused at apply, before anything changes.
    let dir = tempfile::tempdir().unwrap();
    let store = FeatureStore::open(StoreConfig::with_data_dir(dir.path()))
        .await
        .unwrap();
    catalogue(&store).await;
    let spec = RecommenderSpec::parse(
        "shop.toml",
        &SPEC.replace("min_age <= user_age", "min_age <= user_height"),
    )
    .unwrap();
    let err = Recommenders::new(store.clone())
        .apply(spec)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("user_height"), "{err}");
    store.close().await;
}
