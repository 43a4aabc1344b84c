//! The Numenta Anomaly Benchmark, scored the NAB way (threshold optimised per detector and
//! profile over all files, normalised against the null and perfect detectors), on the shared
//! copy of NAB (`$AYA_DATASETS/nab`, 56 of NAB's 58 files).
//!
//! ```text
//! cargo run --release -p aya-forecaster --example nab [-- --per-file]
//! ```
//!
//! Prints a markdown table: null, perfect, NAB's windowed-Gaussian baseline (ported) and Aya's
//! streaming detector; three profiles; on all files, on the tune half and on the held-out half
//! (a fixed hash of the file name, [`nab::is_held_out`]); then Aya's detector time per point
//! over the whole corpus (single thread, scoring only, files already in memory).

use std::time::Instant;

use aya_forecaster::anomaly::gaussian::WindowedGaussian;
use aya_forecaster::anomaly::nab::{self, Corpus};
use aya_forecaster::anomaly::{DetectorConfig, detect_series};
use aya_forecaster::data::datasets_dir;

/// Which files a row of the table keeps.
type Keep = fn(&str) -> bool;

fn main() -> anyhow::Result<()> {
    let per_file = std::env::args().any(|a| a == "--per-file");
    let root = datasets_dir().join("nab");
    let corpus = Corpus::load(&root)?;
    let rows: usize = corpus.files.iter().map(|f| f.series.values.len()).sum();
    println!(
        "NAB corpus at {}: {} files, {} rows, {} windows\n",
        root.display(),
        corpus.files.len(),
        rows,
        corpus.window_count()
    );

    let config = DetectorConfig::default();
    let start = Instant::now();
    let aya: Vec<Vec<f64>> = corpus
        .files
        .iter()
        .map(|f| {
            detect_series(&config, &f.series.timestamps, &f.series.values)
                .iter()
                .map(|s| s.value)
                .collect()
        })
        .collect();
    let elapsed = start.elapsed();
    let gaussian: Vec<Vec<f64>> = corpus
        .files
        .iter()
        .map(|f| WindowedGaussian::score_series(&f.series.values))
        .collect();
    let null: Vec<Vec<f64>> = corpus
        .files
        .iter()
        .map(|f| vec![0.5; f.series.values.len()])
        .collect();
    let perfect: Vec<Vec<f64>> = corpus.files.iter().map(|f| f.perfect_scores()).collect();

    let detectors: [(&str, &[Vec<f64>]); 4] = [
        ("null", &null),
        ("perfect", &perfect),
        ("windowed Gaussian (NAB baseline, ported)", &gaussian),
        ("Aya streaming detector", &aya),
    ];
    let splits: [(&str, Keep); 3] = [
        ("all 56", |_| true),
        ("tune half", |n| !nab::is_held_out(n)),
        ("held-out half", nab::is_held_out),
    ];

    println!("| detector | files | standard | reward_low_FP_rate | reward_low_FN_rate |");
    println!("|---|---|---|---|---|");
    for (name, scores) in detectors {
        for (split, keep) in splits {
            let subset = corpus.subset(keep);
            let kept: Vec<Vec<f64>> = corpus
                .files
                .iter()
                .zip(scores)
                .filter(|(f, _)| keep(&f.series.name))
                .map(|(_, s)| s.clone())
                .collect();
            let result = nab::score(&subset, &kept)?;
            let cells: Vec<String> = result
                .iter()
                .map(|r| {
                    format!(
                        "{:.1} (t {:.4}, {}/{} windows, {} FP)",
                        r.normalized,
                        r.best.threshold,
                        r.best.detected,
                        r.best.detected + r.best.missed,
                        r.best.false_positives
                    )
                })
                .collect();
            println!(
                "| {name} | {split} ({} files) | {} |",
                subset.files.len(),
                cells.join(" | ")
            );
        }
    }
    println!(
        "\nAya detector: {:.0} ns per point ({} points in {:.1} ms, one thread)",
        elapsed.as_nanos() as f64 / rows as f64,
        rows,
        elapsed.as_secs_f64() * 1e3
    );

    if per_file {
        // Per-file raw standard score at the corpus-optimal threshold, to see where points go.
        let best = nab::score(&corpus, &aya)?[0].best.threshold;
        println!("\nPer file (Aya, standard profile, corpus threshold {best:.4}):");
        for (f, s) in corpus.files.iter().zip(&aya) {
            let one = corpus.subset(|n| n == f.series.name);
            let sweep = nab::Sweep::new(&one, std::slice::from_ref(s))?;
            let raw = sweep.score_at(&nab::PROFILES[0], best);
            println!(
                "{:>8.2} raw ({} windows){} {}",
                raw,
                f.windows.len(),
                if nab::is_held_out(&f.series.name) {
                    " held-out"
                } else {
                    ""
                },
                f.series.name
            );
        }
    }
    Ok(())
}
