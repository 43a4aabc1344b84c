//! `aya store check | repair | backup`: verify, salvage and copy the
//! controller's store (`aya.redb`) offline, with the checks `aya serve` runs
//! at start (redb's page checksums, the CRC-32 seal on every record, the
//! `meta` counts; see `docs/security.md`).

use std::path::PathBuf;

use aya_controller::store::{OpenMode, Store};
use clap::{Args, Subcommand};

use crate::failure::{CliResult, Failure};

/// `aya store`.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// What to do with the store.
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// The `aya store` subcommands.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Verify every page and record of a store file without changing it; exit 1 if
    /// anything is damaged (the report says what, per table).
    Check {
        /// The store file (`DATA_DIR/aya.redb`).
        file: PathBuf,
    },
    /// Copy every record that verifies from a damaged store into a new one and report
    /// what was lost (per table, and samples per series). DST must not exist.
    Repair {
        /// The damaged store file.
        src: PathBuf,
        /// Where to write the repaired store (a new file).
        dst: PathBuf,
    },
    /// Write a consistent, verified copy of a data directory's store (the service must
    /// not be running on it: redb locks the file to one process).
    Backup {
        /// The data directory (`data_dir` in aya.toml).
        data_dir: PathBuf,
        /// Where to write the copy (a new file).
        dst: PathBuf,
    },
}

/// Run `aya store ...`.
pub fn run_store(args: &StoreArgs) -> CliResult {
    match &args.command {
        StoreCommand::Check { file } => {
            let report = Store::check(file).map_err(Failure::input)?;
            print!("{report}");
            if report.is_ok() {
                Ok(())
            } else {
                Err(Failure::runtime(anyhow::anyhow!(
                    "{}: the store is damaged (see the report above; `aya store repair` salvages what verifies)",
                    file.display()
                )))
            }
        }
        StoreCommand::Repair { src, dst } => {
            let report = Store::repair(src, dst).map_err(Failure::input)?;
            print!("{report}");
            Ok(())
        }
        StoreCommand::Backup { data_dir, dst } => {
            let store = Store::open_with(data_dir, OpenMode::Existing).map_err(Failure::input)?;
            let r = store.backup(dst).map_err(Failure::runtime)?;
            println!(
                "backup {}: {} records, {} samples, {} bytes, every record verified",
                r.dst.display(),
                r.records,
                r.samples,
                r.bytes
            );
            Ok(())
        }
    }
}
