//! Keel's order gateway: the binary wire protocol, the TCP server that turns sessions into engine
//! commands and engine events into messages, market data rebuilt from those events, a client
//! library, and the `keel serve` / `keel load` programs built on them.
//!
//! The gateway knows nothing of matching or margin rules: it authenticates a session as one
//! account, stamps that account on everything the session asks, and reports what the engine did.

pub mod client;
pub mod codec;
pub mod config;
mod depth;
mod dispatcher;
mod inbound;
pub mod load;
mod outbound;
pub mod serve;
pub mod server;
pub mod signal;
mod sys;

pub use codec::{ClientMessage, DecodeError, ServerMessage};
pub use config::ServeConfig;
pub use server::{GatewayError, Server};
