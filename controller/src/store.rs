//! The embedded store (redb): metric history, model artifacts, cluster
//! configuration changed through the admin API, overrides and the last
//! published snapshots.
//!
//! Metric history is stored as *segments*: one row per committed group of
//! batches, keyed by `(max timestamp in ms, segment number)`, whose value is a
//! packed array of `(series id u32, timestamp ms i64, value f64)`. Writing a
//! segment is one B-tree insert however many samples it holds, which is what
//! makes ingest of a million samples per second possible with an fsync per
//! commit. Series identities live in their own table. Retention deletes whole
//! segments whose newest sample is older than the cutoff (a range delete on the
//! key prefix). Every write transaction commits with `Durability::Immediate`:
//! when `commit` returns, the data is on disk.
//!
//! One exception: the per-cluster demand the control loop observed at each
//! tick (the history the background retrain learns from) is derived data and
//! is appended with `Durability::None`; it becomes durable with the next
//! immediate commit (every ingest commit, published snapshot, model), so a
//! crash loses at most the demand of the last few ticks, never a sample.
//!
//! ## Integrity (store format 2)
//!
//! Every value in every table is *sealed*: the payload followed by a CRC-32
//! (IEEE, little endian) of the table name, the key's stored bytes and the
//! payload, so a flipped bit in a value, in a key or a record moved to another
//! key or table is detected. Every read verifies the seal ([`Store::scan`],
//! [`Store::restore`], [`Store::get_model`], [`Store::demand`]); a record that
//! does not verify is an error naming the file, the table and the key, never a
//! silently altered value. At start [`Store::open_with`] also has redb verify
//! the checksum of every page of the committed trees
//! (`set_check_integrity_on_open`), then verifies every record of every table
//! and that the sample count and next segment number recorded in `meta` agree
//! with the segments. Anything redb panics on while opening or reading a
//! damaged file is caught at this boundary and reported as an error naming the
//! file. [`Store::check`], [`Store::repair`] and [`Store::backup`] are the
//! offline check, the salvage into a new file and the consistent snapshot of a
//! serving store. Keys are bytes (never `&str`), so a damaged key cannot make
//! redb panic on invalid UTF-8.
//!
//! Stores written before checksums (format 1: no `aya_format` table) are
//! refused with an error that says how to migrate: [`Store::repair`] reads a
//! format-1 file (its records cannot be verified; those that decode are kept)
//! and writes a format-2 store.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize};

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    /// A stored record could not be decoded (the file is corrupt or from an incompatible version).
    #[error("store: corrupt record in table {table}: {message}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// Detail.
        message: String,
    },
    /// A record failed its checksum or its layout check.
    #[error("store {}: table {table}, key {key}: {message}", file.display())]
    Integrity {
        /// The store file.
        file: PathBuf,
        /// Table name.
        table: String,
        /// The record's key, as text.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The file is not a usable store (redb refused it, panicked on it, or
    /// the checks at start found damaged records).
    #[error("store {}: {message}", file.display())]
    Unusable {
        /// The store file.
        file: PathBuf,
        /// What is wrong (and what to do).
        message: String,
    },
    /// The data directory could not be created.
    #[error("store: cannot create data directory {path}")]
    Dir {
        /// Directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be read, written or copied.
    #[error("store {}: {what}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

macro_rules! db_err {
    ($e:expr) => {
        $e.map_err(|e| StoreError::Db(e.into()))
    };
}

/// Layout version of the records (see the module docs). Bumped when the
/// layout of any table changes.
pub const FORMAT_VERSION: u64 = 2;

/// File name of the store inside the data directory.
pub const STORE_FILE: &str = "aya.redb";

type Bytes = &'static [u8];
const SEGMENTS: TableDefinition<'_, (i64, u64), Bytes> = TableDefinition::new("segments");
const SERIES: TableDefinition<'_, u32, Bytes> = TableDefinition::new("series");
const SERIES_LAST: TableDefinition<'_, u32, Bytes> = TableDefinition::new("series_last");
const CLUSTERS: TableDefinition<'_, Bytes, Bytes> = TableDefinition::new("clusters");
const SNAPSHOTS: TableDefinition<'_, Bytes, Bytes> = TableDefinition::new("snapshots");
const OVERRIDES: TableDefinition<'_, Bytes, Bytes> = TableDefinition::new("overrides");
const MODELS: TableDefinition<'_, Bytes, Bytes> = TableDefinition::new("models");
const META: TableDefinition<'_, Bytes, Bytes> = TableDefinition::new("meta");
const DEMAND: TableDefinition<'_, (Bytes, i64), Bytes> = TableDefinition::new("demand");
const FORMAT: TableDefinition<'_, Bytes, Bytes> = TableDefinition::new("aya_format");

/// Every table of format 2, in the order they are checked and copied.
pub const TABLES: [&str; 10] = [
    "aya_format",
    "meta",
    "series",
    "series_last",
    "segments",
    "clusters",
    "snapshots",
    "overrides",
    "models",
    "demand",
];

/// Bytes per packed sample in a segment.
pub const SAMPLE_BYTES: usize = 20;
/// Bytes of the checksum that ends every stored value.
pub const SEAL_BYTES: usize = 4;

/// CRC-32 of `table`, `key` (redb's stored bytes of the key) and `payload`.
fn checksum(table: &str, key: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(table.as_bytes());
    h.update(&[0]);
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(payload);
    h.finalize()
}

/// `payload` followed by its checksum.
fn seal(table: &str, key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + SEAL_BYTES);
    out.extend_from_slice(payload);
    out.extend_from_slice(&checksum(table, key, payload).to_le_bytes());
    out
}

/// The payload of a sealed value, or what is wrong with it.
fn unseal<'a>(table: &str, key: &[u8], stored: &'a [u8]) -> Result<&'a [u8], String> {
    if stored.len() < SEAL_BYTES {
        return Err(format!(
            "value of {} bytes is shorter than its checksum",
            stored.len()
        ));
    }
    let (payload, sum) = stored.split_at(stored.len() - SEAL_BYTES);
    let mut want = [0u8; 4];
    want.copy_from_slice(sum);
    let want = u32::from_le_bytes(want);
    let got = checksum(table, key, payload);
    if got != want {
        return Err(format!(
            "checksum mismatch (stored {want:08x}, computed {got:08x}): the record is damaged"
        ));
    }
    Ok(payload)
}

fn key_bytes<K: redb::Key>(k: &K::SelfType<'_>) -> Vec<u8> {
    K::as_bytes(k).as_ref().to_vec()
}

fn u64_payload(p: &[u8]) -> Result<u64, String> {
    <[u8; 8]>::try_from(p)
        .map(u64::from_le_bytes)
        .map_err(|_| format!("expected 8 bytes, found {}", p.len()))
}

fn i64_payload(p: &[u8]) -> Result<i64, String> {
    <[u8; 8]>::try_from(p)
        .map(i64::from_le_bytes)
        .map_err(|_| format!("expected 8 bytes, found {}", p.len()))
}

fn f64_payload(p: &[u8]) -> Result<f64, String> {
    <[u8; 8]>::try_from(p)
        .map(f64::from_le_bytes)
        .map_err(|_| format!("expected 8 bytes, found {}", p.len()))
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Key of a record as text for messages: the table's key decoded when the
/// layout is known, hex otherwise.
fn key_text(table: &str, key: &[u8]) -> String {
    let le64 = |b: &[u8]| <[u8; 8]>::try_from(b).ok().map(i64::from_le_bytes);
    match table {
        "segments" if key.len() == 16 => match (le64(&key[..8]), le64(&key[8..])) {
            (Some(ms), Some(n)) => format!("(max_ms {ms}, segment {})", n as u64),
            _ => hex(key),
        },
        "series" | "series_last" if key.len() == 4 => {
            let mut b = [0u8; 4];
            b.copy_from_slice(key);
            format!("series id {}", u32::from_le_bytes(b))
        }
        "demand" => hex(key),
        _ => match std::str::from_utf8(key) {
            Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}"),
            _ => hex(key),
        },
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::from("0x");
    for x in b.iter().take(64) {
        s.push_str(&format!("{x:02x}"));
    }
    if b.len() > 64 {
        s.push('…');
    }
    s
}

/// Identity of a series: what a sample is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Cluster.
    pub cluster: String,
    /// Backend.
    pub backend: String,
    /// Metric name.
    pub metric: String,
    /// Metric kind as the wire enum number (0 gauge, 2 counter, 3 delta).
    pub kind: i32,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// One series as stored: id, identity, last accepted timestamp.
#[derive(Debug, Clone)]
pub struct StoredSeries {
    /// Id used in segments.
    pub id: u32,
    /// Identity.
    pub key: SeriesKey,
    /// Last accepted timestamp (ms).
    pub last_ms: i64,
}

/// A group of accepted samples to commit in one transaction.
#[derive(Debug, Default)]
pub struct SegmentWrite {
    /// Packed samples (`SAMPLE_BYTES` each).
    pub packed: Vec<u8>,
    /// Largest timestamp among them.
    pub max_ms: i64,
    /// Series first seen in this group.
    pub new_series: Vec<(u32, SeriesKey)>,
    /// New last timestamps of the series touched.
    pub last: Vec<(u32, i64)>,
}

impl SegmentWrite {
    /// Append one sample.
    pub fn push(&mut self, id: u32, ts_ms: i64, value: f64) {
        if self.packed.is_empty() || ts_ms > self.max_ms {
            self.max_ms = ts_ms;
        }
        self.packed.extend_from_slice(&id.to_le_bytes());
        self.packed.extend_from_slice(&ts_ms.to_le_bytes());
        self.packed.extend_from_slice(&value.to_le_bytes());
    }
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.packed.len() / SAMPLE_BYTES
    }
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }
}

/// Decode a packed segment into `(series id, timestamp ms, value)`.
pub fn unpack(packed: &[u8]) -> impl Iterator<Item = (u32, i64, f64)> + '_ {
    packed.chunks_exact(SAMPLE_BYTES).map(|c| {
        let mut id = [0u8; 4];
        let mut ts = [0u8; 8];
        let mut v = [0u8; 8];
        id.copy_from_slice(&c[0..4]);
        ts.copy_from_slice(&c[4..12]);
        v.copy_from_slice(&c[12..20]);
        (
            u32::from_le_bytes(id),
            i64::from_le_bytes(ts),
            f64::from_le_bytes(v),
        )
    })
}

/// Everything restored at start.
#[derive(Debug, Default)]
pub struct Restored {
    /// Every series.
    pub series: Vec<StoredSeries>,
    /// Cluster configurations (JSON as stored).
    pub clusters: Vec<String>,
    /// Last published snapshot per cluster (JSON).
    pub snapshots: Vec<String>,
    /// Overrides per cluster (JSON).
    pub overrides: Vec<String>,
    /// Next segment number.
    pub next_segment: u64,
    /// Samples stored.
    pub samples: u64,
}

/// Per-table figures of a check or a repair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableReport {
    /// Table name.
    pub table: String,
    /// Records that verified (kept, for a repair).
    pub ok: u64,
    /// Records that failed their checksum or layout check (dropped, for a repair).
    pub bad: u64,
    /// Set when the table could not be read to its end (redb failed or
    /// panicked part way); the records after that point are not counted.
    pub unreadable: Option<String>,
}

/// Result of [`Store::check`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// The file checked.
    pub file: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Record layout version found (`None` when it could not be read).
    pub format_version: Option<u64>,
    /// What redb's own page-checksum verification said (`None`: it passed).
    pub redb: Option<String>,
    /// Per-table figures.
    pub tables: Vec<TableReport>,
    /// Samples in the segments that verified.
    pub samples: u64,
    /// Every problem found, each naming its table and key.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// True when nothing is wrong: the server would open this store.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.redb.is_none()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "store {} ({} bytes, format {}): {}",
            self.file.display(),
            self.bytes,
            self.format_version
                .map_or_else(|| "unknown".to_string(), |v| v.to_string()),
            if self.is_ok() { "ok" } else { "DAMAGED" }
        )?;
        if let Some(r) = &self.redb {
            writeln!(f, "  redb page checks: {r}")?;
        }
        for t in &self.tables {
            write!(f, "  {:<12} {:>10} ok {:>6} bad", t.table, t.ok, t.bad)?;
            if let Some(u) = &t.unreadable {
                write!(f, "  (unreadable past this point: {u})")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "  samples in verified segments: {}", self.samples)?;
        for p in self.problems.iter().take(50) {
            writeln!(f, "  problem: {p}")?;
        }
        if self.problems.len() > 50 {
            writeln!(f, "  … and {} more problems", self.problems.len() - 50)?;
        }
        Ok(())
    }
}

/// Samples lost from one series by a repair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesLoss {
    /// Series id.
    pub id: u32,
    /// Its identity, when its `series` record survived.
    pub key: Option<SeriesKey>,
    /// Samples of this series dropped (counted from damaged segments whose
    /// content still parses, so an estimate; and every sample of a series
    /// whose identity was lost).
    pub samples: u64,
}

/// Result of [`Store::repair`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// The damaged store read.
    pub src: PathBuf,
    /// The new store written.
    pub dst: PathBuf,
    /// Record layout version of the source (1: migrated, records unverifiable).
    pub source_format: Option<u64>,
    /// What redb said when opening the source.
    pub redb: Option<String>,
    /// Per-table figures: `ok` kept, `bad` dropped.
    pub tables: Vec<TableReport>,
    /// Samples kept.
    pub samples_kept: u64,
    /// Samples dropped (damaged segments, plus samples of series whose
    /// identity was lost); damaged segments that do not parse count 0.
    pub samples_lost: u64,
    /// Per-series losses.
    pub series_lost: Vec<SeriesLoss>,
    /// Problems found, each naming its table and key.
    pub problems: Vec<String>,
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "repaired {} into {} (source format {}): {} samples kept, {} lost",
            self.src.display(),
            self.dst.display(),
            self.source_format
                .map_or_else(|| "unknown".to_string(), |v| v.to_string()),
            self.samples_kept,
            self.samples_lost
        )?;
        if let Some(r) = &self.redb {
            writeln!(f, "  redb: {r}")?;
        }
        for t in &self.tables {
            write!(
                f,
                "  {:<12} {:>10} kept {:>6} dropped",
                t.table, t.ok, t.bad
            )?;
            if let Some(u) = &t.unreadable {
                write!(f, "  (unreadable past this point: {u})")?;
            }
            writeln!(f)?;
        }
        for s in &self.series_lost {
            match &s.key {
                Some(k) => writeln!(
                    f,
                    "  series {} {}/{}/{} {:?}: {} samples lost",
                    s.id, k.cluster, k.backend, k.metric, k.labels, s.samples
                )?,
                None => writeln!(
                    f,
                    "  series {} (identity lost): {} samples lost",
                    s.id, s.samples
                )?,
            }
        }
        for p in self.problems.iter().take(50) {
            writeln!(f, "  problem: {p}")?;
        }
        if self.problems.len() > 50 {
            writeln!(f, "  … and {} more problems", self.problems.len() - 50)?;
        }
        Ok(())
    }
}

/// Result of [`Store::backup`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    /// The file written.
    pub dst: PathBuf,
    /// Records copied (every table).
    pub records: u64,
    /// Samples in the copied segments.
    pub samples: u64,
    /// Size of the new file.
    pub bytes: u64,
}

/// How [`Store::open_with`] treats a missing or empty store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OpenMode {
    /// Open the store that must be there. A data directory that does not
    /// exist yet (a first start) is created with a new store; an existing
    /// directory without `aya.redb`, or a zero-length `aya.redb`, is an error.
    #[default]
    Existing,
    /// `--init`: also create a new store in an existing directory that has
    /// none, or in a zero-length `aya.redb`. A non-empty store is opened as
    /// usual, never overwritten.
    Init,
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    file: Arc<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// What [`visit`] calls for each record: key bytes, payload or what is wrong.
type Visitor<'a> = dyn FnMut(&[u8], Result<&[u8], String>) + 'a;

/// Converts a format-1 row into format-2 `(key bytes, payload)`.
type V1Conv<'a, K, V> = dyn Fn(
        &<K as redb::Value>::SelfType<'_>,
        &<V as redb::Value>::SelfType<'_>,
    ) -> Option<(Vec<u8>, Vec<u8>)>
    + 'a;

/// Records of one table as read from a file: `(key bytes, verified payload)`.
type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Visit every record of `def` in `tx`, verifying each seal. `f` gets the
/// key's bytes and the payload or what is wrong with the record. redb errors
/// and panics end the walk and are returned as text. At most `limit` rows
/// are visited (a damaged tree may loop).
fn visit<K: redb::Key + 'static>(
    tx: &ReadTransaction,
    def: TableDefinition<'_, K, Bytes>,
    limit: u64,
    f: &mut Visitor<'_>,
) -> Result<(), String> {
    let name = def.name().to_string();
    let walked = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let t = tx.open_table(def).map_err(|e| e.to_string())?;
        let mut n = 0u64;
        for row in t.iter().map_err(|e| e.to_string())? {
            n += 1;
            if n > limit {
                return Err(format!("more than {limit} rows: the tree loops"));
            }
            let (k, v) = row.map_err(|e| e.to_string())?;
            let kb = key_bytes::<K>(&k.value());
            let stored = v.value();
            f(&kb, unseal(&name, &kb, stored));
        }
        Ok(())
    }));
    match walked {
        Ok(r) => r,
        Err(p) => Err(format!("redb panicked: {}", panic_text(&*p))),
    }
}

/// Visit one table by name (see [`visit`]).
fn visit_named(
    tx: &ReadTransaction,
    table: &str,
    limit: u64,
    f: &mut Visitor<'_>,
) -> Result<(), String> {
    match table {
        "segments" => visit(tx, SEGMENTS, limit, f),
        "series" => visit(tx, SERIES, limit, f),
        "series_last" => visit(tx, SERIES_LAST, limit, f),
        "clusters" => visit(tx, CLUSTERS, limit, f),
        "snapshots" => visit(tx, SNAPSHOTS, limit, f),
        "overrides" => visit(tx, OVERRIDES, limit, f),
        "models" => visit(tx, MODELS, limit, f),
        "meta" => visit(tx, META, limit, f),
        "demand" => visit(tx, DEMAND, limit, f),
        "aya_format" => visit(tx, FORMAT, limit, f),
        other => Err(format!("unknown table {other}")),
    }
}

/// Insert sealed records (key bytes as redb stores them) into `def`.
fn insert_all<K: redb::Key + 'static>(
    tx: &WriteTransaction,
    def: TableDefinition<'_, K, Bytes>,
    records: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), StoreError> {
    let name = def.name().to_string();
    let mut t = db_err!(tx.open_table(def))?;
    for (k, payload) in records {
        let key = K::from_bytes(k);
        db_err!(t.insert(key, seal(&name, k, payload).as_slice()))?;
    }
    Ok(())
}

fn insert_named(
    tx: &WriteTransaction,
    table: &str,
    records: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), StoreError> {
    match table {
        "segments" => insert_all(tx, SEGMENTS, records),
        "series" => insert_all(tx, SERIES, records),
        "series_last" => insert_all(tx, SERIES_LAST, records),
        "clusters" => insert_all(tx, CLUSTERS, records),
        "snapshots" => insert_all(tx, SNAPSHOTS, records),
        "overrides" => insert_all(tx, OVERRIDES, records),
        "models" => insert_all(tx, MODELS, records),
        "meta" => insert_all(tx, META, records),
        "demand" => insert_all(tx, DEMAND, records),
        "aya_format" => insert_all(tx, FORMAT, records),
        other => Err(StoreError::Corrupt {
            table: "aya_format",
            message: format!("unknown table {other}"),
        }),
    }
}

/// Check the layout of a verified payload (what decoding it at start needs).
fn check_payload(table: &str, key: &[u8], payload: &[u8]) -> Result<(), String> {
    match table {
        "segments" if !payload.len().is_multiple_of(SAMPLE_BYTES) => {
            return Err(format!(
                "segment of {} bytes is not a whole number of samples",
                payload.len()
            ));
        }
        "series" => {
            serde_json::from_slice::<SeriesKey>(payload)
                .map_err(|e| format!("series identity does not decode: {e}"))?;
        }
        "series_last" | "meta" | "demand" | "aya_format" => {
            u64_payload(payload)?;
        }
        "clusters" | "snapshots" | "overrides" => {
            std::str::from_utf8(payload).map_err(|e| format!("not UTF-8: {e}"))?;
        }
        _ => {}
    }
    let _ = key;
    Ok(())
}

/// A file opened for inspection: the database and what redb said.
struct Opened {
    db: Database,
    redb_note: Option<String>,
}

/// Open `file` (which exists and is not empty) with redb's page checks.
/// `Err` carries a message naming what went wrong; panics are caught.
fn open_checked(file: &Path) -> Result<Opened, String> {
    let fell_back = Arc::new(AtomicBool::new(false));
    let flag = fell_back.clone();
    let opened = catch_unwind(AssertUnwindSafe(|| {
        let mut b = redb::Builder::new();
        b.set_check_integrity_on_open(true);
        b.set_repair_callback(move |s: &mut redb::RepairSession| {
            // 0.3 is reported only when the newest commit does not verify
            // and redb falls back to the previous one.
            if (s.progress() - 0.3).abs() < 1e-9 {
                flag.store(true, Ordering::SeqCst);
            }
        });
        b.open(file)
    }));
    match opened {
        Ok(Ok(db)) => Ok(Opened {
            db,
            redb_note: fell_back.load(Ordering::SeqCst).then(|| {
                "the newest commit did not verify; redb rolled back to the previous one (a crash during a commit, or damage)".to_string()
            }),
        }),
        Ok(Err(e)) => Err(format!("redb refuses the file: {e}")),
        Err(p) => Err(format!("redb panicked opening the file: {}", panic_text(&*p))),
    }
}

/// Open `file` without redb's page checks (for salvage only).
fn open_unchecked(file: &Path) -> Result<Database, String> {
    match catch_unwind(AssertUnwindSafe(|| redb::Builder::new().open(file))) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(format!("redb refuses the file: {e}")),
        Err(p) => Err(format!(
            "redb panicked opening the file: {}",
            panic_text(&*p)
        )),
    }
}

/// What the `aya_format` table says: `Ok(Some(v))`, `Ok(None)` when the file
/// has no tables at all (created but never written), `Err` otherwise.
fn read_format(tx: &ReadTransaction) -> Result<Option<u64>, String> {
    let names = catch_unwind(AssertUnwindSafe(|| -> Result<BTreeSet<String>, String> {
        Ok(tx
            .list_tables()
            .map_err(|e| e.to_string())?
            .map(|h| h.name().to_string())
            .collect())
    }))
    .map_err(|p| format!("redb panicked listing tables: {}", panic_text(&*p)))??;
    if names.is_empty() {
        return Ok(None);
    }
    if !names.contains("aya_format") {
        return if names.contains("segments") || names.contains("series") {
            Ok(Some(1))
        } else {
            Err(format!(
                "not an Aya store (tables: {})",
                names.into_iter().collect::<Vec<_>>().join(", ")
            ))
        };
    }
    let mut version = None;
    let mut bad = None;
    visit(tx, FORMAT, 16, &mut |k, r| match r {
        Ok(p) if k == b"version" => match u64_payload(p) {
            Ok(v) => version = Some(v),
            Err(e) => bad = Some(e),
        },
        Ok(_) => {}
        Err(e) => bad = Some(e),
    })?;
    if let Some(e) = bad {
        return Err(format!("table aya_format, key \"version\": {e}"));
    }
    version
        .map(Some)
        .ok_or_else(|| "table aya_format has no version record".to_string())
}

/// Walk every table of a format-2 file: per-table figures, problems, and
/// (with `keep`) the verified records.
fn walk_all(
    tx: &ReadTransaction,
    limit: u64,
    mut keep: Option<&mut BTreeMap<String, Records>>,
) -> (Vec<TableReport>, Vec<String>, u64) {
    let mut reports = Vec::new();
    let mut problems = Vec::new();
    let mut samples = 0u64;
    for table in TABLES {
        let mut rep = TableReport {
            table: table.to_string(),
            ..TableReport::default()
        };
        let mut kept: Records = Vec::new();
        let collect = keep.is_some();
        let r = visit_named(tx, table, limit, &mut |k, r| match r
            .and_then(|p| check_payload(table, k, p).map(|_| p))
        {
            Ok(p) => {
                rep.ok += 1;
                if table == "segments" {
                    samples += (p.len() / SAMPLE_BYTES) as u64;
                }
                if collect {
                    kept.push((k.to_vec(), p.to_vec()));
                }
            }
            Err(e) => {
                rep.bad += 1;
                problems.push(format!("table {table}, key {}: {e}", key_text(table, k)));
            }
        });
        if let Err(e) = r {
            problems.push(format!("table {table}: cannot be read to its end: {e}"));
            rep.unreadable = Some(e);
        }
        if let Some(keep) = keep.as_deref_mut() {
            keep.insert(table.to_string(), kept);
        }
        reports.push(rep);
    }
    (reports, problems, samples)
}

/// Cross-checks of the verified records: `meta` agrees with the segments.
fn cross_check(tx: &ReadTransaction, limit: u64, samples: u64, problems: &mut Vec<String>) {
    let mut meta = BTreeMap::new();
    let _ = visit(tx, META, limit, &mut |k, r| {
        if let Ok(Ok(v)) = r.map(u64_payload) {
            meta.insert(k.to_vec(), v);
        }
    });
    let mut max_segment: Option<u64> = None;
    let _ = visit(tx, SEGMENTS, limit, &mut |k, _| {
        if let Some(n) = k.get(8..16).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            let n = u64::from_le_bytes(n);
            max_segment = Some(max_segment.map_or(n, |m: u64| m.max(n)));
        }
    });
    let recorded = meta.get(&b"samples"[..]).copied().unwrap_or(0);
    if recorded != samples {
        problems.push(format!(
            "table meta, key \"samples\": records {recorded} samples but the segments that verify hold {samples} (segments are missing or damaged)"
        ));
    }
    if let Some(m) = max_segment {
        let next = meta.get(&b"next_segment"[..]).copied().unwrap_or(0);
        if next <= m {
            problems.push(format!(
                "table meta, key \"next_segment\": {next} but segment {m} exists"
            ));
        }
    }
}

/// Copy `src` to a new temporary file next to `near` (so it is on the same
/// file system); the copy is removed when the guard drops.
struct TempCopy(PathBuf);

impl TempCopy {
    fn of(src: &Path, near: &Path) -> Result<TempCopy, StoreError> {
        // A name unique within this process (the counter) and across processes
        // (the pid); no clock read, as the service's clock is injected.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = near
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let tmp = dir.join(format!(".aya-store-{}-{nanos}.tmp", std::process::id()));
        std::fs::copy(src, &tmp).map_err(|source| StoreError::Io {
            path: src.to_path_buf(),
            what: format!("cannot copy to {}", tmp.display()),
            source,
        })?;
        Ok(TempCopy(tmp))
    }
}

impl Drop for TempCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn file_len(path: &Path) -> Result<u64, StoreError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            what: "cannot read its metadata".into(),
            source,
        })
}

/// Create a new, empty format-2 store at `file` (which must not exist or be empty).
fn create_new(file: &Path) -> Result<Database, StoreError> {
    let db = db_err!(Database::create(file))?;
    let tx = db_err!(db.begin_write())?;
    create_tables(&tx)?;
    {
        let mut t = db_err!(tx.open_table(FORMAT))?;
        let v = FORMAT_VERSION.to_le_bytes();
        db_err!(t.insert(
            &b"version"[..],
            seal("aya_format", b"version", &v).as_slice()
        ))?;
    }
    db_err!(tx.commit())?;
    Ok(db)
}

fn create_tables(tx: &WriteTransaction) -> Result<(), StoreError> {
    db_err!(tx.open_table(FORMAT))?;
    db_err!(tx.open_table(SEGMENTS))?;
    db_err!(tx.open_table(SERIES))?;
    db_err!(tx.open_table(SERIES_LAST))?;
    db_err!(tx.open_table(CLUSTERS))?;
    db_err!(tx.open_table(SNAPSHOTS))?;
    db_err!(tx.open_table(OVERRIDES))?;
    db_err!(tx.open_table(MODELS))?;
    db_err!(tx.open_table(META))?;
    db_err!(tx.open_table(DEMAND))?;
    Ok(())
}

/// Read a sealed `u64` from `meta` in a write transaction.
fn meta_get(t: &redb::Table<'_, Bytes, Bytes>, key: &str) -> Result<u64, StoreError> {
    match db_err!(t.get(key.as_bytes()))? {
        None => Ok(0),
        Some(g) => {
            let v = g.value();
            unseal("meta", key.as_bytes(), v)
                .and_then(u64_payload)
                .map_err(|message| StoreError::Corrupt {
                    table: "meta",
                    message: format!("key {key:?}: {message}"),
                })
        }
    }
}

fn meta_put(t: &mut redb::Table<'_, Bytes, Bytes>, key: &str, v: u64) -> Result<(), StoreError> {
    let sealed = seal("meta", key.as_bytes(), &v.to_le_bytes());
    db_err!(t.insert(key.as_bytes(), sealed.as_slice()))?;
    Ok(())
}

impl Store {
    /// Open `dir/aya.redb` as [`OpenMode::Existing`] (the data directory is
    /// created with a new store when it does not exist).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(dir, OpenMode::Existing)
    }

    /// Open `dir/aya.redb`: a missing or zero-length store is created only as
    /// [`OpenMode`] allows; an existing one is verified page by page (redb)
    /// and record by record (seals, layout, `meta` counts) before it is used.
    /// Any damage, an old record format or anything redb panics on is an
    /// error naming the file.
    pub fn open_with(dir: &Path, mode: OpenMode) -> Result<Store, StoreError> {
        let file = dir.join(STORE_FILE);
        let unusable = |message: String| StoreError::Unusable {
            file: file.clone(),
            message,
        };
        let fresh_dir = !dir.exists();
        if fresh_dir {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let len = match std::fs::metadata(&file) {
            Ok(m) => Some(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(StoreError::Io {
                    path: file,
                    what: "cannot read its metadata".into(),
                    source,
                });
            }
        };
        let init = mode == OpenMode::Init;
        match len {
            None if fresh_dir || init => {
                if fresh_dir && !init {
                    tracing::warn!(file = %file.display(), "data directory did not exist: created it with a new, empty store");
                }
                let db = create_new(&file)?;
                return Ok(Store {
                    db: Arc::new(db),
                    file: Arc::new(file),
                });
            }
            None => {
                return Err(unusable(
                    "does not exist, but its data directory does: a store was expected here (wrong data_dir, unmounted volume, deleted file?). Restore it from a backup, or start with --init to create a new, empty store".into(),
                ));
            }
            Some(0) if init => {
                let db = create_new(&file)?;
                return Ok(Store {
                    db: Arc::new(db),
                    file: Arc::new(file),
                });
            }
            Some(0) => {
                return Err(unusable(
                    "is empty (0 bytes): it was truncated or never written. Restore it from a backup, or start with --init to create a new, empty store in its place".into(),
                ));
            }
            Some(_) => {}
        }
        let opened = open_checked(&file).map_err(|m| {
            unusable(format!(
                "{m}. Run `aya store check` for a report and `aya store repair` to salvage what verifies"
            ))
        })?;
        if let Some(note) = &opened.redb_note {
            tracing::warn!(file = %file.display(), "{note}");
        }
        let db = opened.db;
        let limit = file_len(&file)?.max(1024);
        let verdict = catch_unwind(AssertUnwindSafe(|| -> Result<(), StoreError> {
            let tx = db_err!(db.begin_read())?;
            match read_format(&tx).map_err(&unusable)? {
                None => {
                    return Err(unusable(
                        "holds no tables (created but never written). Start with --init to initialise it".into(),
                    ));
                }
                Some(FORMAT_VERSION) => {}
                Some(1) => {
                    return Err(unusable(
                        "has record format 1 (written by an Aya without checksums). Migrate it with `aya store repair OLD NEW` (Store::repair), which writes a format-2 copy, then point data_dir at the copy".into(),
                    ));
                }
                Some(v) => {
                    return Err(unusable(format!(
                        "has record format {v}, newer than this Aya understands ({FORMAT_VERSION})"
                    )));
                }
            }
            let (_, mut problems, samples) = walk_all(&tx, limit, None);
            if problems.is_empty() {
                cross_check(&tx, limit, samples, &mut problems);
            }
            if !problems.is_empty() {
                let n = problems.len();
                let shown: Vec<String> = problems.into_iter().take(5).collect();
                return Err(unusable(format!(
                    "{n} integrity problem(s): {}{}. Refusing to serve altered data: run `aya store check` for the full report and `aya store repair` to salvage what verifies",
                    shown.join("; "),
                    if n > 5 { "; …" } else { "" }
                )));
            }
            Ok(())
        }));
        match verdict {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(p) => {
                return Err(unusable(format!(
                    "redb panicked verifying the file: {}",
                    panic_text(&*p)
                )));
            }
        }
        Ok(Store {
            db: Arc::new(db),
            file: Arc::new(file),
        })
    }

    /// The store file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn integrity(&self, table: &str, key: &[u8], message: String) -> StoreError {
        StoreError::Integrity {
            file: self.file.to_path_buf(),
            table: table.to_string(),
            key: key_text(table, key),
            message,
        }
    }

    /// Check the store file `path` without changing it (a copy is checked,
    /// so that redb's recovery never writes to the original). `Err` only
    /// when the file cannot be examined at all (missing, unreadable, in use
    /// is fine: the copy is taken anyway); damage is listed in the report.
    pub fn check(path: &Path) -> Result<CheckReport, StoreError> {
        let bytes = file_len(path)?;
        let mut report = CheckReport {
            file: path.to_path_buf(),
            bytes,
            ..CheckReport::default()
        };
        if bytes == 0 {
            report
                .problems
                .push("the file is empty (0 bytes): truncated or never written".into());
            return Ok(report);
        }
        let copy = TempCopy::of(path, path)?;
        let limit = bytes.max(1024);
        let db = match open_checked(&copy.0) {
            Ok(o) => {
                report.redb = o.redb_note;
                o.db
            }
            Err(m) => {
                report.redb = Some(m);
                match open_unchecked(&copy.0) {
                    Ok(db) => db,
                    Err(m) => {
                        report.problems.push(m);
                        return Ok(report);
                    }
                }
            }
        };
        let inspected = catch_unwind(AssertUnwindSafe(|| {
            let tx = match db.begin_read() {
                Ok(tx) => tx,
                Err(e) => {
                    report.problems.push(format!("cannot read: {e}"));
                    return;
                }
            };
            match read_format(&tx) {
                Ok(Some(FORMAT_VERSION)) => report.format_version = Some(FORMAT_VERSION),
                Ok(Some(v)) => {
                    report.format_version = Some(v);
                    report.problems.push(format!(
                        "record format {v}: this Aya reads format {FORMAT_VERSION} (format 1 migrates with repair)"
                    ));
                    return;
                }
                Ok(None) => {
                    report.problems.push("the file holds no tables".into());
                    return;
                }
                Err(e) => {
                    report.problems.push(e);
                    return;
                }
            }
            let (tables, problems, samples) = walk_all(&tx, limit, None);
            report.tables = tables;
            report.problems.extend(problems);
            report.samples = samples;
            cross_check(&tx, limit, samples, &mut report.problems);
        }));
        if let Err(p) = inspected {
            report.problems.push(format!(
                "redb panicked reading the file: {}",
                panic_text(&*p)
            ));
        }
        // Closing commits redb's allocator state, which panics on some
        // damaged files too (found by fuzz/ `store`): close inside the guard.
        if let Err(p) = catch_unwind(AssertUnwindSafe(move || drop(db))) {
            report.problems.push(format!(
                "redb panicked closing the file: {}",
                panic_text(&*p)
            ));
        }
        Ok(report)
    }

    /// Salvage every record of `src` that verifies into a new store `dst`
    /// (which must not exist), and report what was lost per table and per
    /// series. `src` is not changed (a copy is read). A format-1 `src` is
    /// migrated: its records have no checksums, so every record that decodes
    /// is kept (the report's `source_format` is 1).
    ///
    /// The new store is consistent: segments of series whose identity was
    /// lost are dropped, `series_last` is rebuilt where it was lost, and
    /// `meta` is recomputed.
    pub fn repair(src: &Path, dst: &Path) -> Result<RepairReport, StoreError> {
        if dst.exists() {
            return Err(StoreError::Unusable {
                file: dst.to_path_buf(),
                message: "already exists: repair writes a new store and never overwrites one"
                    .into(),
            });
        }
        let bytes = file_len(src)?;
        let mut report = RepairReport {
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
            ..RepairReport::default()
        };
        let mut kept: BTreeMap<String, Records> = BTreeMap::new();
        if bytes == 0 {
            report
                .problems
                .push("the source is empty (0 bytes): nothing to salvage".into());
        } else {
            let copy = TempCopy::of(src, dst)?;
            let limit = bytes.max(1024);
            let db = match open_checked(&copy.0) {
                Ok(o) => {
                    report.redb = o.redb_note;
                    Some(o.db)
                }
                Err(m) => {
                    report.redb = Some(m);
                    match open_unchecked(&copy.0) {
                        Ok(db) => Some(db),
                        Err(m) => {
                            report.problems.push(m);
                            None
                        }
                    }
                }
            };
            if let Some(db) = db {
                let read = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
                    let tx = db.begin_read().map_err(|e| e.to_string())?;
                    let format = read_format(&tx)?;
                    report.source_format = format;
                    match format {
                        Some(FORMAT_VERSION) => {
                            let (tables, problems, _) = walk_all(&tx, limit, Some(&mut kept));
                            report.tables = tables;
                            report.problems.extend(problems);
                            Ok(())
                        }
                        Some(1) => {
                            let (tables, problems) = v1::read(&tx, limit, &mut kept);
                            report.tables = tables;
                            report.problems.extend(problems);
                            Ok(())
                        }
                        Some(v) => Err(format!("record format {v} is not known")),
                        None => Ok(()),
                    }
                }));
                match read {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => report.problems.push(e),
                    Err(p) => report.problems.push(format!(
                        "redb panicked reading the source: {}",
                        panic_text(&*p)
                    )),
                }
                // Samples of damaged segments, per series, when their bytes still parse.
                let lost_by_series = damaged_segment_samples(&db, limit);
                for (id, n) in lost_by_series {
                    *report_loss(&mut report.series_lost, id) += n;
                }
            }
        }
        finish_repair(&mut kept, &mut report)?;
        report.samples_lost = report.series_lost.iter().map(|s| s.samples).sum::<u64>();
        write_store(dst, &kept)?;
        Ok(report)
    }

    /// Write a consistent snapshot of the serving store to `dst` (which must
    /// not exist): one read transaction, so concurrent commits are either
    /// wholly in the copy or not at all. Every record is verified on the
    /// way; a damaged one fails the backup (a backup never copies damage).
    /// The copy is written to `dst.tmp`, fsynced, then renamed.
    pub fn backup(&self, dst: &Path) -> Result<BackupReport, StoreError> {
        if dst.exists() {
            return Err(StoreError::Unusable {
                file: dst.to_path_buf(),
                message: "already exists: a backup never overwrites a file".into(),
            });
        }
        let mut kept: BTreeMap<String, Records> = BTreeMap::new();
        let mut failure: Option<StoreError> = None;
        {
            let tx = db_err!(self.db.begin_read())?;
            for table in TABLES {
                let mut records: Records = Vec::new();
                let r = visit_named(&tx, table, u64::MAX, &mut |k, r| match r
                    .and_then(|p| check_payload(table, k, p).map(|_| p))
                {
                    Ok(p) => records.push((k.to_vec(), p.to_vec())),
                    Err(e) => {
                        if failure.is_none() {
                            failure = Some(self.integrity(table, k, e));
                        }
                    }
                });
                if let Err(e) = r {
                    return Err(StoreError::Unusable {
                        file: self.file.to_path_buf(),
                        message: format!("table {table}: {e}"),
                    });
                }
                kept.insert(table.to_string(), records);
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let records = kept.values().map(|r| r.len() as u64).sum();
        let samples = kept
            .get("segments")
            .map(|s| s.iter().map(|(_, p)| (p.len() / SAMPLE_BYTES) as u64).sum())
            .unwrap_or(0);
        write_store(dst, &kept)?;
        Ok(BackupReport {
            dst: dst.to_path_buf(),
            records,
            samples,
            bytes: file_len(dst)?,
        })
    }

    /// Read everything needed to resume.
    pub fn restore(&self) -> Result<Restored, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let mut out = Restored::default();
        let series = db_err!(tx.open_table(SERIES))?;
        let last = db_err!(tx.open_table(SERIES_LAST))?;
        for row in db_err!(series.iter())? {
            let (id, stored) = db_err!(row)?;
            let id = id.value();
            let kb = id.to_le_bytes();
            let payload = unseal("series", &kb, stored.value())
                .map_err(|m| self.integrity("series", &kb, m))?;
            let key: SeriesKey = serde_json::from_slice(payload)
                .map_err(|e| self.integrity("series", &kb, e.to_string()))?;
            let last_ms = match db_err!(last.get(id))? {
                Some(g) => unseal("series_last", &kb, g.value())
                    .and_then(i64_payload)
                    .map_err(|m| self.integrity("series_last", &kb, m))?,
                None => i64::MIN,
            };
            out.series.push(StoredSeries { id, key, last_ms });
        }
        for (table, dst) in [
            (CLUSTERS, &mut out.clusters),
            (SNAPSHOTS, &mut out.snapshots),
            (OVERRIDES, &mut out.overrides),
        ] {
            let name = table.name().to_string();
            let t = db_err!(tx.open_table(table))?;
            for row in db_err!(t.iter())? {
                let (k, v) = db_err!(row)?;
                let k = k.value();
                let payload =
                    unseal(&name, k, v.value()).map_err(|m| self.integrity(&name, k, m))?;
                let text = std::str::from_utf8(payload)
                    .map_err(|e| self.integrity(&name, k, format!("not UTF-8: {e}")))?;
                dst.push(text.to_string());
            }
        }
        let meta = db_err!(tx.open_table(META))?;
        let get = |key: &str| -> Result<u64, StoreError> {
            match db_err!(meta.get(key.as_bytes()))? {
                None => Ok(0),
                Some(g) => unseal("meta", key.as_bytes(), g.value())
                    .and_then(u64_payload)
                    .map_err(|m| self.integrity("meta", key.as_bytes(), m)),
            }
        };
        out.next_segment = get("next_segment")?;
        out.samples = get("samples")?;
        Ok(out)
    }

    /// Commit one segment durably (fsync before returning). `segment` is its number.
    pub fn write_segment(&self, segment: u64, w: &SegmentWrite) -> Result<(), StoreError> {
        if !w.packed.len().is_multiple_of(SAMPLE_BYTES) {
            return Err(StoreError::Corrupt {
                table: "segments",
                message: format!(
                    "segment {segment}: {} bytes is not a whole number of samples",
                    w.packed.len()
                ),
            });
        }
        let mut tx = db_err!(self.db.begin_write())?;
        db_err!(tx.set_durability(Durability::Immediate))?;
        {
            let mut seg = db_err!(tx.open_table(SEGMENTS))?;
            let key = (w.max_ms, segment);
            let kb = key_bytes::<(i64, u64)>(&key);
            db_err!(seg.insert(key, seal("segments", &kb, &w.packed).as_slice()))?;
            let mut series = db_err!(tx.open_table(SERIES))?;
            for (id, key) in &w.new_series {
                let json = serde_json::to_vec(key).map_err(|e| StoreError::Corrupt {
                    table: "series",
                    message: e.to_string(),
                })?;
                let sealed = seal("series", &id.to_le_bytes(), &json);
                db_err!(series.insert(*id, sealed.as_slice()))?;
            }
            let mut last = db_err!(tx.open_table(SERIES_LAST))?;
            for (id, ts) in &w.last {
                let sealed = seal("series_last", &id.to_le_bytes(), &ts.to_le_bytes());
                db_err!(last.insert(*id, sealed.as_slice()))?;
            }
            let mut meta = db_err!(tx.open_table(META))?;
            let n = meta_get(&meta, "samples")?;
            meta_put(&mut meta, "samples", n + w.len() as u64)?;
            let next = meta_get(&meta, "next_segment")?;
            meta_put(&mut meta, "next_segment", next.max(segment + 1))?;
        }
        db_err!(tx.commit())?;
        Ok(())
    }

    /// Visit every stored sample in segments whose newest sample is at or
    /// after `from_ms`, as `(series id, ts ms, value)`. A segment that fails
    /// its checksum is an error (nothing of it is visited).
    pub fn scan(&self, from_ms: i64, mut f: impl FnMut(u32, i64, f64)) -> Result<(), StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let seg = db_err!(tx.open_table(SEGMENTS))?;
        for row in db_err!(seg.range((from_ms, 0u64)..))? {
            let (k, v) = db_err!(row)?;
            let kb = key_bytes::<(i64, u64)>(&k.value());
            let payload = unseal("segments", &kb, v.value())
                .map_err(|m| self.integrity("segments", &kb, m))?;
            if !payload.len().is_multiple_of(SAMPLE_BYTES) {
                return Err(self.integrity(
                    "segments",
                    &kb,
                    format!("{} bytes is not a whole number of samples", payload.len()),
                ));
            }
            for (id, ts, val) in unpack(payload) {
                f(id, ts, val);
            }
        }
        Ok(())
    }

    /// Delete segments whose newest sample is older than `cutoff_ms`.
    /// Returns the number of samples deleted.
    pub fn retain(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let mut tx = db_err!(self.db.begin_write())?;
        db_err!(tx.set_durability(Durability::Immediate))?;
        let mut removed = 0u64;
        {
            let mut seg = db_err!(tx.open_table(SEGMENTS))?;
            db_err!(seg.retain_in(..(cutoff_ms, 0u64), |_, v| {
                removed += (v.len().saturating_sub(SEAL_BYTES) / SAMPLE_BYTES) as u64;
                false
            }))?;
            let mut meta = db_err!(tx.open_table(META))?;
            let n = meta_get(&meta, "samples")?;
            meta_put(&mut meta, "samples", n.saturating_sub(removed))?;
        }
        db_err!(tx.commit())?;
        Ok(removed)
    }

    fn put_bytes(
        &self,
        table: TableDefinition<'_, Bytes, Bytes>,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let name = table.name().to_string();
        let mut tx = db_err!(self.db.begin_write())?;
        db_err!(tx.set_durability(Durability::Immediate))?;
        {
            let mut t = db_err!(tx.open_table(table))?;
            match value {
                Some(v) => {
                    let sealed = seal(&name, key.as_bytes(), v);
                    db_err!(t.insert(key.as_bytes(), sealed.as_slice()))?;
                }
                None => {
                    db_err!(t.remove(key.as_bytes()))?;
                }
            }
        }
        db_err!(tx.commit())?;
        Ok(())
    }

    /// Store (or with `None` delete) a cluster configuration.
    pub fn put_cluster(&self, name: &str, json: Option<&str>) -> Result<(), StoreError> {
        self.put_bytes(CLUSTERS, name, json.map(str::as_bytes))
    }

    /// Store (or delete) a cluster's last published snapshot.
    pub fn put_snapshot(&self, cluster: &str, json: Option<&str>) -> Result<(), StoreError> {
        self.put_bytes(SNAPSHOTS, cluster, json.map(str::as_bytes))
    }

    /// Store (or delete) a cluster's override.
    pub fn put_override(&self, cluster: &str, json: Option<&str>) -> Result<(), StoreError> {
        self.put_bytes(OVERRIDES, cluster, json.map(str::as_bytes))
    }

    /// Store a model artifact under `name`.
    pub fn put_model(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_bytes(MODELS, name, Some(bytes))
    }

    /// A model artifact (verified).
    pub fn get_model(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let t = db_err!(tx.open_table(MODELS))?;
        match db_err!(t.get(name.as_bytes()))? {
            None => Ok(None),
            Some(g) => unseal("models", name.as_bytes(), g.value())
                .map(|p| Some(p.to_vec()))
                .map_err(|m| self.integrity("models", name.as_bytes(), m)),
        }
    }

    /// Delete a model artifact. Returns whether it existed.
    pub fn delete_model(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = db_err!(self.db.begin_write())?;
        db_err!(tx.set_durability(Durability::Immediate))?;
        let existed = {
            let mut t = db_err!(tx.open_table(MODELS))?;
            db_err!(t.remove(name.as_bytes()))?.is_some()
        };
        db_err!(tx.commit())?;
        Ok(existed)
    }

    /// Append observed demand points `(cluster, timestamp ms, requests/s)`
    /// (not fsynced: see the module docs). A point at an existing
    /// `(cluster, timestamp)` replaces it.
    pub fn append_demand(&self, points: &[(String, i64, f64)]) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let mut tx = db_err!(self.db.begin_write())?;
        db_err!(tx.set_durability(Durability::None))?;
        {
            let mut t = db_err!(tx.open_table(DEMAND))?;
            for (cluster, ts, v) in points {
                let key = (cluster.as_bytes(), *ts);
                let kb = key_bytes::<(Bytes, i64)>(&key);
                let sealed = seal("demand", &kb, &v.to_le_bytes());
                db_err!(t.insert(key, sealed.as_slice()))?;
            }
        }
        db_err!(tx.commit())?;
        Ok(())
    }

    /// Make every earlier commit durable (an empty fsynced commit; used at
    /// shutdown for the demand appended without fsync).
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut tx = db_err!(self.db.begin_write())?;
        db_err!(tx.set_durability(Durability::Immediate))?;
        db_err!(tx.commit())?;
        Ok(())
    }

    /// Demand points of `cluster` at or after `from_ms`, oldest first (verified).
    pub fn demand(&self, cluster: &str, from_ms: i64) -> Result<Vec<(i64, f64)>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let t = db_err!(tx.open_table(DEMAND))?;
        let mut out = Vec::new();
        let c = cluster.as_bytes();
        for row in db_err!(t.range((c, from_ms)..=(c, i64::MAX)))? {
            let (k, v) = db_err!(row)?;
            let key = k.value();
            let kb = key_bytes::<(Bytes, i64)>(&key);
            let value = unseal("demand", &kb, v.value())
                .and_then(f64_payload)
                .map_err(|m| self.integrity("demand", &kb, m))?;
            out.push((key.1, value));
        }
        Ok(out)
    }

    /// Delete the demand of `cluster` older than `cutoff_ms` (every point
    /// with `i64::MAX`). Returns the number of points deleted.
    pub fn retain_demand(&self, cluster: &str, cutoff_ms: i64) -> Result<u64, StoreError> {
        let mut tx = db_err!(self.db.begin_write())?;
        db_err!(tx.set_durability(Durability::Immediate))?;
        let mut removed = 0u64;
        {
            let mut t = db_err!(tx.open_table(DEMAND))?;
            let c = cluster.as_bytes();
            db_err!(t.retain_in((c, i64::MIN)..(c, cutoff_ms), |_, _| {
                removed += 1;
                false
            }))?;
        }
        db_err!(tx.commit())?;
        Ok(removed)
    }
}

fn report_loss(losses: &mut Vec<SeriesLoss>, id: u32) -> &mut u64 {
    let i = match losses.iter().position(|s| s.id == id) {
        Some(i) => i,
        None => {
            losses.push(SeriesLoss {
                id,
                key: None,
                samples: 0,
            });
            losses.len() - 1
        }
    };
    &mut losses[i].samples
}

/// Per series, the samples held by segments that fail their seal but whose
/// bytes still parse as samples (an unverified attribution, for the report).
fn damaged_segment_samples(db: &Database, limit: u64) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Ok(tx) = db.begin_read() else { return };
        if !matches!(read_format(&tx), Ok(Some(FORMAT_VERSION))) {
            return;
        }
        let Ok(t) = tx.open_table(SEGMENTS) else {
            return;
        };
        let Ok(rows) = t.iter() else { return };
        for (n, row) in rows.enumerate() {
            if n as u64 > limit {
                break;
            }
            let Ok((k, v)) = row else { break };
            let kb = key_bytes::<(i64, u64)>(&k.value());
            let stored = v.value();
            if unseal("segments", &kb, stored).is_ok() {
                continue;
            }
            let body = &stored[..stored.len().saturating_sub(SEAL_BYTES)];
            for (id, _, _) in unpack(body) {
                *out.entry(id).or_insert(0) += 1;
            }
        }
    }));
    out
}

/// Make salvaged records consistent: drop segment samples of series whose
/// identity was lost, rebuild lost `series_last`, recompute `meta`, set the
/// format record. Fills the per-series figures of `report`.
fn finish_repair(
    kept: &mut BTreeMap<String, Records>,
    report: &mut RepairReport,
) -> Result<(), StoreError> {
    let mut identities: BTreeMap<u32, SeriesKey> = BTreeMap::new();
    for (k, p) in kept.get("series").map(Vec::as_slice).unwrap_or(&[]) {
        if let (Ok(id), Ok(key)) = (
            <[u8; 4]>::try_from(k.as_slice()).map(u32::from_le_bytes),
            serde_json::from_slice::<SeriesKey>(p),
        ) {
            identities.insert(id, key);
        }
    }
    let mut last: BTreeMap<u32, i64> = BTreeMap::new();
    let mut samples_kept = 0u64;
    let mut max_segment: Option<u64> = None;
    let mut orphans: BTreeMap<u32, u64> = BTreeMap::new();
    let mut segments = kept.remove("segments").unwrap_or_default();
    for (k, p) in &mut segments {
        let mut body = Vec::with_capacity(p.len());
        for (id, ts, v) in unpack(p) {
            if identities.contains_key(&id) {
                body.extend_from_slice(&id.to_le_bytes());
                body.extend_from_slice(&ts.to_le_bytes());
                body.extend_from_slice(&v.to_le_bytes());
                let l = last.entry(id).or_insert(i64::MIN);
                *l = (*l).max(ts);
            } else {
                *orphans.entry(id).or_insert(0) += 1;
            }
        }
        samples_kept += (body.len() / SAMPLE_BYTES) as u64;
        *p = body;
        if let Some(n) = k.get(8..16).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            let n = u64::from_le_bytes(n);
            max_segment = Some(max_segment.map_or(n, |m: u64| m.max(n)));
        }
    }
    segments.retain(|(_, p)| !p.is_empty());
    kept.insert("segments".into(), segments);
    for (id, n) in orphans {
        *report_loss(&mut report.series_lost, id) += n;
    }
    // series_last: keep what verified, rebuild the rest from the segments.
    let stored_last: BTreeMap<u32, i64> = kept
        .get("series_last")
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(|(k, p)| {
            let id = <[u8; 4]>::try_from(k.as_slice())
                .ok()
                .map(u32::from_le_bytes)?;
            Some((id, i64_payload(p).ok()?))
        })
        .collect();
    let mut series_last: Records = Vec::new();
    for id in identities.keys() {
        let ts = match (stored_last.get(id), last.get(id)) {
            (Some(a), Some(b)) => (*a).max(*b),
            (Some(a), None) => *a,
            (None, Some(b)) => *b,
            (None, None) => continue,
        };
        series_last.push((id.to_le_bytes().to_vec(), ts.to_le_bytes().to_vec()));
    }
    kept.insert("series_last".into(), series_last);
    let old_next = kept
        .get("meta")
        .and_then(|m| m.iter().find(|(k, _)| k == b"next_segment"))
        .and_then(|(_, p)| u64_payload(p).ok())
        .unwrap_or(0);
    let next = old_next.max(max_segment.map_or(0, |m| m + 1));
    kept.insert(
        "meta".into(),
        vec![
            (b"next_segment".to_vec(), next.to_le_bytes().to_vec()),
            (b"samples".to_vec(), samples_kept.to_le_bytes().to_vec()),
        ],
    );
    kept.insert(
        "aya_format".into(),
        vec![(b"version".to_vec(), FORMAT_VERSION.to_le_bytes().to_vec())],
    );
    for loss in &mut report.series_lost {
        loss.key = identities.get(&loss.id).cloned();
    }
    report.series_lost.sort_by_key(|s| s.id);
    report.samples_kept = samples_kept;
    // Table figures after consistency fixes: segments keep their verified count.
    for t in &mut report.tables {
        if let Some(r) = kept.get(&t.table)
            && t.table != "segments"
            && t.table != "meta"
            && t.table != "series_last"
        {
            t.ok = r.len() as u64;
        }
    }
    Ok(())
}

/// Write `records` (per table, verified payloads) as a new format-2 store at
/// `dst`: to `dst.tmp` first, fsynced, then renamed.
fn write_store(dst: &Path, records: &BTreeMap<String, Records>) -> Result<(), StoreError> {
    let mut tmp = dst.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    {
        let db = db_err!(Database::create(&tmp))?;
        let mut tx = db_err!(db.begin_write())?;
        db_err!(tx.set_durability(Durability::Immediate))?;
        create_tables(&tx)?;
        for table in TABLES {
            if let Some(r) = records.get(table) {
                insert_named(&tx, table, r)?;
            }
        }
        let has_format = records.get("aya_format").is_some_and(|r| !r.is_empty());
        if !has_format {
            insert_named(
                &tx,
                "aya_format",
                &[(b"version".to_vec(), FORMAT_VERSION.to_le_bytes().to_vec())],
            )?;
        }
        db_err!(tx.commit())?;
    }
    std::fs::rename(&tmp, dst).map_err(|source| StoreError::Io {
        path: dst.to_path_buf(),
        what: format!("cannot rename {} to it", tmp.display()),
        source,
    })?;
    if let Some(dir) = dst.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reading a format-1 store (before checksums) for the migration in
/// [`Store::repair`]: every record that decodes is kept.
mod v1 {
    use super::*;

    const SEGMENTS: TableDefinition<'_, (i64, u64), &[u8]> = TableDefinition::new("segments");
    const SERIES: TableDefinition<'_, u32, &str> = TableDefinition::new("series");
    const SERIES_LAST: TableDefinition<'_, u32, i64> = TableDefinition::new("series_last");
    const CLUSTERS: TableDefinition<'_, &str, &str> = TableDefinition::new("clusters");
    const SNAPSHOTS: TableDefinition<'_, &str, &str> = TableDefinition::new("snapshots");
    const OVERRIDES: TableDefinition<'_, &str, &str> = TableDefinition::new("overrides");
    const MODELS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("models");
    const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
    const DEMAND: TableDefinition<'_, (&str, i64), f64> = TableDefinition::new("demand");

    /// Rows of one format-1 table as `(format-2 key bytes, payload)`.
    fn rows<K: redb::Key + 'static, V: redb::Value + 'static>(
        tx: &ReadTransaction,
        def: TableDefinition<'_, K, V>,
        limit: u64,
        conv: &V1Conv<'_, K, V>,
    ) -> (Records, TableReport) {
        let mut rep = TableReport {
            table: def.name().to_string(),
            ..TableReport::default()
        };
        let mut out = Vec::new();
        let walked = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            let t = match tx.open_table(def) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            for (n, row) in t.iter().map_err(|e| e.to_string())?.enumerate() {
                if n as u64 > limit {
                    return Err("the tree loops".into());
                }
                let (k, v) = row.map_err(|e| e.to_string())?;
                match conv(&k.value(), &v.value()) {
                    Some(r) => {
                        rep.ok += 1;
                        out.push(r);
                    }
                    None => rep.bad += 1,
                }
            }
            Ok(())
        }));
        match walked {
            Ok(Ok(())) => {}
            Ok(Err(e)) => rep.unreadable = Some(e),
            Err(p) => rep.unreadable = Some(format!("redb panicked: {}", panic_text(&*p))),
        }
        (out, rep)
    }

    /// Read every format-1 table into format-2 records.
    pub(super) fn read(
        tx: &ReadTransaction,
        limit: u64,
        kept: &mut BTreeMap<String, Records>,
    ) -> (Vec<TableReport>, Vec<String>) {
        let mut reports = Vec::new();
        let mut add = |name: &str, (records, rep): (Records, TableReport)| {
            kept.insert(name.to_string(), records);
            reports.push(rep);
        };
        add(
            "segments",
            rows(tx, SEGMENTS, limit, &|k, v| {
                v.len()
                    .is_multiple_of(SAMPLE_BYTES)
                    .then(|| (key_bytes::<(i64, u64)>(k), v.to_vec()))
            }),
        );
        add(
            "series",
            rows(tx, SERIES, limit, &|k, v| {
                serde_json::from_str::<SeriesKey>(v)
                    .ok()
                    .map(|_| (k.to_le_bytes().to_vec(), v.as_bytes().to_vec()))
            }),
        );
        add(
            "series_last",
            rows(tx, SERIES_LAST, limit, &|k, v| {
                Some((k.to_le_bytes().to_vec(), v.to_le_bytes().to_vec()))
            }),
        );
        for (name, def) in [
            ("clusters", CLUSTERS),
            ("snapshots", SNAPSHOTS),
            ("overrides", OVERRIDES),
        ] {
            add(
                name,
                rows(tx, def, limit, &|k, v| {
                    Some((k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                }),
            );
        }
        add(
            "models",
            rows(tx, MODELS, limit, &|k, v| {
                Some((k.as_bytes().to_vec(), v.to_vec()))
            }),
        );
        add(
            "meta",
            rows(tx, META, limit, &|k, v| {
                Some((k.as_bytes().to_vec(), v.to_le_bytes().to_vec()))
            }),
        );
        add(
            "demand",
            rows(tx, DEMAND, limit, &|k, v| {
                // Re-encode the key as format 2's (bytes, i64).
                let key = (k.0.as_bytes(), k.1);
                Some((key_bytes::<(Bytes, i64)>(&key), v.to_le_bytes().to_vec()))
            }),
        );
        let problems = reports
            .iter()
            .filter_map(|r| {
                r.unreadable
                    .as_ref()
                    .map(|u| format!("table {}: cannot be read to its end: {u}", r.table))
            })
            .collect();
        (reports, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_and_open_survive_a_file_redb_panics_on_when_closing() {
        // Found by the fuzz/ `store` target: redb's Database drop (its
        // allocator-state commit) panicked outside the guard of `check`.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(STORE_FILE);
        let bytes = include_bytes!("../tests/data/fuzz-store-check-close.redb");
        std::fs::write(&file, bytes).unwrap();
        let report = Store::check(&file).unwrap();
        assert!(!report.is_ok(), "{:?}", report.problems);
        std::fs::write(&file, bytes).unwrap();
        if let Ok(store) = Store::open_with(dir.path(), OpenMode::Existing) {
            let _ = store.restore();
        }
    }

    #[test]
    fn segments_survive_reopen_and_retention_deletes_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let key = SeriesKey {
            cluster: "c".into(),
            backend: "b".into(),
            metric: "m".into(),
            kind: 1,
            labels: BTreeMap::new(),
        };
        {
            let s = Store::open_with(dir.path(), OpenMode::Init).unwrap();
            let mut w = SegmentWrite::default();
            w.push(7, 1_000, 1.5);
            w.push(7, 2_000, 2.5);
            w.new_series.push((7, key.clone()));
            w.last.push((7, 2_000));
            s.write_segment(0, &w).unwrap();
            let mut w2 = SegmentWrite::default();
            w2.push(7, 9_000, 3.5);
            w2.last.push((7, 9_000));
            s.write_segment(1, &w2).unwrap();
            s.put_model("m", b"abc").unwrap();
        }
        let s = Store::open_with(dir.path(), OpenMode::Init).unwrap();
        let r = s.restore().unwrap();
        assert_eq!(r.series.len(), 1);
        assert_eq!(r.series[0].key, key);
        assert_eq!(r.series[0].last_ms, 9_000);
        assert_eq!(r.next_segment, 2);
        assert_eq!(r.samples, 3);
        assert_eq!(s.get_model("m").unwrap().as_deref(), Some(&b"abc"[..]));
        let mut seen = Vec::new();
        s.scan(0, |id, ts, v| seen.push((id, ts, v))).unwrap();
        assert_eq!(
            seen,
            vec![(7, 1_000, 1.5), (7, 2_000, 2.5), (7, 9_000, 3.5)]
        );
        assert_eq!(s.retain(5_000).unwrap(), 2);
        let mut seen = Vec::new();
        s.scan(0, |id, ts, v| seen.push((id, ts, v))).unwrap();
        assert_eq!(seen, vec![(7, 9_000, 3.5)]);
        assert_eq!(s.restore().unwrap().samples, 1);
    }

    #[test]
    fn demand_and_models_survive_reopen_and_are_deleted_per_cluster() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open_with(dir.path(), OpenMode::Init).unwrap();
            let pts: Vec<(String, i64, f64)> =
                [("a", 1_000, 1.0), ("b", 1_500, 9.0), ("a", 2_000, 2.0)]
                    .iter()
                    .map(|(c, t, v)| (c.to_string(), *t, *v))
                    .collect();
            s.append_demand(&pts).unwrap();
            s.put_model("demand/a", b"model").unwrap();
            s.sync().unwrap();
        }
        let s = Store::open_with(dir.path(), OpenMode::Init).unwrap();
        assert_eq!(s.demand("a", 0).unwrap(), vec![(1_000, 1.0), (2_000, 2.0)]);
        assert_eq!(s.demand("a", 1_001).unwrap(), vec![(2_000, 2.0)]);
        assert_eq!(s.demand("b", 0).unwrap(), vec![(1_500, 9.0)]);
        assert_eq!(s.retain_demand("a", 1_500).unwrap(), 1);
        assert_eq!(s.demand("a", 0).unwrap(), vec![(2_000, 2.0)]);
        assert_eq!(s.retain_demand("b", i64::MAX).unwrap(), 1);
        assert!(s.demand("b", 0).unwrap().is_empty());
        assert_eq!(
            s.demand("a", 0).unwrap().len(),
            1,
            "other clusters untouched"
        );
        assert!(s.delete_model("demand/a").unwrap());
        assert!(!s.delete_model("demand/a").unwrap());
        assert!(s.get_model("demand/a").unwrap().is_none());
    }
}
