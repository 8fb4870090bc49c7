//! muster-core: every protocol decision of a muster agent, as pure state machines.
//!
//! A host (`muster-runtime` on tokio, or the `sim` crate under virtual time) feeds a `Node`
//! timestamped `Input`s through `Node::step` and carries out the `Effect`s it returns, in
//! order. Nothing in this crate reads a clock, touches a socket or file, spawns a thread or
//! draws OS randomness: time arrives as `now`, randomness from a seeded ChaCha.

pub mod agent;
pub mod api;
pub mod checks;
pub mod coordinate;
pub mod fsm;
/// Fuzz target bodies and the model checkers they use: built for tests and for the fuzz
/// crate (feature `fuzzing`), never into the agent.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod gossip;
pub mod ids;
pub mod io;
pub mod node;
pub mod raft;
pub mod rng;
pub mod rpc;
pub mod server;
pub mod time;
