//! The card-fraud demo, the lecture's running example. [`generator`] makes a seeded history of
//! card transactions with the fraud patterns the lecture's features catch, and the labels that
//! arrive late, as a bank's chargebacks do. [`fraud`] runs the application end to end on a
//! store: definitions, history through the window pipelines, training, deployment, a live
//! replay over HTTP, and the quality report.

pub mod fraud;
pub mod generator;

pub use generator::{Card, GenConfig, Generated, Label, Merchant, Transaction, generate};
