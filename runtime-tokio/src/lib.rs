//! muster-runtime: runs a `muster_core::node::Node` on tokio with real sockets, timers and
//! processes.
//!
//! The host decides nothing: it decodes HTTP and DNS into typed requests, feeds the node,
//! and carries out the effects it returns, in order.

pub mod agent;
pub mod checks;
pub mod config;
pub mod disk;
pub mod dns;
pub mod gossip;
pub mod host;
pub mod http;
pub mod limits;
pub mod rpc;
