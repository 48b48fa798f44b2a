//! A seeded generator of realistic card transactions.
//!
//! Cards live in cities and spend on merchants near home, with a daily rhythm (little at night)
//! and a weekly one (more on weekends), at amounts around each card's usual spend. Into some
//! cards' timelines it injects the fraud patterns the lecture's features are built to catch:
//!
//! - **geo-velocity**: the card is used far from where it was used minutes before;
//! - **testing burst**: a few tiny online payments within minutes, then a large one;
//! - **amount spike**: many times the card's usual amount in a category it never buys;
//! - **compromised merchant**: cards that paid at a breached merchant are defrauded days later;
//! - **card not present**: an ordinary-looking online payment or two, which no feature tells
//!   apart from genuine spend (so no model catches every fraud).
//!
//! Genuine spend has the look-alikes a real bank sees, so that no single signal is enough: cards
//! travel (a flight, then days of payments in another city, sometimes on another continent),
//! make the odd big purchase in a rare category, and buy small things online in quick runs.
//!
//! Each transaction gets a label event that arrives later — frauds when the card holder reports
//! them (within the hour) or the chargeback comes (hours to days), genuine ones when the payment
//! settles (days) — as a separate stream.
//! The same seed gives the same history, bit for bit.

use chrono::{DateTime, Datelike, Timelike};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub seed: u64,
    pub cards: usize,
    pub merchants: usize,
    /// Microseconds since the epoch, UTC.
    pub start_micros: i64,
    pub days: f64,
    /// The share of transactions that are fraud, roughly (patterns come in episodes).
    pub fraud_rate: f64,
    /// A change of the world at a known time, for monitoring to find.
    pub drift: Option<Drift>,
}

/// What changes at `at_micros`: every amount is multiplied by `amount_scale` (prices rose, or a
/// currency changed), and fraud rings start on a new pattern ([`Pattern::NightRun`]) that makes
/// half of the fraud episodes from then on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    pub at_micros: i64,
    pub amount_scale: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 7,
            cards: 1_000,
            merchants: 300,
            start_micros: 1_714_521_600_000_000, // 2024-05-01T00:00:00Z
            days: 7.0,
            fraud_rate: 0.005,
            drift: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Card {
    pub cc_num: i64,
    pub home_latitude: f64,
    pub home_longitude: f64,
    pub credit_limit: f64,
    /// The card's usual amount (the median of its genuine spend).
    #[serde(skip)]
    pub usual_amount: f64,
    #[serde(skip)]
    pub per_day: f64,
    #[serde(skip)]
    pub categories: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Merchant {
    pub merchant_id: i64,
    pub category: &'static str,
    pub latitude: f64,
    pub longitude: f64,
    #[serde(skip)]
    pub compromised: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transaction {
    pub tx_id: i64,
    pub cc_num: i64,
    /// Microseconds since the epoch, UTC.
    pub ts: i64,
    pub amount: f64,
    pub merchant_id: i64,
    pub category: &'static str,
    pub latitude: f64,
    pub longitude: f64,
    /// The truth, for evaluation; a model learns it only from [`Label`]s.
    #[serde(skip)]
    pub is_fraud: bool,
    #[serde(skip)]
    pub pattern: Option<Pattern>,
}

/// A label event: the truth about a transaction, known at `ts`, after the transaction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Label {
    pub tx_id: i64,
    pub cc_num: i64,
    /// When the label became known.
    pub ts: i64,
    pub tx_ts: i64,
    pub is_fraud: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    GeoVelocity,
    TestingBurst,
    AmountSpike,
    CompromisedMerchant,
    CardNotPresent,
    /// After a drift: a run of everyday payments near home in the small hours, several times
    /// the usual amount, minutes apart.
    NightRun,
}

/// A generated history, each list in time order.
#[derive(Debug, Clone)]
pub struct Generated {
    pub cards: Vec<Card>,
    pub merchants: Vec<Merchant>,
    pub transactions: Vec<Transaction>,
    pub labels: Vec<Label>,
}

/// Cities cards and merchants live in: (latitude, longitude).
const CITIES: [(f64, f64); 12] = [
    (59.33, 18.06), // Stockholm
    (57.71, 11.97), // Gothenburg
    (55.60, 13.00), // Malmö
    (60.17, 24.94), // Helsinki
    (59.91, 10.75), // Oslo
    (55.68, 12.57), // Copenhagen
    (52.52, 13.40), // Berlin
    (48.86, 2.35),  // Paris
    (51.51, -0.13), // London
    (40.42, -3.70), // Madrid
    (41.90, 12.50), // Rome
    (52.37, 4.90),  // Amsterdam
];

/// Far-away places a stolen card number is used from, each over 1,000 km from every home city.
const FAR_AWAY: [(f64, f64); 6] = [
    (40.71, -74.01), // New York
    (-23.55, -46.63),
    (6.52, 3.38),
    (13.76, 100.50),
    (19.43, -99.13),
    (1.35, 103.82),
];

const EVERYDAY: [&str; 5] = ["grocery", "restaurant", "gas", "health", "entertainment"];
const RARE: [&str; 3] = ["electronics", "jewelry", "travel"];
const ONLINE: &str = "online";
/// How often a card goes on a trip: one trip every hundred days, on average.
const TRIPS_PER_DAY: f64 = 0.01;

/// Generates a history as `config` says.
pub fn generate(config: &GenConfig) -> Generated {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let categories: Vec<&'static str> = EVERYDAY
        .iter()
        .chain(&RARE)
        .chain(&[ONLINE])
        .copied()
        .collect();
    let merchants: Vec<Merchant> = (0..config.merchants.max(categories.len()))
        .map(|i| {
            let category = categories[i % categories.len()];
            let (latitude, longitude) = somewhere_in(&mut rng, &CITIES, 0.15);
            Merchant {
                merchant_id: 10_000 + i as i64,
                category,
                latitude,
                longitude,
                // About one everyday merchant in a hundred has been breached.
                compromised: EVERYDAY.contains(&category) && rng.random_bool(0.01),
            }
        })
        .collect();
    let cards: Vec<Card> = (0..config.cards)
        .map(|i| {
            let (home_latitude, home_longitude) = somewhere_in(&mut rng, &CITIES, 0.1);
            let usual_amount = (rng.random_range(2.5_f64..4.5)).exp(); // ~12 to ~90
            let mut liked: Vec<&'static str> = EVERYDAY.to_vec();
            liked.retain(|_| rng.random_bool(0.7));
            if liked.is_empty() {
                liked.push("grocery");
            }
            Card {
                cc_num: 4_000_000_000_000_000 + i as i64 * 7_919,
                home_latitude,
                home_longitude,
                credit_limit: (rng.random_range(10..100) * 100) as f64,
                usual_amount,
                per_day: rng.random_range(0.5..5.0),
                categories: liked,
            }
        })
        .collect();

    let end = config.start_micros + (config.days * DAY as f64) as i64;
    // An episode yields ~3 fraudulent transactions on average and breaches add about a fifth
    // of the frauds: size the episode rate to the rest.
    let episode_share = config.fraud_rate * 0.8 / 3.0;
    let mut transactions: Vec<Transaction> = Vec::new();
    let mut breached: Vec<(usize, i64)> = Vec::new();
    for (c, card) in cards.iter().enumerate() {
        let near: Vec<&Merchant> = merchants
            .iter()
            .filter(|m| {
                m.category != ONLINE
                    && (m.latitude - card.home_latitude).abs() < 0.6
                    && (m.longitude - card.home_longitude).abs() < 0.6
            })
            .collect();
        let online: Vec<&Merchant> = merchants.iter().filter(|m| m.category == ONLINE).collect();
        let mut t = config.start_micros;
        // A trip: (where, from, until); payments in that span happen there.
        let mut trip: Option<((f64, f64), i64, i64)> = None;
        loop {
            // A Poisson process thinned by the hour of day and the day of week.
            t +=
                (rng.random::<f64>().max(1e-12).ln() * -(DAY as f64) / (card.per_day * 1.6)) as i64;
            if t >= end {
                break;
            }
            let at = DateTime::from_timestamp_micros(t).expect("in range");
            let hour_weight = match at.hour() {
                0..=5 => 0.1,
                6..=8 => 0.6,
                9..=20 => 1.0,
                _ => 0.5,
            };
            let weekend = at.weekday().number_from_monday() >= 6;
            if !rng.random_bool(hour_weight * if weekend { 1.0 } else { 0.8 }) {
                continue;
            }
            if trip.is_some_and(|(_, _, until)| t >= until) {
                trip = None;
            }
            if let Some((place, _, _)) = trip.filter(|(_, from, _)| t >= *from) {
                // Away: restaurants, hotels and shops where the card is.
                let merchant = merchants.choose(&mut rng).expect("merchants");
                transactions.push(Transaction {
                    tx_id: 0,
                    cc_num: card.cc_num,
                    ts: t,
                    amount: (card.usual_amount * (rng.random_range(-0.4_f64..1.0)).exp() * 100.0)
                        .round()
                        / 100.0,
                    merchant_id: merchant.merchant_id,
                    category: merchant.category,
                    latitude: place.0 + rng.random_range(-0.05..0.05),
                    longitude: place.1 + rng.random_range(-0.05..0.05),
                    is_fraud: false,
                    pattern: None,
                });
                continue;
            }
            let home = (card.home_latitude, card.home_longitude);
            if trip.is_none() && rng.random_bool((TRIPS_PER_DAY / card.per_day).min(1.0)) {
                // The flight is paid at home; the card lands 2–14 hours later, for 2–6 days,
                // in another home city or, one trip in five, on another continent.
                let ticket = merchants
                    .iter()
                    .filter(|m| m.category == "travel")
                    .collect::<Vec<_>>()
                    .choose(&mut rng)
                    .copied()
                    .expect("travel merchants");
                transactions.push(Transaction {
                    tx_id: 0,
                    cc_num: card.cc_num,
                    ts: t,
                    amount: (card.usual_amount * rng.random_range(4.0..15.0) * 100.0).round()
                        / 100.0,
                    merchant_id: ticket.merchant_id,
                    category: ticket.category,
                    latitude: home.0,
                    longitude: home.1,
                    is_fraud: false,
                    pattern: None,
                });
                let place = if rng.random_bool(0.2) {
                    somewhere_in(&mut rng, &FAR_AWAY, 0.1)
                } else {
                    somewhere_in(&mut rng, &CITIES, 0.1)
                };
                let from = t + rng.random_range(2 * HOUR..14 * HOUR);
                trip = Some((place, from, from + rng.random_range(2 * DAY..6 * DAY)));
                continue;
            }
            if rng.random_bool(0.02) && !near.is_empty() {
                // A big purchase, now and then, in a category the card rarely buys.
                let big = near
                    .iter()
                    .filter(|m| RARE.contains(&m.category))
                    .collect::<Vec<_>>()
                    .choose(&mut rng)
                    .map(|m| **m);
                if let Some(m) = big {
                    transactions.push(Transaction {
                        tx_id: 0,
                        cc_num: card.cc_num,
                        ts: t,
                        amount: (card.usual_amount * rng.random_range(2.0..12.0) * 100.0).round()
                            / 100.0,
                        merchant_id: m.merchant_id,
                        category: m.category,
                        latitude: m.latitude,
                        longitude: m.longitude,
                        is_fraud: false,
                        pattern: None,
                    });
                    continue;
                }
            }
            if rng.random_bool(0.01) {
                // A quick run of small online purchases (apps, tickets, top-ups).
                let shop = *online.choose(&mut rng).expect("online merchants");
                let mut at = t;
                for _ in 0..rng.random_range(2..6) {
                    transactions.push(Transaction {
                        tx_id: 0,
                        cc_num: card.cc_num,
                        ts: at,
                        amount: rng.random_range(1.0_f64..8.0).round() - 0.01,
                        merchant_id: shop.merchant_id,
                        category: shop.category,
                        latitude: home.0,
                        longitude: home.1,
                        is_fraud: false,
                        pattern: None,
                    });
                    at += rng.random_range(30_000_000..5 * MINUTE);
                }
                continue;
            }
            let merchant = if rng.random_bool(0.15) || near.is_empty() {
                *online.choose(&mut rng).expect("online merchants")
            } else {
                let wanted = if weekend && rng.random_bool(0.3) {
                    "entertainment"
                } else {
                    card.categories
                        .choose(&mut rng)
                        .copied()
                        .expect("a category")
                };
                near.iter()
                    .filter(|m| m.category == wanted)
                    .collect::<Vec<_>>()
                    .choose(&mut rng)
                    .map_or_else(|| *near.choose(&mut rng).expect("near"), |m| **m)
            };
            let amount = (card.usual_amount * (rng.random_range(-0.6_f64..0.6)).exp() * 100.0)
                .round()
                / 100.0;
            let (latitude, longitude) = if merchant.category == ONLINE {
                (card.home_latitude, card.home_longitude)
            } else {
                (merchant.latitude, merchant.longitude)
            };
            let last = transactions.len();
            transactions.push(Transaction {
                tx_id: 0,
                cc_num: card.cc_num,
                ts: t,
                amount,
                merchant_id: merchant.merchant_id,
                category: merchant.category,
                latitude,
                longitude,
                is_fraud: false,
                pattern: None,
            });
            if merchant.compromised {
                breached.push((c, t));
            }
            if rng.random_bool(episode_share.min(1.0)) {
                let drifted = config
                    .drift
                    .is_some_and(|d| transactions[last].ts >= d.at_micros);
                // The extra draw happens only after a drift, so a history without one is the
                // same as before drifts existed.
                let pattern = if drifted && rng.random_bool(0.5) {
                    Pattern::NightRun
                } else {
                    *[
                        Pattern::GeoVelocity,
                        Pattern::TestingBurst,
                        Pattern::AmountSpike,
                        Pattern::CardNotPresent,
                    ]
                    .choose(&mut rng)
                    .expect("patterns")
                };
                let after = transactions[last].clone();
                inject(
                    &mut rng,
                    pattern,
                    card,
                    &after,
                    &online,
                    &merchants,
                    &mut transactions,
                );
            }
        }
    }
    // Breached merchants' customers are defrauded one to five days later, from far away.
    // About 0.85% of payments go to a breached merchant; defrauding 24 × the fraud rate of them
    // makes breaches about a fifth of the frauds.
    for (c, t) in breached {
        if !rng.random_bool((config.fraud_rate * 24.0).min(1.0)) {
            continue;
        }
        let card = &cards[c];
        let when = t + rng.random_range(DAY..5 * DAY);
        if when >= end {
            continue;
        }
        let merchant = merchants
            .iter()
            .filter(|m| RARE.contains(&m.category))
            .collect::<Vec<_>>()
            .choose(&mut rng)
            .copied()
            .expect("rare merchants");
        let (latitude, longitude) = somewhere_in(&mut rng, &FAR_AWAY, 0.2);
        transactions.push(Transaction {
            tx_id: 0,
            cc_num: card.cc_num,
            ts: when,
            amount: (card.usual_amount * rng.random_range(4.0..12.0) * 100.0).round() / 100.0,
            merchant_id: merchant.merchant_id,
            category: merchant.category,
            latitude,
            longitude,
            is_fraud: true,
            pattern: Some(Pattern::CompromisedMerchant),
        });
    }
    transactions.sort_by_key(|t| (t.ts, t.cc_num));
    for (i, t) in transactions.iter_mut().enumerate() {
        t.tx_id = i as i64 + 1;
        if let Some(drift) = config.drift
            && t.ts >= drift.at_micros
        {
            t.amount = (t.amount * drift.amount_scale * 100.0).round() / 100.0;
        }
    }
    let mut labels: Vec<Label> = transactions
        .iter()
        .map(|t| {
            // A third of frauds are reported by the card holder within the hour (an alert or
            // a text about a payment they did not make); the rest come back as chargebacks,
            // an hour to three days later. A genuine payment settles in days.
            let delay = if t.is_fraud && rng.random_bool(1.0 / 3.0) {
                rng.random_range(5 * MINUTE..HOUR)
            } else if t.is_fraud {
                (rng.random_range((HOUR as f64).ln()..(3.0 * DAY as f64).ln())).exp() as i64
            } else {
                rng.random_range(DAY..4 * DAY)
            };
            Label {
                tx_id: t.tx_id,
                cc_num: t.cc_num,
                ts: t.ts + delay,
                tx_ts: t.ts,
                is_fraud: t.is_fraud,
            }
        })
        .collect();
    labels.sort_by_key(|l| (l.ts, l.tx_id));
    Generated {
        cards,
        merchants,
        transactions,
        labels,
    }
}

/// A point within `spread` degrees of one of `places`.
fn somewhere_in(rng: &mut StdRng, places: &[(f64, f64)], spread: f64) -> (f64, f64) {
    let (lat, lon) = *places.choose(rng).expect("places");
    (
        lat + rng.random_range(-spread..spread),
        lon + rng.random_range(-spread..spread),
    )
}

/// Appends one fraud episode of `pattern` on `card`, starting just after `after`.
fn inject(
    rng: &mut StdRng,
    pattern: Pattern,
    card: &Card,
    after: &Transaction,
    online: &[&Merchant],
    merchants: &[Merchant],
    out: &mut Vec<Transaction>,
) {
    let mut push =
        |ts: i64, amount: f64, merchant: &Merchant, (latitude, longitude): (f64, f64)| {
            out.push(Transaction {
                tx_id: 0,
                cc_num: card.cc_num,
                ts,
                amount: (amount * 100.0).round() / 100.0,
                merchant_id: merchant.merchant_id,
                category: merchant.category,
                latitude,
                longitude,
                is_fraud: true,
                pattern: Some(pattern),
            });
        };
    let rare = || merchants.iter().filter(|m| RARE.contains(&m.category));
    match pattern {
        Pattern::GeoVelocity => {
            // Used thousands of kilometres away minutes after a genuine payment, a few times.
            let far = *FAR_AWAY.choose(rng).expect("far");
            let mut t = after.ts + rng.random_range(3 * MINUTE..40 * MINUTE);
            for _ in 0..rng.random_range(2..5) {
                let merchant = rare()
                    .collect::<Vec<_>>()
                    .choose(rng)
                    .copied()
                    .expect("rare");
                push(
                    t,
                    card.usual_amount * rng.random_range(1.0..4.0),
                    merchant,
                    far,
                );
                t += rng.random_range(2 * MINUTE..20 * MINUTE);
            }
        }
        Pattern::TestingBurst => {
            // Tiny online payments to test the number, then the real one.
            let merchant = *online.choose(rng).expect("online");
            let home = (card.home_latitude, card.home_longitude);
            let mut t = after.ts + rng.random_range(MINUTE..6 * HOUR);
            for _ in 0..rng.random_range(3..7) {
                push(t, rng.random_range(0.5..3.0), merchant, home);
                t += rng.random_range(20_000_000..3 * MINUTE);
            }
            push(
                t,
                card.usual_amount * rng.random_range(8.0..20.0),
                merchant,
                home,
            );
        }
        Pattern::AmountSpike => {
            // Many times the usual amount, in a category the card never buys, near home.
            let merchant = rare()
                .collect::<Vec<_>>()
                .choose(rng)
                .copied()
                .expect("rare");
            let t = after.ts + rng.random_range(MINUTE..12 * HOUR);
            let place = (
                card.home_latitude + rng.random_range(-0.05..0.05),
                card.home_longitude + rng.random_range(-0.05..0.05),
            );
            push(
                t,
                card.usual_amount * rng.random_range(10.0..30.0),
                merchant,
                place,
            );
            push(
                t + rng.random_range(5 * MINUTE..HOUR),
                card.usual_amount * rng.random_range(10.0..30.0),
                merchant,
                place,
            );
        }
        Pattern::CardNotPresent => {
            // The stolen number used online at an ordinary amount, once or twice.
            let merchant = *online.choose(rng).expect("online");
            let home = (card.home_latitude, card.home_longitude);
            let mut t = after.ts + rng.random_range(10 * MINUTE..DAY);
            for _ in 0..rng.random_range(1..3) {
                let amount = card.usual_amount * (rng.random_range(-0.3_f64..1.1)).exp();
                push(t, amount, merchant, home);
                t += rng.random_range(HOUR..12 * HOUR);
            }
        }
        Pattern::NightRun => {
            // The next night, 1 to 4 a.m., at everyday merchants in the home city.
            let everyday: Vec<&Merchant> = merchants
                .iter()
                .filter(|m| {
                    EVERYDAY.contains(&m.category)
                        && (m.latitude - card.home_latitude).abs() < 0.6
                        && (m.longitude - card.home_longitude).abs() < 0.6
                })
                .collect();
            let Some(merchant) = everyday.choose(rng).copied() else {
                return;
            };
            let midnight = after.ts - after.ts.rem_euclid(DAY) + DAY;
            let mut t = midnight + rng.random_range(HOUR..4 * HOUR);
            let place = (
                card.home_latitude + rng.random_range(-0.05..0.05),
                card.home_longitude + rng.random_range(-0.05..0.05),
            );
            for _ in 0..rng.random_range(2..5) {
                push(
                    t,
                    card.usual_amount * rng.random_range(3.0..6.0),
                    merchant,
                    place,
                );
                t += rng.random_range(4 * MINUTE..25 * MINUTE);
            }
        }
        Pattern::CompromisedMerchant => unreachable!("injected from the breach list"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
        let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
        let a = ((p2 - p1) / 2.0).sin().powi(2)
            + p1.cos() * p2.cos() * ((lon2 - lon1).to_radians() / 2.0).sin().powi(2);
        2.0 * 6371.0 * a.sqrt().asin()
    }

    fn config() -> GenConfig {
        GenConfig {
            cards: 2_000,
            days: 14.0,
            ..GenConfig::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_history() {
        let a = generate(&config());
        let b = generate(&config());
        assert_eq!(a.transactions, b.transactions);
        assert_eq!(a.labels, b.labels);
        let c = generate(&GenConfig {
            seed: 8,
            ..config()
        });
        assert_ne!(a.transactions, c.transactions);
    }

    #[test]
    fn the_history_has_the_configured_fraud_rate_and_every_pattern() {
        let g = generate(&config());
        let n = g.transactions.len();
        assert!(n > 20_000, "{n} transactions");
        let fraud = g.transactions.iter().filter(|t| t.is_fraud).count();
        let rate = fraud as f64 / n as f64;
        assert!((0.0025..0.01).contains(&rate), "fraud rate {rate}");
        let mut patterns: HashMap<Pattern, usize> = HashMap::new();
        for t in g.transactions.iter().filter_map(|t| t.pattern) {
            *patterns.entry(t).or_default() += 1;
        }
        assert_eq!(patterns.len(), 5, "{patterns:?}");
        assert!(g.transactions.windows(2).all(|w| w[0].ts <= w[1].ts));
        assert!(
            g.transactions
                .iter()
                .enumerate()
                .all(|(i, t)| t.tx_id == i as i64 + 1)
        );
    }

    #[test]
    fn geo_velocity_frauds_are_far_from_the_previous_payment_minutes_later() {
        let g = generate(&config());
        let mut last: HashMap<i64, &Transaction> = HashMap::new();
        let mut seen = 0;
        for t in &g.transactions {
            if t.pattern == Some(Pattern::GeoVelocity)
                && let Some(prev) = last.get(&t.cc_num)
                && prev.pattern.is_none()
            {
                assert!(km(prev.latitude, prev.longitude, t.latitude, t.longitude) > 1_000.0);
                assert!(t.ts - prev.ts < HOUR);
                seen += 1;
            }
            last.insert(t.cc_num, t);
        }
        assert!(seen > 0);
    }

    #[test]
    fn labels_arrive_after_their_transactions_and_tell_the_truth() {
        let g = generate(&config());
        assert_eq!(g.labels.len(), g.transactions.len());
        let by_id: HashMap<i64, &Transaction> =
            g.transactions.iter().map(|t| (t.tx_id, t)).collect();
        for l in &g.labels {
            let t = by_id[&l.tx_id];
            assert!(l.ts > t.ts && l.tx_ts == t.ts && l.is_fraud == t.is_fraud);
        }
        assert!(g.labels.windows(2).all(|w| w[0].ts <= w[1].ts));
        // Some fraud labels come within the hour, some only after a day.
        let delays: Vec<i64> = g
            .labels
            .iter()
            .filter(|l| l.is_fraud)
            .map(|l| l.ts - l.tx_ts)
            .collect();
        assert!(delays.iter().any(|d| *d < HOUR) && delays.iter().any(|d| *d > DAY));
    }
}
