//! Writing series back to CSV in the canonical `timestamp,value` form (RFC 3339 UTC
//! timestamps), which every Aya command reads back without options. Output is
//! deterministic: values use Rust's shortest round-trip float formatting.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::error::DataError;
use super::timestamp::push_rfc3339;

/// Write `timestamp,value` rows to `w`. Lengths must match (extra items of the longer
/// slice are ignored).
pub fn write_series<W: Write>(
    w: &mut W,
    timestamps: &[i64],
    values: &[f64],
) -> std::io::Result<()> {
    writeln!(w, "timestamp,value")?;
    let mut line = String::with_capacity(48);
    for (t, v) in timestamps.iter().zip(values) {
        line.clear();
        push_rfc3339(&mut line, *t);
        line.push(',');
        push_value(&mut line, *v);
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// Write a `timestamp,value` CSV file, creating parent directories.
pub fn write_series_csv(path: &Path, timestamps: &[i64], values: &[f64]) -> Result<(), DataError> {
    let err = |source| DataError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut w = BufWriter::new(File::create(path).map_err(err)?);
    write_series(&mut w, timestamps, values).map_err(err)?;
    w.flush().map_err(err)
}

/// Append a value: integers without a fraction, others in shortest round-trip form.
pub(crate) fn push_value(out: &mut String, v: f64) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    if v == v.trunc() && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_rfc3339_and_round_trip_values() {
        let mut buf = Vec::new();
        write_series(&mut buf, &[0, 60_500], &[3.0, 0.1]).expect("in-memory write");
        assert_eq!(
            String::from_utf8(buf).expect("utf8"),
            "timestamp,value\n1970-01-01T00:00:00Z,3\n1970-01-01T00:01:00.500Z,0.1\n"
        );
    }
}
