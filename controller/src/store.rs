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

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
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
    /// The data directory could not be created.
    #[error("store: cannot create data directory {path}")]
    Dir {
        /// Directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

macro_rules! db_err {
    ($e:expr) => {
        $e.map_err(|e| StoreError::Db(e.into()))
    };
}

const SEGMENTS: TableDefinition<'_, (i64, u64), &[u8]> = TableDefinition::new("segments");
const SERIES: TableDefinition<'_, u32, &str> = TableDefinition::new("series");
const SERIES_LAST: TableDefinition<'_, u32, i64> = TableDefinition::new("series_last");
const CLUSTERS: TableDefinition<'_, &str, &str> = TableDefinition::new("clusters");
const SNAPSHOTS: TableDefinition<'_, &str, &str> = TableDefinition::new("snapshots");
const OVERRIDES: TableDefinition<'_, &str, &str> = TableDefinition::new("overrides");
const MODELS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("models");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const DEMAND: TableDefinition<'_, (&str, i64), f64> = TableDefinition::new("demand");

/// Bytes per packed sample in a segment.
pub const SAMPLE_BYTES: usize = 20;

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

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn corrupt(table: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        message: message.into(),
    }
}

impl Store {
    /// Open (or create) `dir/aya.redb`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let db = db_err!(Database::create(dir.join("aya.redb")))?;
        let store = Store { db: Arc::new(db) };
        // Create every table so that readers never see "table does not exist".
        let tx = db_err!(store.db.begin_write())?;
        {
            db_err!(tx.open_table(SEGMENTS))?;
            db_err!(tx.open_table(SERIES))?;
            db_err!(tx.open_table(SERIES_LAST))?;
            db_err!(tx.open_table(CLUSTERS))?;
            db_err!(tx.open_table(SNAPSHOTS))?;
            db_err!(tx.open_table(OVERRIDES))?;
            db_err!(tx.open_table(MODELS))?;
            db_err!(tx.open_table(META))?;
            db_err!(tx.open_table(DEMAND))?;
        }
        db_err!(tx.commit())?;
        Ok(store)
    }

    /// Read everything needed to resume.
    pub fn restore(&self) -> Result<Restored, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let mut out = Restored::default();
        let series = db_err!(tx.open_table(SERIES))?;
        let last = db_err!(tx.open_table(SERIES_LAST))?;
        for row in db_err!(series.iter())? {
            let (id, json) = db_err!(row)?;
            let key: SeriesKey = serde_json::from_str(json.value())
                .map_err(|e| corrupt("series", format!("id {}: {e}", id.value())))?;
            let last_ms = db_err!(last.get(id.value()))?
                .map(|g| g.value())
                .unwrap_or(i64::MIN);
            out.series.push(StoredSeries {
                id: id.value(),
                key,
                last_ms,
            });
        }
        for (table, dst) in [
            (CLUSTERS, &mut out.clusters),
            (SNAPSHOTS, &mut out.snapshots),
            (OVERRIDES, &mut out.overrides),
        ] {
            let t = db_err!(tx.open_table(table))?;
            for row in db_err!(t.iter())? {
                let (_, v) = db_err!(row)?;
                dst.push(v.value().to_string());
            }
        }
        let meta = db_err!(tx.open_table(META))?;
        out.next_segment = db_err!(meta.get("next_segment"))?
            .map(|g| g.value())
            .unwrap_or(0);
        out.samples = db_err!(meta.get("samples"))?
            .map(|g| g.value())
            .unwrap_or(0);
        Ok(out)
    }

    /// Commit one segment durably (fsync before returning). `segment` is its number.
    pub fn write_segment(&self, segment: u64, w: &SegmentWrite) -> Result<(), StoreError> {
        let mut tx = db_err!(self.db.begin_write())?;
        db_err!(tx.set_durability(Durability::Immediate))?;
        {
            let mut seg = db_err!(tx.open_table(SEGMENTS))?;
            db_err!(seg.insert((w.max_ms, segment), w.packed.as_slice()))?;
            let mut series = db_err!(tx.open_table(SERIES))?;
            for (id, key) in &w.new_series {
                let json =
                    serde_json::to_string(key).map_err(|e| corrupt("series", e.to_string()))?;
                db_err!(series.insert(*id, json.as_str()))?;
            }
            let mut last = db_err!(tx.open_table(SERIES_LAST))?;
            for (id, ts) in &w.last {
                db_err!(last.insert(*id, *ts))?;
            }
            let mut meta = db_err!(tx.open_table(META))?;
            let n = db_err!(meta.get("samples"))?
                .map(|g| g.value())
                .unwrap_or(0);
            db_err!(meta.insert("samples", n + w.len() as u64))?;
            db_err!(meta.insert("next_segment", segment + 1))?;
        }
        db_err!(tx.commit())?;
        Ok(())
    }

    /// Visit every stored sample in segments whose newest sample is at or
    /// after `from_ms`, as `(series id, ts ms, value)`.
    pub fn scan(&self, from_ms: i64, mut f: impl FnMut(u32, i64, f64)) -> Result<(), StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let seg = db_err!(tx.open_table(SEGMENTS))?;
        for row in db_err!(seg.range((from_ms, 0u64)..))? {
            let (_, v) = db_err!(row)?;
            for (id, ts, val) in unpack(v.value()) {
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
                removed += (v.len() / SAMPLE_BYTES) as u64;
                false
            }))?;
            let mut meta = db_err!(tx.open_table(META))?;
            let n = db_err!(meta.get("samples"))?
                .map(|g| g.value())
                .unwrap_or(0);
            db_err!(meta.insert("samples", n.saturating_sub(removed)))?;
        }
        db_err!(tx.commit())?;
        Ok(removed)
    }

    fn put_str(
        &self,
        table: TableDefinition<'_, &str, &str>,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = db_err!(self.db.begin_write())?;
        db_err!(tx.set_durability(Durability::Immediate))?;
        {
            let mut t = db_err!(tx.open_table(table))?;
            match value {
                Some(v) => {
                    db_err!(t.insert(key, v))?;
                }
                None => {
                    db_err!(t.remove(key))?;
                }
            }
        }
        db_err!(tx.commit())?;
        Ok(())
    }

    /// Store (or with `None` delete) a cluster configuration.
    pub fn put_cluster(&self, name: &str, json: Option<&str>) -> Result<(), StoreError> {
        self.put_str(CLUSTERS, name, json)
    }

    /// Store (or delete) a cluster's last published snapshot.
    pub fn put_snapshot(&self, cluster: &str, json: Option<&str>) -> Result<(), StoreError> {
        self.put_str(SNAPSHOTS, cluster, json)
    }

    /// Store (or delete) a cluster's override.
    pub fn put_override(&self, cluster: &str, json: Option<&str>) -> Result<(), StoreError> {
        self.put_str(OVERRIDES, cluster, json)
    }

    /// Store a model artifact under `name`.
    pub fn put_model(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let mut tx = db_err!(self.db.begin_write())?;
        db_err!(tx.set_durability(Durability::Immediate))?;
        {
            let mut t = db_err!(tx.open_table(MODELS))?;
            db_err!(t.insert(name, bytes))?;
        }
        db_err!(tx.commit())?;
        Ok(())
    }

    /// A model artifact.
    pub fn get_model(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let t = db_err!(tx.open_table(MODELS))?;
        Ok(db_err!(t.get(name))?.map(|g| g.value().to_vec()))
    }

    /// Delete a model artifact. Returns whether it existed.
    pub fn delete_model(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = db_err!(self.db.begin_write())?;
        db_err!(tx.set_durability(Durability::Immediate))?;
        let existed = {
            let mut t = db_err!(tx.open_table(MODELS))?;
            db_err!(t.remove(name))?.is_some()
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
                db_err!(t.insert((cluster.as_str(), *ts), *v))?;
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

    /// Demand points of `cluster` at or after `from_ms`, oldest first.
    pub fn demand(&self, cluster: &str, from_ms: i64) -> Result<Vec<(i64, f64)>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let t = db_err!(tx.open_table(DEMAND))?;
        let mut out = Vec::new();
        for row in db_err!(t.range((cluster, from_ms)..=(cluster, i64::MAX)))? {
            let (k, v) = db_err!(row)?;
            out.push((k.value().1, v.value()));
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
            db_err!(
                t.retain_in((cluster, i64::MIN)..(cluster, cutoff_ms), |_, _| {
                    removed += 1;
                    false
                })
            )?;
        }
        db_err!(tx.commit())?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let s = Store::open(dir.path()).unwrap();
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
        let s = Store::open(dir.path()).unwrap();
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
            let s = Store::open(dir.path()).unwrap();
            let pts: Vec<(String, i64, f64)> =
                [("a", 1_000, 1.0), ("b", 1_500, 9.0), ("a", 2_000, 2.0)]
                    .iter()
                    .map(|(c, t, v)| (c.to_string(), *t, *v))
                    .collect();
            s.append_demand(&pts).unwrap();
            s.put_model("demand/a", b"model").unwrap();
            s.sync().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
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
