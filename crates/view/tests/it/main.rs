//! Differential tests of the point-in-time join against a naive reference.

mod asof;
