//! The recommender's models on synthetic data with a planted structure.

use kairos_recsys::baselines::{self, AlsParams};
use kairos_recsys::data::{Dataset, Interaction, Item, User, leave_last_out};
use kairos_recsys::eval::{EvalParams, evaluate};
use kairos_recsys::two_tower::{Tower, TwoTower, TwoTowerParams, UserQuery};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const COMMUNITIES: u32 = 4;
const USERS: u32 = 200;
const ITEMS: u32 = 240;

/// Users of community `c` (user % 4) interact only with items of community `c` (item % 4), and
/// the items carry their community as a category.
fn planted(seed: u64) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let users = (0..USERS)
        .map(|u| User {
            id: i64::from(u),
            age: Some(30),
            traits: vec![0],
        })
        .collect();
    let items = (0..ITEMS)
        .map(|i| Item {
            id: i64::from(i),
            title: format!("item {i}"),
            categories: vec![(i % COMMUNITIES) as u16],
            year: Some(2000),
        })
        .collect();
    let mut interactions = Vec::new();
    for user in 0..USERS {
        let community = user % COMMUNITIES;
        for step in 0..20 {
            let item = community + COMMUNITIES * rng.random_range(0..ITEMS / COMMUNITIES);
            interactions.push(Interaction {
                user,
                item,
                time: i64::from(step) * 60 + i64::from(user),
                weight: 1.0,
            });
        }
    }
    Dataset {
        users,
        items,
        interactions,
        category_names: (0..COMMUNITIES).map(|c| format!("community {c}")).collect(),
        trait_sizes: vec![1],
        trait_values: Vec::new(),
    }
}

fn small() -> TwoTowerParams {
    TwoTowerParams {
        dim: 16,
        hidden: 32,
        epochs: 15,
        batch: 128,
        ..Default::default()
    }
}

#[test]
fn the_two_tower_model_learns_the_planted_communities() {
    let dataset = planted(1);
    let split = leave_last_out(&dataset);
    let model = TwoTower::train(&dataset, &split.train, small()).unwrap();
    let items = model.item_vectors().unwrap();
    let histories = Dataset::histories(&split.train, USERS as usize);
    let mut in_community = 0;
    let mut hits = 0;
    for test in &split.test {
        let recent: Vec<u32> = histories[test.user as usize]
            .iter()
            .map(|e| e.item)
            .collect();
        let user = model
            .user_vector(&UserQuery {
                user: test.user,
                recent,
            })
            .unwrap();
        let mut scored: Vec<(f32, u32)> = items
            .iter()
            .enumerate()
            .map(|(i, v)| (user.iter().zip(v).map(|(a, b)| a * b).sum(), i as u32))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let top: Vec<u32> = scored.iter().take(10).map(|s| s.1).collect();
        in_community += top
            .iter()
            .filter(|&&i| i % COMMUNITIES == test.user % COMMUNITIES)
            .count();
        hits += usize::from(top.contains(&test.item));
    }
    let share = in_community as f64 / (10 * split.test.len()) as f64;
    let recall = hits as f64 / split.test.len() as f64;
    // At random a tenth of 240 items would hit 4%, and a quarter would be the user's community.
    assert!(
        share > 0.9,
        "share of top-10 items in the user's community: {share}"
    );
    assert!(recall > 0.08, "recall@10 {recall}");
}

#[test]
fn implicit_als_beats_popularity_on_the_planted_communities() {
    let dataset = planted(2);
    let split = leave_last_out(&dataset);
    let factors = baselines::implicit_als(
        &split.train,
        USERS as usize,
        ITEMS as usize,
        AlsParams {
            factors: 8,
            ..Default::default()
        },
    );
    let in_community = split
        .test
        .iter()
        .map(|t| {
            let scores = factors.scores(t.user);
            let mut order: Vec<u32> = (0..ITEMS).collect();
            order.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));
            order
                .iter()
                .take(10)
                .filter(|&&i| i % COMMUNITIES == t.user % COMMUNITIES)
                .count()
        })
        .sum::<usize>();
    assert!(in_community as f64 / (10 * split.test.len()) as f64 > 0.9);
}

#[test]
fn the_evaluation_ranks_the_models_on_planted_data() {
    let dataset = planted(3);
    let params = EvalParams {
        two_tower: small(),
        candidates: 60,
        negatives: 10,
        ..Default::default()
    };
    let report = evaluate(&dataset, &params, |_| {}).unwrap();
    let recall = |name: &str| {
        report
            .results
            .iter()
            .find(|r| r.model.starts_with(name))
            .unwrap()
            .metrics
            .recall_at_10
    };
    assert_eq!(report.results.len(), 4);
    assert!(
        recall("two-tower retrieval") > 2.0 * recall("most popular"),
        "{report:?}"
    );
    assert!(
        recall("two-tower retrieval + ranking") > 2.0 * recall("most popular"),
        "{report:?}"
    );
}

#[test]
fn towers_saved_one_file_each_load_to_the_same_vectors() {
    let dataset = planted(3);
    let model = TwoTower::train(&dataset, &dataset.interactions, small()).unwrap();
    let user_file = model.tower_weights(Tower::User).unwrap();
    let item_file = model.tower_weights(Tower::Item).unwrap();
    let loaded = TwoTower::load(
        &dataset,
        small(),
        &[(Tower::User, &user_file), (Tower::Item, &item_file)],
    )
    .unwrap();
    assert_eq!(
        model.item_vectors().unwrap(),
        loaded.item_vectors().unwrap()
    );
    let query = UserQuery {
        user: 5,
        recent: vec![1, 5, 9],
    };
    assert_eq!(
        model.user_vector(&query).unwrap(),
        loaded.user_vector(&query).unwrap()
    );
    // The user tower's file alone does not make an item tower.
    let err = TwoTower::load(&dataset, small(), &[(Tower::Item, &user_file)]).unwrap_err();
    assert!(err.to_string().contains("item_mlp"), "{err}");
}
