//! The NAB scorer reproduces NAB's rules (hand-computed cases), the null and perfect detectors
//! score 0 and 100 on the shared copy of NAB, NAB's windowed-Gaussian baseline scores close to its
//! published figures, and Aya's streaming detector is causal and beats floors it genuinely reaches.
//!
//! If `$AYA_DATASETS/nab` is absent (fresh clone without the shared folder) the data tests print a
//! note and return; the hand-computed cases always run.

use aya_forecaster::anomaly::gaussian::{WindowedGaussian, erfc};
use aya_forecaster::anomaly::nab::{
    self, Corpus, LabelledSeries, PROFILES, Series, Sweep, probationary_len, scaled_sigmoid,
};
use aya_forecaster::anomaly::{Detector, DetectorConfig, detect_series};
use aya_forecaster::data::datasets_dir;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// 100 rows (probation 15), one window on rows 50..=59.
fn toy() -> Corpus {
    let series = Series {
        name: "toy.csv".into(),
        timestamps: (0..100).map(|i| i * 300_000).collect(),
        values: vec![0.0; 100],
    };
    Corpus {
        files: vec![LabelledSeries {
            series,
            windows: vec![(50, 59)],
        }],
    }
}

fn with_detections(rows: &[usize]) -> Vec<Vec<f64>> {
    let mut s = vec![0.0; 100];
    for &r in rows {
        s[r] = 1.0;
    }
    vec![s]
}

#[test]
fn scaled_sigmoid_matches_nab() {
    // NAB's docstring: -1 -> 0.98661, -0.5 -> 0.84828, 0 -> 0, 1 -> -0.98661, >= 3 -> -1.
    assert!(close(scaled_sigmoid(-1.0), 0.98661, 1e-5));
    assert!(close(scaled_sigmoid(-0.5), 0.84828, 1e-5));
    assert!(close(scaled_sigmoid(0.0), 0.0, 1e-12));
    assert!(close(scaled_sigmoid(1.0), -0.98661, 1e-5));
    assert_eq!(scaled_sigmoid(3.0), -1.0);
    assert_eq!(probationary_len(100), 15);
    assert_eq!(probationary_len(22695), 750);
    assert!(close(erfc(0.0), 1.0, 1e-7) && close(erfc(1.0), 0.157_299_207, 1e-7));
}

#[test]
fn hand_computed_scores() {
    let corpus = toy();
    let std = &PROFILES[0];
    let at = |rows: &[usize], p: &nab::Profile| {
        Sweep::new(&corpus, &with_detections(rows))
            .unwrap()
            .score_at(p, 0.5)
    };
    // Nothing detected: one missed window.
    assert!(close(at(&[], std), -1.0, 1e-12));
    assert!(close(at(&[], &PROFILES[2]), -2.0, 1e-12));
    // First row of the window earns the full TP weight; later detections in it add nothing.
    assert!(close(at(&[50, 55, 59], std), 1.0, 1e-12));
    // Last row: S(-1/10) / S(-1).
    let last = scaled_sigmoid(-0.1) / scaled_sigmoid(-1.0);
    assert!(close(at(&[59], std), last, 1e-12));
    // A false positive before any window costs the full FP weight (0.11 / 0.22).
    assert!(close(at(&[20, 50], std), 1.0 - 0.11, 1e-12));
    assert!(close(at(&[20, 50], &PROFILES[1]), 1.0 - 0.22, 1e-12));
    // Detections in the probationary period do not count at all.
    assert!(close(at(&[3, 50], std), 1.0, 1e-12));
    // A false positive right after the window is forgiven partly: S(d), d = 1 / (width - 1).
    let after = 0.11 * scaled_sigmoid(1.0 / 9.0);
    assert!(after < 0.0 && after > -0.11);
    assert!(close(at(&[50, 60], std), 1.0 + after, 1e-12));
    // Far after the window (d >= 3) it costs the full weight.
    assert!(close(at(&[50, 90], std), 1.0 - 0.11, 1e-12));
}

#[test]
fn threshold_optimisation_picks_the_best_threshold() {
    let corpus = toy();
    // Window start at 0.6, a false positive at 0.9: the best threshold is 0.6 (1 - 0.11 > -1).
    let mut s = vec![0.0; 100];
    s[50] = 0.6;
    s[30] = 0.9;
    let sweep = Sweep::new(&corpus, &[s.clone()]).unwrap();
    let best = sweep.optimise(&PROFILES[0]);
    assert_eq!(best.threshold, 0.6);
    assert!(close(best.raw, 1.0 - 0.11, 1e-12));
    assert_eq!(
        (best.detected, best.missed, best.false_positives),
        (1, 0, 1)
    );
    // Eleven false positives above the window's score make detecting it not worth it
    // under the low-FP profile (1 - 11 * 0.22 < -1), but still worth it under standard.
    s[20..31].fill(0.9);
    let sweep = Sweep::new(&corpus, &[s]).unwrap();
    assert_eq!(sweep.optimise(&PROFILES[1]).threshold, 1.1);
    assert_eq!(sweep.optimise(&PROFILES[0]).threshold, 0.6);
    // Scores outside [0, 1] and length mismatches are refused with the file named.
    let err = Sweep::new(&corpus, &[vec![2.0; 100]])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("toy.csv") && err.contains("not in [0, 1]"),
        "{err}"
    );
    assert!(Sweep::new(&corpus, &[vec![0.0; 99]]).is_err());
}

#[test]
fn detector_is_causal_and_deterministic() {
    // Scores of a prefix do not depend on what follows (no look-ahead).
    let values: Vec<f64> = (0..2000)
        .map(|i| (i as f64 * 0.05).sin() * 10.0 + if i == 1500 { 40.0 } else { 0.0 })
        .collect();
    let ts: Vec<i64> = (0..2000).map(|i| i * 60_000).collect();
    let config = DetectorConfig::default();
    let full = detect_series(&config, &ts, &values);
    let prefix = detect_series(&config, &ts[..1200], &values[..1200]);
    assert_eq!(&full[..1200], &prefix[..]);
    assert!(full.iter().all(|s| (0.0..=1.0).contains(&s.value)));
    // The injected spike is the most anomalous point after warm-up, and it is explained.
    let top = (config.warmup..2000).max_by(|&a, &b| full[a].value.total_cmp(&full[b].value));
    assert_eq!(top, Some(1500));
    assert!(full[1500].value >= 0.5, "{}", full[1500]);
    assert!(
        full[1500].explanation().contains("highest"),
        "{}",
        full[1500]
    );
    // A non-finite value is ignored, not learned.
    let mut d = Detector::new(config);
    assert_eq!(d.update(0, f64::NAN).value, 0.0);
    assert_eq!(d.seen(), 0);
}

fn corpus() -> Option<Corpus> {
    let root = datasets_dir().join("nab");
    if !root.join("labels").join("combined_windows.json").is_file() {
        eprintln!("note: {} absent, NAB data tests skipped", root.display());
        return None;
    }
    Some(Corpus::load(&root).expect("the shared NAB copy loads"))
}

#[test]
fn null_and_perfect_score_0_and_100() {
    let Some(corpus) = corpus() else { return };
    assert_eq!(corpus.files.len(), 56);
    assert_eq!(corpus.window_count(), 113);
    let null: Vec<Vec<f64>> = corpus
        .files
        .iter()
        .map(|f| vec![0.5; f.series.values.len()])
        .collect();
    let perfect: Vec<Vec<f64>> = corpus.files.iter().map(|f| f.perfect_scores()).collect();
    for r in nab::score(&corpus, &null).unwrap() {
        assert!(close(r.normalized, 0.0, 1e-9), "{r:?}");
        assert_eq!(r.best.threshold, 1.1);
    }
    for r in nab::score(&corpus, &perfect).unwrap() {
        assert!(close(r.normalized, 100.0, 1e-9), "{r:?}");
    }
}

/// NAB's windowed Gaussian scores 39.6 / 20.9 / 47.4 on NAB's 58 files; these 56 files (two EC2
/// CPU series fewer) give close figures. The measured values are in `docs/anomaly.md`.
#[test]
fn windowed_gaussian_scores_close_to_published() {
    let Some(corpus) = corpus() else { return };
    let scores: Vec<Vec<f64>> = corpus
        .files
        .iter()
        .map(|f| WindowedGaussian::score_series(&f.series.values))
        .collect();
    let result = nab::score(&corpus, &scores).unwrap();
    let published = [39.6, 20.9, 47.4];
    for (r, p) in result.iter().zip(published) {
        assert!(
            close(r.normalized, p, GAUSSIAN_TOLERANCE),
            "{} {:.2} vs {p}",
            r.profile.name,
            r.normalized
        );
    }
}

/// Allowed gap to the published windowed-Gaussian figures (the corpus differs by two files;
/// measured 40.4 / 23.8 / 48.2, the largest gap 2.9 on low FP).
const GAUSSIAN_TOLERANCE: f64 = 3.5;

/// Aya's detector on the artificial files and a few real ones (fast in debug builds): floors it
/// genuinely reaches (measured, minus a margin), so a regression fails.
#[test]
fn detector_beats_floors_on_a_subset() {
    let Some(corpus) = corpus() else { return };
    let subset = corpus.subset(|n| {
        n.starts_with("artificial")
            || n.contains("ec2_cpu_utilization_825cc2")
            || n.contains("rogue_agent_key_hold")
            || n.contains("exchange-2_cpc")
    });
    let config = DetectorConfig::default();
    let scores: Vec<Vec<f64>> = subset
        .files
        .iter()
        .map(|f| {
            detect_series(&config, &f.series.timestamps, &f.series.values)
                .iter()
                .map(|s| s.value)
                .collect()
        })
        .collect();
    let result = nab::score(&subset, &scores).unwrap();
    let measured: Vec<f64> = result.iter().map(|r| r.normalized).collect();
    eprintln!("subset scores (standard, low FP, low FN): {measured:.2?}");
    for (r, floor) in result.iter().zip(SUBSET_FLOORS) {
        assert!(
            r.normalized >= floor,
            "{} {:.2} < {floor}",
            r.profile.name,
            r.normalized
        );
    }
}

/// Standard / low FP / low FN floors on the subset above (measured 50.3 / 48.5 / 53.5).
const SUBSET_FLOORS: [f64; 3] = [47.0, 45.0, 50.0];
