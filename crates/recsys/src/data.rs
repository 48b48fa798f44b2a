//! Interactions, items and users as the recommender's code sees them: dense indices, so
//! embeddings are rows of a table, with the ids they came from.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One user–item event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interaction {
    pub user: u32,
    pub item: u32,
    /// Seconds since the Unix epoch.
    pub time: i64,
    pub weight: f32,
}

/// An item's side features.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Item {
    pub id: i64,
    pub title: String,
    /// Indices of the categories it belongs to (genres).
    pub categories: Vec<u16>,
    pub year: Option<u16>,
}

/// A user's side features.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub age: Option<u8>,
    /// A small categorical (gender, occupation …) as indices into their vocabularies.
    pub traits: Vec<u16>,
}

/// Everything a recommender trains on: interactions over dense user and item indices.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Dataset {
    pub users: Vec<User>,
    pub items: Vec<Item>,
    /// Not kept with a model's vocabulary: the shapes and side features are.
    #[serde(skip)]
    pub interactions: Vec<Interaction>,
    pub category_names: Vec<String>,
    /// Vocabulary sizes of each user trait.
    pub trait_sizes: Vec<usize>,
    /// Each user trait's values in index order, where the source named them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trait_values: Vec<Vec<String>>,
}

impl Dataset {
    pub fn user_index(&self) -> HashMap<i64, u32> {
        self.users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.id, i as u32))
            .collect()
    }

    pub fn item_index(&self) -> HashMap<i64, u32> {
        self.items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.id, i as u32))
            .collect()
    }

    /// Each user's interactions in time order (ties in the order given).
    pub fn histories(interactions: &[Interaction], users: usize) -> Vec<Vec<Interaction>> {
        let mut histories = vec![Vec::new(); users];
        for event in interactions {
            histories[event.user as usize].push(*event);
        }
        for history in &mut histories {
            history.sort_by_key(|e| e.time);
        }
        histories
    }
}

/// The data split for leave-last-out evaluation.
#[derive(Debug, Clone)]
pub struct Split {
    pub train: Vec<Interaction>,
    /// Per user with at least two interactions: their last one.
    pub test: Vec<Interaction>,
}

/// Time-ordered leave-last-out: each user's last interaction (by time; the data's order breaks
/// ties, as a stable sort does) is held out, the rest is training data.
pub fn leave_last_out(dataset: &Dataset) -> Split {
    let mut train = Vec::with_capacity(dataset.interactions.len());
    let mut test = Vec::new();
    for mut history in Dataset::histories(&dataset.interactions, dataset.users.len()) {
        if history.len() >= 2 {
            test.push(history.pop().expect("two or more"));
        }
        train.extend(history);
    }
    Split { train, test }
}
