//! Aya's cross-crate integration tests, one binary with a module per concern:
//!
//! - `layout`: the repository keeps the design card's layout and every
//!   message and field of the public API is documented.
//! - `parity`: one observation trace through the simulator's control path and
//!   through the running service (gRPC ingest, Watch) gives identical decisions.

mod layout;
mod parity;
