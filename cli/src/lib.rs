//! The operator tool `consent-sync`: its commands as plain functions, so that
//! tests drive the same code as the binary.

pub mod local;
