//! End-to-end tests of the real `kairos` binary: the REST walkthrough, bad input, and crashes.

mod auth;
mod broker;
mod cluster;
mod crash;
mod deployments;
mod e2e;
mod faults;
mod fraud;
mod fuzz_rest;
mod models;
mod pipelines;
mod replicas;
mod server;
mod tls;
mod views;
