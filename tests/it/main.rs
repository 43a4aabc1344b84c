//! Aya's cross-crate integration tests, one binary with a module per concern:
//!
//! - `layout`: the repository keeps the design card's layout and every
//!   message and field of the public API is documented.
//! - `parity`: one observation trace through the simulator's control path and
//!   through the running service (gRPC ingest, Watch) gives identical decisions.

//! - `parity_sim`: the simulator's own telemetry and control ticks, replayed
//!   into the service on a manual clock, give identical publications.

mod layout;
mod parity;
mod parity_sim;
