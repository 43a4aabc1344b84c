//! Scenario generation: balancing pools and autoscaling traces.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::Context;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::Serialize;

use crate::scenario::Scenario;

/// Balancing or autoscaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Weights/algorithm on a fixed pool: Aya vs P2C and peak-EWMA.
    Balancing,
    /// Replica count on a trace: Aya vs HPA's frontier.
    Autoscaling,
}

/// Tune or test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Engine rules may be tuned on these.
    Tune,
    /// Reported; never tuned on.
    Test,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Tune => "tune",
            Split::Test => "test",
        })
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// Suite seed: the same seed gives the same scenarios.
    pub seed: u64,
    /// Keep only this split (None = both).
    pub split: Option<Split>,
    /// A handful of short scenarios (for `cargo test`).
    pub smoke: bool,
    /// Shared datasets directory (WorldCup98, NAB, Azure LLM).
    pub datasets: PathBuf,
    /// Keep only this kind (None = both).
    pub kind: Option<Kind>,
    /// Keep only scenarios whose id contains this text.
    pub only: Option<String>,
    /// Parameters given to the `aya` policy, as the inside of a TOML inline
    /// table (`objective = "latency", trend_window = 0`); None = defaults.
    /// For comparing a candidate configuration on the same suite.
    pub aya_params: Option<String>,
    /// The demand forecaster of the autoscaling scenarios.
    pub forecaster: SuiteForecaster,
    /// Envoy's consecutive-5xx outlier detection configured on the data
    /// plane of every balancing scenario (`[data_plane]
    /// outlier_consecutive_5xx`, Envoy's other defaults: 30 s, 10 %), so that
    /// the baselines run with it too; 0 (the default): none, as an Envoy
    /// cluster without `outlier_detection`. Aya's published setting replaces
    /// it from its first decision.
    pub data_plane_outlier_5xx: u32,
}

/// The demand forecaster the autoscaling scenarios run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SuiteForecaster {
    /// The random walk (`naive`): the reference the league runs.
    #[default]
    Naive,
    /// The controller's online ML forecaster (`online`, one bucket per
    /// 15 s control tick), cold: it learns from the replayed window only.
    Online,
    /// The online forecaster warm-started from the trace's own history
    /// before the window (`forecaster.warm_start`), as a deployed Aya holds
    /// it in its store, with the trace's daily season where it has one.
    /// Traces without earlier history (Azure, most synthetic families)
    /// stay cold.
    Warm,
}

impl SuiteForecaster {
    /// Parse `naive` or `online`.
    pub fn parse(s: &str) -> Option<SuiteForecaster> {
        match s {
            "naive" => Some(SuiteForecaster::Naive),
            "online" => Some(SuiteForecaster::Online),
            "warm" => Some(SuiteForecaster::Warm),
            _ => None,
        }
    }
}

/// The `[forecaster]` table body for `f` on trace `a`.
fn forecaster_block(f: SuiteForecaster, a: &Auto) -> String {
    match f {
        SuiteForecaster::Naive => "name = \"naive\"".into(),
        SuiteForecaster::Warm if !a.history.is_empty() => {
            let season = a
                .season
                .map(|m| format!(", season = {m}"))
                .unwrap_or_default();
            format!(
                "name = \"online\"\nparams = {{ step_seconds = 15.0{season} }}\nwarm_start = {}",
                a.history.len() as f64 * a.step
            )
        }
        SuiteForecaster::Online | SuiteForecaster::Warm => {
            "name = \"online\"\nparams = { step_seconds = 15.0 }".into()
        }
    }
}

/// Control ticks (forecast steps) of 15 virtual seconds in one day of a
/// trace compressed `compression`×.
fn day_in_ticks(compression: f64) -> usize {
    (86_400.0 / compression / 15.0).round() as usize
}

impl SuiteConfig {
    /// Defaults: seed 11, both splits, full suite, datasets from
    /// `AYA_DATASETS` (or `../shared/datasets`).
    pub fn new() -> SuiteConfig {
        SuiteConfig {
            seed: 11,
            split: None,
            smoke: false,
            datasets: std::env::var_os("AYA_DATASETS")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("../shared/datasets")),
            kind: None,
            only: None,
            aya_params: None,
            forecaster: SuiteForecaster::Naive,
            data_plane_outlier_5xx: 0,
        }
    }
}

impl Default for SuiteConfig {
    fn default() -> Self {
        SuiteConfig::new()
    }
}

/// One generated scenario.
#[derive(Debug, Clone)]
pub struct SuiteScenario {
    /// Unique id (also the scenario name).
    pub id: String,
    /// Family (stratum of the split).
    pub family: String,
    /// Balancing or autoscaling.
    pub kind: Kind,
    /// Tune or test.
    pub split: Split,
    /// Short human description of the draw.
    pub summary: String,
    /// The TOML text it was parsed from.
    pub toml: String,
    /// The parsed scenario.
    pub scenario: Scenario,
}

/// FNV-1a 64 of a string (stable across platforms and releases).
pub fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const SHAPES: [&str; 5] = [
    "homogeneous",
    "two_tier",
    "three_tier",
    "fast_outlier",
    "long_tail",
];
const FAULTS: [&str; 7] = [
    "none", "failure", "slowdown", "degrade", "latency", "flapping", "multi",
];
const SIZES: [usize; 13] = [2, 64, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48];
const CONC: [u32; 6] = [1, 2, 4, 8, 16, 1];
const SERVICES: [&str; 4] = ["exponential", "lognormal", "deterministic", "bimodal"];
const N_BAL: usize = 84;

/// Seeds of the replications: balancing and autoscaling.
pub const BAL_SEEDS: [u64; 3] = [1, 2, 3];
/// Autoscaling seeds.
pub const AUTO_SEEDS: [u64; 2] = [1, 2];
/// HPA targets traced for the frontier.
pub const HPA_TARGETS: [f64; 6] = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8];

struct Bal {
    id: String,
    family: String,
    speeds: Vec<f64>,
    conc: u32,
    ps: bool,
    service: &'static str,
    cv: f64,
    load: f64,
    rate: f64,
    fault: &'static str,
    fault_x: f64,
    delay: f64,
    victim: usize,
}

fn draw_bal(seed: u64, i: usize) -> Bal {
    let mut rng = SmallRng::seed_from_u64(seed ^ fnv(&format!("bal{i}")));
    let shape = SHAPES[i % SHAPES.len()];
    let n = SIZES[(i * 7) % SIZES.len()];
    let speeds: Vec<f64> = match shape {
        "homogeneous" => vec![1.0; n],
        "two_tier" => {
            let fast = rng.random_range(2.0..4.0);
            let k = (n / 2).max(1);
            (0..n).map(|j| if j < k { 1.0 } else { fast }).collect()
        }
        "three_tier" => (0..n).map(|j| [1.0, 2.0, 4.0][j * 3 / n.max(3)]).collect(),
        "fast_outlier" => {
            let fast = rng.random_range(4.0..8.0);
            (0..n)
                .map(|j| if j == n - 1 { fast } else { 1.0 })
                .collect()
        }
        _ => {
            let a = rng.random_range(0.5..1.0);
            (0..n)
                .map(|j| (4.0 * ((j + 1) as f64).powf(-a)).max(0.2))
                .collect()
        }
    };
    let conc = CONC[(i * 5 + i / 13) % CONC.len()];
    let service = SERVICES[(i / 2) % SERVICES.len()];
    let cv = rng.random_range(0.5..3.0);
    let load = rng.random_range(0.30..0.95);
    let rate = rng.random_range(200.0..900.0);
    let fault = FAULTS[i % FAULTS.len()];
    let fault_x = rng.random_range(0.0..1.0);
    let delay = rng.random_range(0.5..10.0);
    let victim = rng.random_range(0..n);
    Bal {
        id: format!("bal{i:03}_{shape}_{n}x{conc}_{fault}"),
        family: shape.to_string(),
        speeds,
        conc,
        ps: rng.random_bool(0.4),
        service,
        cv,
        load,
        rate,
        fault,
        fault_x,
        delay,
        victim,
    }
}

fn render_bal(b: &Bal, scale: f64, aya_params: Option<&str>, outlier_5xx: u32) -> (String, String) {
    let cap: f64 = b.speeds.iter().sum::<f64>() * b.conc as f64;
    let mean = (b.load * cap / b.rate).clamp(0.002, 0.25);
    let rate = b.load * cap / mean;
    let timeout = (50.0 * mean).clamp(1.0, 10.0);
    let warm = 20.0 * scale;
    let scored = 100.0 * scale;
    let n = b.speeds.len();
    let fastest = (0..n)
        .max_by(|&a, &c| b.speeds[a].total_cmp(&b.speeds[c]))
        .unwrap_or(0);
    let other = if b.victim == fastest {
        (fastest + 1) % n
    } else {
        b.victim
    };
    let service = bal_service(b, mean);
    let summary = bal_summary(b, rate);
    let mut t = String::new();
    let _ = writeln!(t, "name = \"{}\"", b.id);
    let _ = writeln!(t, "description = \"{summary}\"");
    let _ = writeln!(
        t,
        "duration = {}\nwarmup = {warm}\ntimeout = {timeout}",
        warm + scored
    );
    let _ = writeln!(t, "seeds = {:?}", BAL_SEEDS);
    let _ = writeln!(t, "\n[workload]\nkind = \"poisson\"\nrate = {rate}");
    let _ = writeln!(t, "\n[service]\n{service}");
    for (j, s) in b.speeds.iter().enumerate() {
        let _ = writeln!(
            t,
            "\n[[backends]]\nname = \"b{j}\"\nspeed = {s}\nconcurrency = {}\ndiscipline = \"{}\"",
            b.conc,
            if b.ps { "ps" } else { "fcfs" }
        );
    }
    let _ = writeln!(t, "\n[data_plane]\nalgorithm = \"least_request\"");
    if outlier_5xx > 0 {
        let _ = writeln!(t, "outlier_consecutive_5xx = {outlier_5xx}");
    }
    bal_faults(&mut t, b, fastest, other, warm, scale);
    let _ = writeln!(
        t,
        "\n[control]\ninterval = 2.0\ntelemetry_interval = 1.0\ntelemetry_delay = {:.2}",
        b.delay
    );
    let _ = writeln!(t, "{}", aya_policy_block(aya_params));
    for p in ["p2c", "peak_ewma"] {
        let _ = writeln!(t, "\n[[policy]]\nname = \"{p}\"");
    }
    (t, summary)
}

/// The `[service]` body of a balancing scenario: its distribution with mean `mean`.
fn bal_service(b: &Bal, mean: f64) -> String {
    match b.service {
        "exponential" => format!("kind = \"exponential\"\nmean = {mean}"),
        "lognormal" => format!("kind = \"lognormal\"\nmean = {mean}\ncv = {:.3}", b.cv),
        "deterministic" => format!("kind = \"deterministic\"\nmean = {mean}"),
        _ => {
            let mut v = vec![0.5 * mean; 9];
            v.push(5.5 * mean);
            let vals: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
            format!("kind = \"empirical\"\nvalues = [{}]", vals.join(", "))
        }
    }
}

/// The one-line description of a balancing scenario.
fn bal_summary(b: &Bal, rate: f64) -> String {
    let n = b.speeds.len();
    format!(
        "{n} backends ({}; speeds {:.2}..{:.2}), concurrency {}, {}, {} service{}, load {:.0} %, {:.0} req/s, fault {}, telemetry delay {:.1} s",
        b.family,
        b.speeds.iter().cloned().fold(f64::INFINITY, f64::min),
        b.speeds.iter().cloned().fold(0.0, f64::max),
        b.conc,
        if b.ps { "PS" } else { "FCFS" },
        b.service,
        if b.service == "lognormal" {
            format!(" cv {:.2}", b.cv)
        } else {
            String::new()
        },
        b.load * 100.0,
        rate,
        b.fault,
        b.delay
    )
}

/// The `[[faults]]` tables of a balancing scenario's fault family.
fn bal_faults(t: &mut String, b: &Bal, fastest: usize, other: usize, warm: f64, scale: f64) {
    let n = b.speeds.len();
    let at = |x: f64| warm + x * scale;
    let fault = |t: &mut String, be: usize, kind: &str, extra: String, start: f64, dur: f64| {
        let _ = writeln!(
            t,
            "\n[[faults]]\nbackend = {be}\nkind = \"{kind}\"\n{extra}start = {start}\nduration = {dur}"
        );
    };
    match b.fault {
        "failure" => fault(t, fastest, "failure", String::new(), at(30.0), 30.0 * scale),
        "slowdown" => fault(
            t,
            other,
            "slowdown",
            format!("factor = {:.3}\n", 0.2 + 0.3 * b.fault_x),
            at(30.0),
            40.0 * scale,
        ),
        "degrade" => fault(
            t,
            fastest,
            "degrade",
            format!("factor = {:.3}\n", 0.15 + 0.2 * b.fault_x),
            at(20.0),
            60.0 * scale,
        ),
        "latency" => fault(
            t,
            other,
            "latency",
            format!("latency = {:.3}\n", 0.1 + 0.4 * b.fault_x),
            at(30.0),
            30.0 * scale,
        ),
        "flapping" => {
            for k in 0..4 {
                fault(
                    t,
                    fastest,
                    "failure",
                    String::new(),
                    at(20.0 + 15.0 * k as f64),
                    5.0 * scale,
                );
            }
        }
        "multi" => {
            fault(t, fastest, "failure", String::new(), at(30.0), 30.0 * scale);
            if n > 1 {
                fault(
                    t,
                    other,
                    "slowdown",
                    "factor = 0.3\n".into(),
                    at(25.0),
                    45.0 * scale,
                );
            }
            let third = (0..n).find(|&j| j != fastest && j != other);
            if let Some(j) = third {
                fault(
                    t,
                    j,
                    "latency",
                    "latency = 0.2\n".into(),
                    at(40.0),
                    20.0 * scale,
                );
            }
        }
        _ => {}
    }
}

/// An autoscaling trace: per-step counts and what it is.
struct Auto {
    id: String,
    family: String,
    /// Counts per step.
    counts: Vec<f64>,
    /// Trace seconds per step.
    step: f64,
    /// Trace seconds per virtual second.
    compression: f64,
    boot: f64,
    peak: f64,
    what: String,
    /// Counts per step before the window (the warm start's history), oldest
    /// first; empty where the trace has none.
    history: Vec<f64>,
    /// The trace's season in 15 s control ticks, where it has a known one.
    season: Option<usize>,
}

fn read_series(path: &Path) -> super::Result<Vec<(String, f64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (k, line) in text.lines().enumerate().skip(1) {
        let mut it = line.split(',');
        let (Some(ts), Some(v)) = (it.next(), it.next()) else {
            continue;
        };
        let v: f64 = v
            .trim()
            .parse()
            .with_context(|| format!("{}:{}: bad value {v:?}", path.display(), k + 1))?;
        out.push((ts.to_string(), v.max(0.0)));
    }
    Ok(out)
}

fn draw_autos(seed: u64, ds: &Path, smoke: bool) -> super::Result<Vec<Auto>> {
    let mut rng = SmallRng::seed_from_u64(seed ^ fnv("auto"));
    let mut out = Vec::new();
    let minutes = if smoke { 60 } else { 240 };
    // WorldCup98 windows.
    if !smoke {
        worldcup_autos(&mut rng, ds, minutes, &mut out)?;
        nab_autos(&mut rng, ds, minutes, &mut out)?;
        azure_autos(&mut rng, ds, &mut out)?;
    }
    synth_autos(&mut rng, minutes, smoke, &mut out)?;
    Ok(out)
}

/// The boot delay of one autoscaling scenario, in whole seconds.
fn draw_boot(rng: &mut SmallRng) -> f64 {
    rng.random_range(30.0..300.0_f64).round()
}

/// Autoscaling scenarios from WorldCup98 windows.
fn worldcup_autos(
    rng: &mut SmallRng,
    ds: &Path,
    minutes: usize,
    out: &mut Vec<Auto>,
) -> super::Result<()> {
    let wc = read_series(&ds.join("worldcup98/worldcup98_requests_per_minute.csv"))?;
    for start in [
        "1998-05-20T12:00",
        "1998-06-10T14:00",
        "1998-06-15T12:00",
        "1998-06-21T06:00",
        "1998-06-24T14:00",
        "1998-06-30T12:00",
        "1998-07-04T10:00",
        "1998-07-12T16:00",
    ] {
        let Some(k) = wc.iter().position(|(t, _)| t.as_str() >= start) else {
            bail!("WorldCup98 has no minute at {start}");
        };
        let counts: Vec<f64> = wc[k..].iter().take(minutes).map(|x| x.1).collect();
        // Three days before the window: a deployed Aya's store.
        let history: Vec<f64> = wc[k.saturating_sub(3 * 1440)..k]
            .iter()
            .map(|x| x.1)
            .collect();
        out.push(Auto {
            history,
            season: Some(day_in_ticks(10.0)),
            id: format!("auto_worldcup_{}", start.replace([':', '-'], "")),
            family: "worldcup98".into(),
            counts,
            step: 60.0,
            compression: 10.0,
            boot: draw_boot(rng),
            peak: rng.random_range(120.0..360.0),
            what: format!("WorldCup98 {minutes} min from {start}Z"),
        });
    }
    Ok(())
}

/// Autoscaling scenarios from NAB series, one row read as one minute.
fn nab_autos(
    rng: &mut SmallRng,
    ds: &Path,
    minutes: usize,
    out: &mut Vec<Auto>,
) -> super::Result<()> {
    for (file, off) in [
        ("realAWSCloudwatch/elb_request_count_8c0756.csv", 0.3),
        ("realKnownCause/nyc_taxi.csv", 0.5),
        ("realTweets/Twitter_volume_AAPL.csv", 0.4),
        ("realTweets/Twitter_volume_GOOG.csv", 0.6),
        ("realTweets/Twitter_volume_FB.csv", 0.2),
        ("artificialWithAnomaly/art_load_balancer_spikes.csv", 0.5),
        ("artificialWithAnomaly/art_daily_jumpsup.csv", 0.6),
        ("artificialWithAnomaly/art_increase_spike_density.csv", 0.5),
    ] {
        let s = read_series(&ds.join("nab").join(file))?;
        if s.is_empty() {
            bail!("NAB {file}: no rows");
        }
        let k = ((s.len().saturating_sub(minutes)) as f64 * off) as usize;
        let counts: Vec<f64> = s[k..].iter().take(minutes).map(|x| x.1).collect();
        // Up to two days (as read) before the window; NAB's own sampling
        // makes no whole number of ticks per day, so no season is given.
        let history: Vec<f64> = s[k.saturating_sub(2 * 1440)..k]
            .iter()
            .map(|x| x.1)
            .collect();
        let stem = file
            .rsplit('/')
            .next()
            .unwrap_or(file)
            .trim_end_matches(".csv")
            .to_lowercase();
        out.push(Auto {
            history,
            season: None,
            id: format!("auto_nab_{stem}"),
            family: "nab".into(),
            counts,
            step: 60.0,
            compression: 10.0,
            boot: draw_boot(rng),
            peak: rng.random_range(120.0..360.0),
            what: format!(
                "NAB {file}, {minutes} rows from {}, one row read as one minute",
                s[k].0
            ),
        });
    }
    Ok(())
}

/// Autoscaling scenarios from the Azure LLM inference traces (short and long boot).
fn azure_autos(rng: &mut SmallRng, ds: &Path, out: &mut Vec<Auto>) -> super::Result<()> {
    for file in [
        "AzureLLMInferenceTrace_code.csv",
        "AzureLLMInferenceTrace_conv.csv",
    ] {
        let path = ds.join("azure_llm_inference_2023").join(file);
        let s = read_series(&path)?; // timestamp, context tokens
        let ts: Vec<f64> = s
            .iter()
            .filter_map(|(t, _)| crate::workload::parse_ts(t).ok())
            .collect();
        let Some(&t0) = ts.first() else {
            bail!("{}: no timestamps", path.display());
        };
        let bins = ((ts.last().copied().unwrap_or(t0) - t0) / 10.0) as usize + 1;
        let mut counts = vec![0.0; bins];
        for t in &ts {
            counts[(((t - t0) / 10.0) as usize).min(bins - 1)] += 1.0;
        }
        for (v, b) in ["short_boot", "long_boot"].iter().enumerate() {
            let stem = file
                .trim_start_matches("AzureLLMInferenceTrace_")
                .trim_end_matches(".csv");
            out.push(Auto {
                history: Vec::new(),
                season: None,
                id: format!("auto_azure_{stem}_{b}"),
                family: "azure_llm".into(),
                counts: counts.clone(),
                step: 10.0,
                compression: 2.5,
                boot: if v == 0 {
                    rng.random_range(30.0..90.0_f64).round()
                } else {
                    rng.random_range(150.0..300.0_f64).round()
                },
                peak: rng.random_range(120.0..360.0),
                what: format!("Azure LLM {stem} arrivals counted per 10 s"),
            });
        }
    }
    Ok(())
}

/// The shape of one synthetic trace.
struct Shape<'a> {
    fam: &'a str,
    base: f64,
    cv: f64,
    at: f64,
    factor: f64,
    minutes: usize,
}

impl Shape<'_> {
    /// Minute `m`'s count: the family's level times `base`, with
    /// multiplicative Gaussian noise (`cv`) and Poisson-like noise.
    fn count(&self, m: usize, normal: &Normal<f64>, rng: &mut SmallRng) -> f64 {
        let (fam, factor, at) = (self.fam, self.factor, self.at);
        let x = m as f64 / self.minutes as f64;
        let t = m as f64;
        let level = match fam {
            "trend_up" => 1.0 + (factor - 1.0) * x,
            "trend_down" => factor - (factor - 1.0) * x,
            "level_up" if t >= at => factor,
            "level_down" if t < at => factor,
            "surge" if t >= at && t < at + 15.0 => factor + 0.5,
            "daily" => 1.0 + 0.5 * (factor - 1.0) * (1.0 - (std::f64::consts::TAU * x).cos()),
            "trend_surge" => {
                1.0 + 0.5 * (factor - 1.0) * x
                    + if t >= at && t < at + 10.0 {
                        factor - 1.0
                    } else {
                        0.0
                    }
            }
            _ => 1.0,
        } * self.base;
        let z: f64 = normal.sample(rng);
        let p: f64 = normal.sample(rng);
        (level * (1.0 + self.cv * z) + level.sqrt() * p)
            .max(0.0)
            .round()
    }
}

/// Synthetic autoscaling scenarios, per demand-shape family.
fn synth_autos(
    rng: &mut SmallRng,
    minutes: usize,
    smoke: bool,
    out: &mut Vec<Auto>,
) -> super::Result<()> {
    let fams: &[&str] = if smoke {
        &["trend_up", "noise"]
    } else {
        &[
            "trend_up",
            "trend_down",
            "level_up",
            "level_down",
            "surge",
            "noise",
            "daily",
            "trend_surge",
        ]
    };
    let normal = Normal::new(0.0, 1.0).map_err(|e| err!("{e}"))?;
    for fam in fams {
        for v in 0..if smoke { 1 } else { 2 } {
            let shape = Shape {
                fam,
                base: rng.random_range(1000.0..20000.0_f64),
                cv: rng.random_range(0.03..0.15),
                at: rng.random_range(0.3..0.7) * minutes as f64,
                factor: rng.random_range(1.6..2.8),
                minutes,
            };
            let counts = (0..minutes).map(|m| shape.count(m, &normal, rng)).collect();
            let id = format!("auto_synth_{fam}_{v}");
            // The daily family repeats its cycle (one per window): two
            // earlier cycles, with noise of their own, are its history.
            // The other families have no earlier history to speak of.
            let (history, season) = if *fam == "daily" {
                let mut own = SmallRng::seed_from_u64(fnv(&id) ^ fnv("history"));
                let h = (0..2 * minutes)
                    .map(|m| shape.count(m % minutes, &normal, &mut own))
                    .collect();
                (
                    h,
                    Some((minutes as f64 * 60.0 / 10.0 / 15.0).round() as usize),
                )
            } else {
                (Vec::new(), None)
            };
            let (base, cv, factor) = (shape.base, shape.cv, shape.factor);
            out.push(Auto {
                id,
                family: format!("synth_{fam}"),
                counts,
                step: 60.0,
                compression: 10.0,
                boot: draw_boot(rng),
                peak: rng.random_range(120.0..360.0),
                what: format!("synthetic {fam}: base {base:.0}/min, noise cv {cv:.2} + Poisson, factor {factor:.2}"),
                history,
                season,
            });
        }
    }
    Ok(())
}

fn render_auto(
    a: &Auto,
    data: &Path,
    scale: f64,
    aya_params: Option<&str>,
    forecaster: SuiteForecaster,
) -> super::Result<(String, String)> {
    let path = data.join(format!("{}.csv", a.id));
    let mut csv = String::from("timestamp,value\n");
    let t0 = 946_684_800.0; // 2000-01-01
    let stamp = |secs: f64| {
        chrono::DateTime::from_timestamp(secs as i64, 0)
            .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    };
    // A warm start replays from `start`; the rows before it are its history.
    let warm = forecaster == SuiteForecaster::Warm && !a.history.is_empty();
    if warm {
        let h = a.history.len();
        for (k, c) in a.history.iter().enumerate() {
            let _ = writeln!(csv, "{},{c}", stamp(t0 - (h - k) as f64 * a.step));
        }
    }
    for (k, c) in a.counts.iter().enumerate() {
        let _ = writeln!(csv, "{},{c}", stamp(t0 + k as f64 * a.step));
    }
    std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))?;
    let start = if warm {
        format!("\nstart = \"{}\"", stamp(t0))
    } else {
        String::new()
    };
    let max = a.counts.iter().cloned().fold(0.0, f64::max).max(1.0);
    // virtual rate = count / step × compression × multiplier; peak → a.peak req/s.
    let multiplier = a.peak / (max / a.step * a.compression);
    let duration = (a.counts.len() as f64 * a.step / a.compression * scale).floor();
    let first = a.counts.first().copied().unwrap_or(0.0) / a.step * a.compression * multiplier;
    let init = ((first / 56.0).ceil() as u32).clamp(2, 40);
    let summary = format!(
        "{}; compressed {}x to {:.0} s, peak {:.0} req/s; replicas of 4 workers (exp 50 ms), boot {:.0} s",
        a.what, a.compression, duration, a.peak, a.boot
    );
    let mut t = String::new();
    let _ = writeln!(t, "name = \"{}\"\ndescription = \"{summary}\"", a.id);
    let _ = writeln!(
        t,
        "duration = {duration}\nwarmup = {}\ntimeout = 5.0",
        (120.0 * scale).round()
    );
    let _ = writeln!(t, "seeds = {:?}", AUTO_SEEDS);
    let _ = writeln!(
        t,
        "\n[workload]\nkind = \"rate_series\"\npath = {:?}\ncompression = {}\nmultiplier = {multiplier}\nvalue = \"count\"{start}",
        path.display().to_string(),
        a.compression
    );
    let _ = writeln!(t, "\n[service]\nkind = \"exponential\"\nmean = 0.05");
    let _ = writeln!(
        t,
        "\n[[backends]]\ncount = {init}\nname = \"web\"\nconcurrency = 4"
    );
    let _ = writeln!(t, "\n[data_plane]\nalgorithm = \"least_request\"");
    let _ = writeln!(
        t,
        "\n[autoscaling]\nmin = 2\nmax = 40\nboot_delay = {}",
        a.boot
    );
    let _ = writeln!(
        t,
        "\n[control]\ninterval = 15.0\ntelemetry_interval = 15.0\ntelemetry_delay = 5.0\nforecast_horizon = 24"
    );
    let _ = writeln!(
        t,
        "\n[forecaster]\n{}\n\n[slo]\nwindow = 60.0\np99 = 0.5",
        forecaster_block(forecaster, a)
    );
    let _ = writeln!(t, "{}", aya_policy_block(aya_params));
    for h in HPA_TARGETS {
        let _ = writeln!(
            t,
            "\n[[policy]]\nname = \"hpa\"\nlabel = \"hpa@{h}\"\nparams = {{ target_utilization = {h} }}"
        );
    }
    Ok((t, summary))
}

/// The `[[policy]]` block of Aya, with `params` when given.
fn aya_policy_block(params: Option<&str>) -> String {
    match params {
        Some(p) if !p.trim().is_empty() => {
            format!("\n[[policy]]\nname = \"aya\"\nparams = {{ {p} }}")
        }
        _ => "\n[[policy]]\nname = \"aya\"".to_string(),
    }
}

/// Assign splits: within each family, scenarios sorted by the hash of
/// their id alternate tune, test, tune, … (so ~50/50 per family and fixed
/// by the ids).
fn assign_splits(items: &mut [SuiteScenario]) {
    let mut fams: Vec<String> = items.iter().map(|s| s.family.clone()).collect();
    fams.sort();
    fams.dedup();
    for f in fams {
        let mut idx: Vec<usize> = (0..items.len()).filter(|&i| items[i].family == f).collect();
        idx.sort_by_key(|&i| fnv(&items[i].id));
        for (k, i) in idx.into_iter().enumerate() {
            items[i].split = if k.is_multiple_of(2) {
                Split::Tune
            } else {
                Split::Test
            };
        }
    }
}

/// Generate the suite; rate-series CSVs of the autoscaling scenarios are
/// written into `data_dir` (created).
pub fn generate(cfg: &SuiteConfig, data_dir: &Path) -> super::Result<Vec<SuiteScenario>> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data = std::path::absolute(data_dir)
        .with_context(|| format!("resolving {}", data_dir.display()))?;
    let scale = if cfg.smoke { 0.3 } else { 1.0 };
    let mut items = Vec::new();
    let bals: Vec<Bal> = (0..N_BAL).map(|i| draw_bal(cfg.seed, i)).collect();
    let mut chosen: Vec<&Bal> = bals.iter().collect();
    if cfg.smoke {
        chosen.retain(|b| b.speeds.len() <= 8 && b.conc <= 4);
        chosen.truncate(4);
    }
    for b in chosen {
        let (toml, summary) = render_bal(
            b,
            scale,
            cfg.aya_params.as_deref(),
            cfg.data_plane_outlier_5xx,
        );
        let scenario = Scenario::parse(&toml, &data.join(format!("{}.toml", b.id)))
            .with_context(|| format!("generated scenario {}", b.id))?;
        items.push(SuiteScenario {
            id: b.id.clone(),
            family: b.family.clone(),
            kind: Kind::Balancing,
            split: Split::Tune,
            summary,
            toml,
            scenario,
        });
    }
    for a in draw_autos(cfg.seed, &cfg.datasets, cfg.smoke)? {
        let (toml, summary) =
            render_auto(&a, &data, 1.0, cfg.aya_params.as_deref(), cfg.forecaster)?;
        let scenario = Scenario::parse(&toml, &data.join(format!("{}.toml", a.id)))
            .with_context(|| format!("generated scenario {}", a.id))?;
        items.push(SuiteScenario {
            id: a.id.clone(),
            family: a.family.clone(),
            kind: Kind::Autoscaling,
            split: Split::Tune,
            summary,
            toml,
            scenario,
        });
    }
    assign_splits(&mut items);
    if let Some(s) = cfg.split {
        items.retain(|x| x.split == s);
    }
    if let Some(k) = cfg.kind {
        items.retain(|x| x.kind == k);
    }
    if let Some(only) = &cfg.only {
        items.retain(|x| x.id.contains(only.as_str()));
    }
    Ok(items)
}
