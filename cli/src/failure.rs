//! How every `aya` subcommand reports failure, so `main` can map it to an exit
//! code. Only the binary crate has a command line: the libraries return typed
//! errors and the subcommands map them to a [`Failure`] of the right kind.

use std::fmt;

/// Exit codes of the `aya` binary. Scripts and tests rely on them.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Runtime failure (I/O error, server error, internal error).
    pub const RUNTIME: u8 = 1;
    /// Usage error: bad flags (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// Bad input data: a CSV, scenario, config or model file that cannot be used.
    pub const INPUT: u8 = 3;
    /// The subcommand exists but its feature has not landed yet.
    pub const NOT_AVAILABLE: u8 = 4;
}

/// What kind of failure ended a subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// I/O, server or internal error.
    Runtime,
    /// Flags that do not make sense together.
    Usage,
    /// Input data that cannot be used (names the file, line and field).
    Input,
    /// Not built yet.
    NotAvailable,
}

/// A subcommand's failure: a kind (for the exit code) and the error chain (for the message).
pub struct Failure {
    /// Kind, mapped to the exit code.
    pub kind: FailureKind,
    /// The error with its context chain.
    pub error: anyhow::Error,
}

impl Failure {
    /// A runtime failure.
    pub fn runtime(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            kind: FailureKind::Runtime,
            error: error.into(),
        }
    }
    /// A usage failure.
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            kind: FailureKind::Usage,
            error: error.into(),
        }
    }
    /// An input-data failure.
    pub fn input(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            kind: FailureKind::Input,
            error: error.into(),
        }
    }
    /// A feature that has not landed yet; `issue` is the tracking issue number.
    pub fn not_available(what: &str, issue: u32) -> Self {
        Failure {
            kind: FailureKind::NotAvailable,
            error: anyhow::anyhow!("`{what}` is not available yet: issue #{issue} has not landed"),
        }
    }
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            FailureKind::Runtime => exit::RUNTIME,
            FailureKind::Usage => exit::USAGE,
            FailureKind::Input => exit::INPUT,
            FailureKind::NotAvailable => exit::NOT_AVAILABLE,
        }
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:?}", self.kind, self.error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::runtime(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::runtime(e)
    }
}

/// Result of a subcommand.
pub type CliResult = Result<(), Failure>;
