//! Didomi: the webhook deliveries it sends (`deliveries`) and its API
//! (`client`: sessions, consent events, users).

pub mod client;
pub mod deliveries;
#[cfg(feature = "jobs")]
pub mod export;

pub use client::{DidomiClient, DidomiError, DidomiUser, Purpose};
