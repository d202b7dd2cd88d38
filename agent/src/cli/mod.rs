//! The command-line verbs, one module each.

pub mod check_config;
pub mod run;
pub mod schedule;
