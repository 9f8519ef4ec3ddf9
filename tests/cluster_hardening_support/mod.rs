//! A watchdog for the cluster hardening tests: a regression must fail, not
//! hang. Even a wait the test does not control (a `Drop` that shuts a
//! cluster down) is bounded: past the limit the process reports which test
//! was stuck and aborts.
#![allow(dead_code)]

#[path = "../watchdog/mod.rs"]
mod watchdog;
#[allow(unused_imports)]
pub use watchdog::{watchdog, Watchdog};
