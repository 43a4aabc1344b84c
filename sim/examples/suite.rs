//! Run Aya's broad generated scenario suite (issue 11) and write its report.
//!
//! `cargo run --release -p aya-sim --example suite -- --out out/suite [--split test|tune|all] [--smoke] [--seed N]`

use std::path::PathBuf;

use aya_sim::suite::{Kind, Split, SuiteConfig, SuiteForecaster, run_and_report};

fn main() -> anyhow::Result<()> {
    let mut cfg = SuiteConfig::new();
    let mut out = PathBuf::from("out/suite");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => {
                out = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| anyhow::anyhow!("--out needs a directory"))?
            }
            "--split" => {
                cfg.split = match args.next().as_deref() {
                    Some("test") => Some(Split::Test),
                    Some("tune") => Some(Split::Tune),
                    Some("all") => None,
                    other => anyhow::bail!("--split must be test, tune or all, got {other:?}"),
                }
            }
            "--seed" => {
                cfg.seed = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--seed needs an integer"))?
            }
            "--datasets" => {
                cfg.datasets = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| anyhow::anyhow!("--datasets needs a directory"))?
            }
            "--smoke" => cfg.smoke = true,
            "--kind" => {
                cfg.kind = match args.next().as_deref() {
                    Some("balancing") => Some(Kind::Balancing),
                    Some("autoscaling") => Some(Kind::Autoscaling),
                    other => {
                        anyhow::bail!("--kind must be balancing or autoscaling, got {other:?}")
                    }
                }
            }
            "--only" => cfg.only = args.next(),
            "--forecaster" => {
                cfg.forecaster = args
                    .next()
                    .as_deref()
                    .and_then(SuiteForecaster::parse)
                    .ok_or_else(|| anyhow::anyhow!("--forecaster must be naive, online or warm"))?
            }
            "--aya-params" => cfg.aya_params = args.next(),
            "--data-plane-outlier-5xx" => {
                cfg.data_plane_outlier_5xx = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--data-plane-outlier-5xx needs an integer"))?
            }
            other => anyhow::bail!(
                "unknown argument {other:?}; allowed: --out DIR, --split test|tune|all, --seed N, --datasets DIR, --smoke, --kind balancing|autoscaling, --only ID-PART, --aya-params TOML, --forecaster naive|online|warm, --data-plane-outlier-5xx N"
            ),
        }
    }
    let t0 = std::time::Instant::now();
    let res = run_and_report(&cfg, &out)?;
    print!("{}", aya_sim::suite::report::summary_table(&res.summaries));
    println!(
        "{} balancing + {} autoscaling scenarios, {} replications, {:.0} s wall; report in {}",
        res.balancing.len(),
        res.autoscaling.len(),
        res.runs,
        t0.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}
