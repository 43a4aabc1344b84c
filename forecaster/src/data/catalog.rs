//! Helpers for directories of traces: finding the CSVs, loading every series of a file
//! whatever its form (used by `aya datasets check`), and converting the WorldCup98
//! source file fetched from GitHub into the form of the shared copy.

use std::path::{Path, PathBuf};

use super::{DataError, LoadOptions, Series, fill_gaps, load_csv, load_csv_all};

/// All `*.csv` files under `dir`, sorted.
pub fn csv_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            csv_files(&p, out)?;
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            out.push(p);
        }
    }
    Ok(())
}

/// Load every series of a file the way `check` does: the default options, the first
/// numeric column when the value column is ambiguous (e.g. the Azure trace), and every
/// series of a long-form file.
pub fn check_file(path: &Path) -> Result<Vec<Series>, DataError> {
    let opts = LoadOptions::default();
    match load_csv(path, &opts) {
        Ok(s) => Ok(vec![s]),
        Err(DataError::AmbiguousValueColumn { candidates, .. }) if !candidates.is_empty() => {
            let opts = LoadOptions {
                value_column: candidates.first().cloned(),
                ..opts
            };
            load_csv(path, &opts).map(|s| vec![s])
        }
        Err(DataError::AmbiguousSeries { .. }) => load_csv_all(path, &opts),
        Err(e) => Err(e),
    }
}

/// Turn the WorldCup98 source (`period,count`, naive GMT minutes, minutes without
/// requests absent) into the shared form: `timestamp,value`, RFC 3339, one row per
/// minute with 0 for the missing minutes. Returns the written series.
pub fn convert_worldcup98(src: &Path, dst: &Path) -> Result<Series, DataError> {
    let s = fill_gaps(load_csv(src, &LoadOptions::default())?, 0.0);
    s.write_csv(dst)?;
    Ok(s)
}
