//! Integrity of the store: damaged files are detected (never served
//! altered), never panic the opener, a zero-length or unexpectedly missing
//! store is an error unless `init`, and check / repair / backup work.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use aya_controller::store::{OpenMode, STORE_FILE, SegmentWrite, SeriesKey, Store, StoreError};

/// Panics raised inside redb on damaged files are expected (and caught by
/// the store); keep them out of the test output. Every other panic is
/// printed as usual.
fn quiet_redb_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_redb = info.location().is_some_and(|l| l.file().contains("redb"));
            if !in_redb {
                default(info);
            }
        }));
    });
}

/// Deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const SERIES: u32 = 8;
const SEGMENTS: u64 = 16;
const PER_SEGMENT: usize = 1000;

type Expected = BTreeMap<(u32, i64), u64>;

fn key(id: u32) -> SeriesKey {
    SeriesKey {
        cluster: "web".into(),
        backend: format!("b{id}"),
        metric: "request_rate".into(),
        kind: 1,
        labels: BTreeMap::from([("zone".to_string(), format!("z{}", id % 3))]),
    }
}

/// A store with `SEGMENTS` segments, clusters, a model and demand; returns
/// every stored sample as (id, ts) → value bits.
fn build(dir: &Path) -> Expected {
    build_sized(dir, SEGMENTS, PER_SEGMENT)
}

/// [`build`] with `segments` segments of `per_segment` samples.
fn build_sized(dir: &Path, segments: u64, per_segment: usize) -> Expected {
    let s = Store::open_with(dir, OpenMode::Init).unwrap();
    let mut expected = Expected::new();
    let mut ts = 1_000_000i64;
    for seg in 0..segments {
        let mut w = SegmentWrite::default();
        for i in 0..per_segment {
            let id = (i as u32) % SERIES;
            ts += 7;
            let v = (seg as f64) * 1e6 + (i as f64) + 0.125;
            w.push(id, ts, v);
            expected.insert((id, ts), v.to_bits());
            w.last.push((id, ts));
        }
        if seg == 0 {
            w.new_series = (0..SERIES).map(|id| (id, key(id))).collect();
        }
        s.write_segment(seg, &w).unwrap();
    }
    s.put_cluster("web", Some(r#"{"name":"web"}"#)).unwrap();
    s.put_snapshot("web", Some(r#"{"cluster":"web","version":3}"#))
        .unwrap();
    s.put_model("demand/web", &[7u8; 3000]).unwrap();
    let pts: Vec<(String, i64, f64)> = (0..50)
        .map(|k| ("web".to_string(), k * 60_000, k as f64))
        .collect();
    s.append_demand(&pts).unwrap();
    s.sync().unwrap();
    expected
}

/// What a store serves: every sample, plus the other tables.
#[derive(Debug, PartialEq)]
struct Served {
    samples: Expected,
    series: BTreeMap<u32, (SeriesKey, i64)>,
    clusters: Vec<String>,
    snapshots: Vec<String>,
    model: Option<Vec<u8>>,
    demand: Vec<(i64, f64)>,
    meta_samples: u64,
}

fn served(s: &Store) -> Result<Served, StoreError> {
    let r = s.restore()?;
    let mut samples = Expected::new();
    let mut dup = false;
    s.scan(i64::MIN, |id, ts, v| {
        dup |= samples.insert((id, ts), v.to_bits()).is_some();
    })?;
    assert!(!dup, "a sample served twice");
    Ok(Served {
        samples,
        series: r
            .series
            .into_iter()
            .map(|x| (x.id, (x.key, x.last_ms)))
            .collect(),
        clusters: r.clusters,
        snapshots: r.snapshots,
        model: s.get_model("demand/web")?,
        demand: s.demand("web", i64::MIN)?,
        meta_samples: r.samples,
    })
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(src.join(STORE_FILE), dst.join(STORE_FILE)).unwrap();
}

fn mutate(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

/// Outcome of opening a damaged copy.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Open or a later read refused the file.
    Detected,
    /// Opened and served exactly the original data.
    Harmless,
}

/// Open a damaged copy and read everything: an error anywhere is a
/// detection; otherwise everything served must equal the original. Panics
/// fail the test.
fn open_and_compare(dir: &Path, original: &Served) -> Outcome {
    let r = catch_unwind(AssertUnwindSafe(|| match Store::open(dir) {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(STORE_FILE), "error names the file: {msg}");
            Outcome::Detected
        }
        Ok(s) => match served(&s) {
            Err(_) => Outcome::Detected,
            Ok(got) => {
                assert_eq!(
                    &got, original,
                    "a damaged store opened and served different data (silent corruption)"
                );
                Outcome::Harmless
            }
        },
    }));
    r.unwrap_or_else(|_| panic!("opening a damaged store panicked"))
}

#[test]
fn random_byte_flips_are_detected_or_provably_harmless() {
    quiet_redb_panics();
    let base = tempfile::tempdir().unwrap();
    let orig = base.path().join("orig");
    // AYA_STORE_FLIP_SCALE=k multiplies the store's size by k (k = 55 gives
    // the issue's 40 MB store; the default keeps the test fast).
    let scale: u64 = std::env::var("AYA_STORE_FLIP_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let expected = build_sized(
        &orig,
        SEGMENTS * scale,
        PER_SEGMENT * 4usize.min(scale as usize),
    );
    let original = served(&Store::open(&orig).unwrap()).unwrap();
    assert_eq!(original.samples, expected);
    let len = std::fs::metadata(orig.join(STORE_FILE)).unwrap().len();

    // (flips per run, runs): the issue's 200 flips, and single flips, which
    // often land in free space and must then be harmless.
    let mut figures = Vec::new();
    for (flips, runs) in [(200usize, 12u64), (1, 40)] {
        let (mut detected, mut harmless) = (0, 0);
        for seed in 0..runs {
            let dir = base.path().join(format!("f{flips}-{seed}"));
            copy_dir(&orig, &dir);
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((seed + 1) * 7919) ^ flips as u64);
            mutate(&dir.join(STORE_FILE), |b| {
                for _ in 0..flips {
                    let i = rng.below(len) as usize;
                    b[i] ^= 1 + rng.below(255) as u8;
                }
            });
            match open_and_compare(&dir, &original) {
                Outcome::Detected => detected += 1,
                Outcome::Harmless => harmless += 1,
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
        figures.push((flips, runs, detected, harmless));
    }
    for (flips, runs, detected, harmless) in &figures {
        eprintln!(
            "{flips} byte flip(s) × {runs} runs in a {len}-byte store: {detected} detected, {harmless} harmless (served identical), 0 silently altered"
        );
    }
    // 200 flips across the file always hit live pages.
    assert_eq!(
        figures[0].2, figures[0].1 as i32,
        "200 flips detected every time"
    );
}

/// Flip every copy of one sample's value bytes: that segment is damaged.
fn damage_one_value(file: &Path, value: f64) -> usize {
    let needle = value.to_le_bytes();
    let mut hits = 0;
    mutate(file, |b| {
        let mut i = 0;
        while i + 8 <= b.len() {
            if b[i..i + 8] == needle {
                b[i + 3] ^= 0x40;
                hits += 1;
                i += 8;
            } else {
                i += 1;
            }
        }
    });
    hits
}

#[test]
fn a_damaged_segment_is_refused_at_start_and_repair_salvages_the_rest() {
    quiet_redb_panics();
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("d");
    let expected = build(&dir);
    // Segment 5, sample 10: a value no other sample has.
    let victim = 5.0 * 1e6 + 10.0 + 0.125;
    let file = dir.join(STORE_FILE);
    assert!(damage_one_value(&file, victim) >= 1);

    let err = Store::open(&dir).unwrap_err().to_string();
    assert!(err.contains(STORE_FILE), "{err}");
    assert!(
        err.contains("segments") || err.contains("redb"),
        "names what is damaged: {err}"
    );

    let report = Store::check(&file).unwrap();
    assert!(!report.is_ok(), "{report}");
    let text = report.to_string();
    assert!(text.contains("DAMAGED"), "{text}");

    let fixed = base.path().join("fixed");
    std::fs::create_dir_all(&fixed).unwrap();
    let rep = Store::repair(&file, &fixed.join(STORE_FILE)).unwrap();
    eprintln!("{rep}");
    // Exactly the damaged segment is lost, attributed to its series.
    assert_eq!(rep.samples_lost, PER_SEGMENT as u64, "{rep}");
    assert_eq!(rep.samples_kept, expected.len() as u64 - PER_SEGMENT as u64);
    assert_eq!(rep.series_lost.len(), SERIES as usize, "{rep}");
    assert!(rep.series_lost.iter().all(|s| s.key.is_some()));
    let seg = rep.tables.iter().find(|t| t.table == "segments").unwrap();
    assert_eq!((seg.ok, seg.bad), (SEGMENTS - 1, 1), "{rep}");

    // The repaired store opens, verifies, and serves a subset of the original, unaltered.
    assert!(Store::check(&fixed.join(STORE_FILE)).unwrap().is_ok());
    let s = Store::open(&fixed).unwrap();
    let got = served(&s).unwrap();
    assert_eq!(got.samples.len(), expected.len() - PER_SEGMENT);
    for (k, v) in &got.samples {
        assert_eq!(expected.get(k), Some(v), "repaired store altered {k:?}");
    }
    assert_eq!(got.meta_samples, got.samples.len() as u64);
    assert_eq!(got.model.as_deref(), Some(&[7u8; 3000][..]));
    // Repair never overwrites.
    assert!(Store::repair(&file, &fixed.join(STORE_FILE)).is_err());
}

#[test]
fn zero_length_missing_truncated_and_garbage_stores_are_errors_not_panics() {
    quiet_redb_panics();
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("d");
    let expected = build(&dir);
    let file = dir.join(STORE_FILE);
    let bytes = std::fs::read(&file).unwrap();

    // Zero length: an error unless init, which starts an empty store.
    std::fs::write(&file, b"").unwrap();
    let err = Store::open(&dir).unwrap_err().to_string();
    assert!(
        err.contains(STORE_FILE) && err.contains("0 bytes") && err.contains("--init"),
        "{err}"
    );
    assert!(!Store::check(&file).unwrap().is_ok());
    {
        let s = Store::open_with(&dir, OpenMode::Init).unwrap();
        assert_eq!(s.restore().unwrap().samples, 0);
    }

    // Missing where the directory exists: an error unless init.
    std::fs::remove_file(&file).unwrap();
    let err = Store::open(&dir).unwrap_err().to_string();
    assert!(
        err.contains("does not exist") && err.contains("--init"),
        "{err}"
    );
    assert!(Store::check(&file).is_err());
    // A directory that does not exist yet is a first start.
    let fresh = base.path().join("new/data");
    assert!(Store::open(&fresh).is_ok());

    // Truncated at several points, and garbage: errors naming the file.
    for cut in [1usize, 100, 4096, bytes.len() / 3, bytes.len() - 1] {
        std::fs::write(&file, &bytes[..cut]).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| Store::open(&dir).map(|_| ())));
        let r = r.unwrap_or_else(|_| panic!("open panicked on a file cut at {cut}"));
        match r {
            Err(e) => assert!(e.to_string().contains(STORE_FILE), "{e}"),
            Ok(()) => {
                let s = Store::open(&dir).unwrap();
                let got = served(&s).map(|g| g.samples);
                if let Ok(g) = &got {
                    assert_eq!(g, &expected, "cut at {cut}: served altered data");
                }
            }
        }
        let c = catch_unwind(AssertUnwindSafe(|| Store::check(&file)));
        assert!(c.is_ok(), "check panicked at cut {cut}");
    }
    let mut rng = Rng(42);
    let garbage: Vec<u8> = (0..200_000).map(|_| rng.next() as u8).collect();
    std::fs::write(&file, &garbage).unwrap();
    let err = Store::open(&dir).unwrap_err().to_string();
    assert!(err.contains(STORE_FILE), "{err}");
    std::fs::write(&file, b"not a database at all").unwrap();
    assert!(Store::open(&dir).is_err());
    assert!(!Store::check(&file).unwrap().is_ok());
}

#[test]
fn mutated_store_files_never_panic_open_check_or_repair() {
    quiet_redb_panics();
    let base = tempfile::tempdir().unwrap();
    let orig = base.path().join("orig");
    build(&orig);
    let original = served(&Store::open(&orig).unwrap()).unwrap();
    let bytes = std::fs::read(orig.join(STORE_FILE)).unwrap();
    let len = bytes.len() as u64;
    let mut outcomes = [0u32; 2];
    let runs = 60u64;
    for seed in 0..runs {
        let mut rng = Rng(seed * 0x1000_0001 + 17);
        let mut b = bytes.clone();
        match seed % 6 {
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(len) as usize;
                    b[i] ^= 1 << rng.below(8);
                }
            }
            1 => b.truncate(rng.below(len) as usize),
            2 => {
                // Overwrite a 4 KiB page with random bytes.
                let p = rng.below(len / 4096) as usize * 4096;
                for x in &mut b[p..(p + 4096).min(bytes.len())] {
                    *x = rng.next() as u8;
                }
            }
            3 => {
                // Zero a page.
                let p = rng.below(len / 4096) as usize * 4096;
                b[p..(p + 4096).min(bytes.len())].fill(0);
            }
            4 => {
                // Copy one page over another (a misdirected write).
                let a = rng.below(len / 4096) as usize * 4096;
                let c = rng.below(len / 4096) as usize * 4096;
                let page = b[a..a + 4096].to_vec();
                b[c..c + 4096].copy_from_slice(&page);
            }
            _ => {
                // Damage the header region.
                for _ in 0..4 {
                    let i = rng.below(4096.min(len)) as usize;
                    b[i] = rng.next() as u8;
                }
            }
        }
        let dir = base.path().join(format!("m{seed}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(STORE_FILE);
        std::fs::write(&file, &b).unwrap();
        let o = open_and_compare(&dir, &original);
        outcomes[usize::from(o == Outcome::Harmless)] += 1;
        let checked = catch_unwind(AssertUnwindSafe(|| Store::check(&file)));
        assert!(checked.is_ok(), "check panicked (seed {seed})");
        let dst = base.path().join(format!("r{seed}.redb"));
        let repaired = catch_unwind(AssertUnwindSafe(|| Store::repair(&file, &dst)));
        assert!(repaired.is_ok(), "repair panicked (seed {seed})");
        if let Ok(Ok(_)) = repaired {
            // Whatever a repair writes opens and verifies.
            let rdir = base.path().join(format!("rd{seed}"));
            std::fs::create_dir_all(&rdir).unwrap();
            std::fs::rename(&dst, rdir.join(STORE_FILE)).unwrap();
            let s = Store::open(&rdir).expect("a repaired store opens");
            let got = served(&s).unwrap();
            for (k, v) in &got.samples {
                assert_eq!(original.samples.get(k), Some(v), "repair altered {k:?}");
            }
            std::fs::remove_dir_all(&rdir).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    eprintln!(
        "{runs} mutated store files: {} refused, {} harmless, 0 panics, 0 silently altered",
        outcomes[0], outcomes[1]
    );
}

#[test]
fn backup_while_writing_is_a_consistent_verified_snapshot() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("d");
    build(&dir);
    let s = Store::open(&dir).unwrap();
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for seg in SEGMENTS..SEGMENTS + 40 {
                let mut w = SegmentWrite::default();
                for i in 0..200 {
                    w.push(
                        (i % SERIES as usize) as u32,
                        10_000_000 + (seg as i64) * 1000 + i as i64,
                        1.0,
                    );
                }
                s.write_segment(seg, &w).unwrap();
            }
        })
    };
    let mut backups: Vec<PathBuf> = Vec::new();
    for k in 0..3 {
        let dst = base.path().join(format!("b{k}"));
        std::fs::create_dir_all(&dst).unwrap();
        let rep = s.backup(&dst.join(STORE_FILE)).unwrap();
        assert!(rep.records > 0 && rep.bytes > 0);
        backups.push(dst);
    }
    writer.join().unwrap();
    for b in &backups {
        let file = b.join(STORE_FILE);
        let check = Store::check(&file).unwrap();
        assert!(check.is_ok(), "{check}");
        let copy = Store::open(b).unwrap();
        let got = served(&copy).unwrap();
        // Consistent: the copy's meta agrees with its segments (check passed),
        // and the copy holds whole segments only.
        assert_eq!(got.meta_samples, got.samples.len() as u64);
        assert_eq!(got.model.as_deref(), Some(&[7u8; 3000][..]));
    }
    let again = s.backup(&backups[0].join(STORE_FILE));
    assert!(again.is_err(), "a backup never overwrites");
}

#[test]
fn a_format_1_store_is_refused_with_a_clear_error_and_repair_migrates_it() {
    use redb::{Database, TableDefinition};
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("old");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(STORE_FILE);
    {
        // The layout before checksums.
        const SEG: TableDefinition<'_, (i64, u64), &[u8]> = TableDefinition::new("segments");
        const SER: TableDefinition<'_, u32, &str> = TableDefinition::new("series");
        const LAST: TableDefinition<'_, u32, i64> = TableDefinition::new("series_last");
        const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
        const CL: TableDefinition<'_, &str, &str> = TableDefinition::new("clusters");
        const DEM: TableDefinition<'_, (&str, i64), f64> = TableDefinition::new("demand");
        let db = Database::create(&file).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut w = SegmentWrite::default();
            w.push(0, 5_000, 1.25);
            w.push(0, 6_000, 2.5);
            tx.open_table(SEG)
                .unwrap()
                .insert((6_000, 0), w.packed.as_slice())
                .unwrap();
            let json = serde_json::to_string(&key(0)).unwrap();
            tx.open_table(SER)
                .unwrap()
                .insert(0, json.as_str())
                .unwrap();
            tx.open_table(LAST).unwrap().insert(0, 6_000).unwrap();
            let mut m = tx.open_table(META).unwrap();
            m.insert("samples", 2).unwrap();
            m.insert("next_segment", 1).unwrap();
            tx.open_table(CL)
                .unwrap()
                .insert("web", r#"{"name":"web"}"#)
                .unwrap();
            tx.open_table(DEM)
                .unwrap()
                .insert(("web", 60_000), 9.0)
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let err = Store::open(&dir).unwrap_err().to_string();
    assert!(err.contains("format 1") && err.contains("repair"), "{err}");
    let new = base.path().join("new");
    std::fs::create_dir_all(&new).unwrap();
    let rep = Store::repair(&file, &new.join(STORE_FILE)).unwrap();
    assert_eq!(rep.source_format, Some(1));
    assert_eq!(rep.samples_kept, 2, "{rep}");
    let s = Store::open(&new).unwrap();
    let got = served(&s).unwrap();
    assert_eq!(got.samples.len(), 2);
    assert_eq!(got.series[&0], (key(0), 6_000));
    assert_eq!(got.clusters, vec![r#"{"name":"web"}"#.to_string()]);
    assert_eq!(s.demand("web", 0).unwrap(), vec![(60_000, 9.0)]);
}
