//! MovieLens 100K's files (`u.data`, `u.item`, `u.user`, `u.genre`), read from a folder: the
//! data set is never copied into the project.

use std::collections::HashMap;
use std::path::Path;

use crate::RecsysError;
use crate::data::{Dataset, Interaction, Item, User};

fn read(dir: &Path, name: &str) -> Result<String, RecsysError> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path)
        .map_err(|e| RecsysError::Data(format!("cannot read {}: {e}", path.display())))?;
    // u.item is Latin-1: every byte is its own code point.
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
    })
}

fn bad(file: &str, line: usize, what: &str) -> RecsysError {
    RecsysError::Data(format!("{file} line {}: {what}", line + 1))
}

/// Reads the data set: 943 users, 1,682 movies with 19 genres and a release year, and 100,000
/// ratings (every rating is an interaction of weight 1: what was watched, not how it was liked).
pub fn load(dir: &Path) -> Result<Dataset, RecsysError> {
    let category_names: Vec<String> = read(dir, "u.genre")?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('|').next().unwrap_or_default().to_owned())
        .collect();

    let mut items = Vec::new();
    for (n, line) in read(dir, "u.item")?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
    {
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() != 5 + category_names.len() {
            return Err(bad(
                "u.item",
                n,
                &format!(
                    "{} fields, expected {}",
                    fields.len(),
                    5 + category_names.len()
                ),
            ));
        }
        let id = fields[0]
            .parse()
            .map_err(|_| bad("u.item", n, "movie id is not an integer"))?;
        let year = fields[2].rsplit('-').next().and_then(|y| y.parse().ok());
        let categories = fields[5..]
            .iter()
            .enumerate()
            .filter(|(_, f)| **f == "1")
            .map(|(g, _)| g as u16)
            .collect();
        items.push(Item {
            id,
            title: fields[1].to_owned(),
            categories,
            year,
        });
    }

    let mut genders = HashMap::new();
    let mut occupations = HashMap::new();
    let mut users = Vec::new();
    for (n, line) in read(dir, "u.user")?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
    {
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() != 5 {
            return Err(bad(
                "u.user",
                n,
                &format!("{} fields, expected 5", fields.len()),
            ));
        }
        let id = fields[0]
            .parse()
            .map_err(|_| bad("u.user", n, "user id is not an integer"))?;
        let next = genders.len() as u16;
        let gender = *genders.entry(fields[2].to_owned()).or_insert(next);
        let next = occupations.len() as u16;
        let occupation = *occupations.entry(fields[3].to_owned()).or_insert(next);
        users.push(User {
            id,
            age: fields[1].parse().ok(),
            traits: vec![gender, occupation],
        });
    }

    let dataset = Dataset {
        users,
        items,
        interactions: Vec::new(),
        category_names,
        trait_sizes: vec![genders.len(), occupations.len()],
        trait_values: [genders, occupations]
            .into_iter()
            .map(|vocabulary| {
                let mut values: Vec<(u16, String)> =
                    vocabulary.into_iter().map(|(v, i)| (i, v)).collect();
                values.sort();
                values.into_iter().map(|(_, v)| v).collect()
            })
            .collect(),
    };
    let (user_index, item_index) = (dataset.user_index(), dataset.item_index());
    let mut interactions = Vec::with_capacity(100_000);
    for (n, line) in read(dir, "u.data")?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
    {
        let fields: Vec<&str> = line.split('\t').collect();
        let [user, item, _rating, time] = fields[..] else {
            return Err(bad(
                "u.data",
                n,
                &format!("{} fields, expected 4", fields.len()),
            ));
        };
        let parse = |text: &str, what: &str| {
            text.parse::<i64>()
                .map_err(|_| bad("u.data", n, &format!("{what} '{text}' is not an integer")))
        };
        let (user, item, time) = (
            parse(user, "user id")?,
            parse(item, "item id")?,
            parse(time, "timestamp")?,
        );
        let user = *user_index
            .get(&user)
            .ok_or_else(|| bad("u.data", n, &format!("user {user} is not in u.user")))?;
        let item = *item_index
            .get(&item)
            .ok_or_else(|| bad("u.data", n, &format!("item {item} is not in u.item")))?;
        interactions.push(Interaction {
            user,
            item,
            time,
            weight: 1.0,
        });
    }
    Ok(Dataset {
        interactions,
        ..dataset
    })
}
