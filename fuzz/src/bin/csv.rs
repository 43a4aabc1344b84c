//! Fuzz target: the forecaster's CSV loader (`aya_forecaster::data`), from bytes.
//!
//! The first byte picks the load options (one series or all of a long-form
//! file, negatives, duplicates, ordering, resampling); the rest is the file.
//! Any input must give a series or a `DataError`, never a panic.

use std::path::Path;

use aya_forecaster::data::{
    Aggregate, Duplicates, LoadOptions, load_csv_all_bytes, load_csv_bytes,
};

fn options(flags: u8) -> LoadOptions {
    LoadOptions {
        allow_negative: flags & 0x02 != 0,
        duplicates: match (flags >> 2) & 0x03 {
            0 => Duplicates::KeepLast,
            1 => Duplicates::KeepAll,
            _ => Duplicates::Reject,
        },
        reject_out_of_order: flags & 0x10 != 0,
        resample_ms: (flags & 0x20 != 0).then_some(1000),
        aggregate: match flags >> 6 {
            0 => Aggregate::Mean,
            1 => Aggregate::Sum,
            _ => Aggregate::Count,
        },
        ..LoadOptions::default()
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&flags, csv)) = data.split_first() else {
            return;
        };
        let opts = options(flags);
        let path = Path::new("fuzz.csv");
        if flags & 0x01 == 0 {
            let _ = load_csv_bytes(path, csv, &opts);
        } else {
            let _ = load_csv_all_bytes(path, csv, &opts);
        }
    });
}
