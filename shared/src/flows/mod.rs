//! The two directions of the sync, each the handler of one Lambda function.

pub mod didomi_to_dynamics;
pub mod dynamics_to_didomi;
mod outcome;

pub use outcome::Outcome;
