//! Aya's cross-crate integration tests, one binary with a module per concern:
//!
//! - `layout`: the repository keeps the design card's layout and every
//!   message and field of the public API is documented.

mod layout;
