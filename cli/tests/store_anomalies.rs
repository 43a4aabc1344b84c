//! `aya anomalies` scores a series point by point, and `aya store check` tells a
//! sound store from a damaged one with the documented exit codes.

use std::process::Command;

use aya_controller::store::{OpenMode, STORE_FILE, Store};

fn aya(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aya"))
        .args(args)
        .output()
        .expect("the aya binary runs")
}

#[test]
fn anomalies_flags_the_spike_and_only_it() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("s.csv");
    // Three days at 5 minutes of a daily sine with small deterministic noise, one
    // spike near the end.
    let mut text = String::from("timestamp,value\n");
    let n = 3 * 288;
    let spike = n - 40;
    for i in 0..n {
        let t = 1_700_000_000 + 300 * i as i64;
        let base = 100.0 + 20.0 * (i as f64 * std::f64::consts::TAU / 288.0).sin();
        let noise = ((i * 7919) % 13) as f64 / 13.0;
        let v = if i == spike { 400.0 } else { base + noise };
        text.push_str(&format!("{t},{v}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let out = aya(&["anomalies", "--input", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows[0], "timestamp,value,score,likelihood,reason");
    assert_eq!(rows.len(), n + 1, "one row per point");
    let score = |r: &str| r.split(',').nth(2).unwrap().parse::<f64>().unwrap();
    let best = (1..rows.len())
        .max_by(|&a, &b| score(rows[a]).total_cmp(&score(rows[b])))
        .unwrap();
    assert_eq!(best - 1, spike, "the spike scores highest: {}", rows[best]);
    assert!(score(rows[best]) >= 0.5, "{}", rows[best]);

    // --threshold keeps only the anomalous points.
    let out = aya(&[
        "anomalies",
        "--input",
        csv.to_str().unwrap(),
        "--threshold",
        "0.5",
    ]);
    assert!(out.status.success(), "{out:?}");
    let kept = String::from_utf8(out.stdout).unwrap();
    assert!(
        kept.lines().count() >= 2 && kept.lines().count() < 20,
        "{kept}"
    );

    // Bad input: exit 3 naming the file; a bad threshold is a usage error.
    std::fs::write(&csv, "timestamp,value\n2024-01-01T00:00:00Z,abc\n").unwrap();
    let out = aya(&["anomalies", "--input", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("s.csv"));
    let out = aya(&["anomalies", "--input", "x.csv", "--threshold", "2"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn store_check_passes_a_sound_store_and_fails_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open_with(dir.path(), OpenMode::Init).unwrap());
    let file = dir.path().join(STORE_FILE);
    let out = aya(&["store", "check", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    // Garbage where the store should be: an error, never a panic (exit 101).
    std::fs::write(&file, vec![0xA5u8; 64 * 1024]).unwrap();
    let out = aya(&["store", "check", file.to_str().unwrap()]);
    let code = out.status.code();
    assert!(matches!(code, Some(1) | Some(3)), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(STORE_FILE)
            || String::from_utf8_lossy(&out.stdout).contains(STORE_FILE),
        "{out:?}"
    );

    // A zero-length store cannot be backed up as if it were a store.
    std::fs::write(&file, b"").unwrap();
    let dst = dir.path().join("copy.redb");
    let out = aya(&[
        "store",
        "backup",
        dir.path().to_str().unwrap(),
        dst.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(!dst.exists());
}
