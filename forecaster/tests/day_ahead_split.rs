//! The day-ahead benchmark's tune/test split (`forecaster/bench/day_ahead`,
//! issue #15 part 4) stays a split: the manifests parse, name every series
//! once, never put a series (or an overlapping window of one file) on both
//! sides, and point at files of the shared corpus that load. Without the
//! shared folder, the file checks print a note and are skipped.

use std::collections::BTreeMap;
use std::path::Path;

use aya_forecaster::data::{LoadOptions, datasets_dir, load_csv};

struct Row {
    name: String,
    file: String,
    start: String,
    end: String,
}

fn manifest(split: &str) -> Vec<Row> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("bench/day_ahead/{split}.csv"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("name,file,freq,start,end"),
        "{split}.csv header"
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 5, "{split}.csv: {l}");
            assert!(
                ["5min", "15min", "30min"].contains(&f[2]),
                "{split}.csv: frequency {} of {}",
                f[2],
                f[0]
            );
            Row {
                name: f[0].into(),
                file: f[1].into(),
                start: f[3].into(),
                end: f[4].into(),
            }
        })
        .collect()
}

/// Whether two `[start, end]` windows of one file share more than a boundary
/// point (empty = open end; ISO timestamps of one file compare as strings).
fn overlap(a: &Row, b: &Row) -> bool {
    let after = |x: &str, y: &str| !x.is_empty() && !y.is_empty() && x >= y;
    !(after(&b.start, &a.end) || after(&a.start, &b.end))
}

#[test]
fn the_day_ahead_split_is_a_split() {
    let tune = manifest("tune");
    let test = manifest("test");
    assert!(
        tune.len() >= 20 && test.len() >= 12,
        "{} / {}",
        tune.len(),
        test.len()
    );
    let mut names = BTreeMap::new();
    for r in tune.iter().chain(&test) {
        assert!(
            names.insert(r.name.clone(), ()).is_none(),
            "{} twice",
            r.name
        );
    }
    for a in &tune {
        for b in test.iter().filter(|b| b.file == a.file) {
            assert!(
                !overlap(a, b),
                "{} (tune) and {} (test) overlap in {}",
                a.name,
                b.name,
                a.file
            );
        }
    }
    let dir = datasets_dir();
    if !dir.join("nab").is_dir() {
        eprintln!(
            "note: {} not found; manifest files not checked",
            dir.display()
        );
        return;
    }
    for r in tune.iter().chain(&test) {
        let s = load_csv(&dir.join(&r.file), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", r.file));
        assert!(s.values.len() > 1000, "{}: {} rows", r.file, s.values.len());
    }
}

#[test]
fn window_overlap_is_what_it_says() {
    let w = |s: &str, e: &str| Row {
        name: String::new(),
        file: String::new(),
        start: s.into(),
        end: e.into(),
    };
    let a = w("1998-05-21T00:00:00Z", "1998-06-11T00:00:00Z");
    assert!(!overlap(
        &a,
        &w("1998-06-11T00:00:00Z", "1998-07-02T00:00:00Z")
    ));
    assert!(!overlap(
        &w("1998-04-30T00:00:00Z", "1998-05-21T00:00:00Z"),
        &a
    ));
    assert!(overlap(
        &a,
        &w("1998-06-01T00:00:00Z", "1998-06-20T00:00:00Z")
    ));
    assert!(overlap(&a, &w("", "")));
    assert!(overlap(&w("2015-03-26", ""), &w("", "")));
}
