"""Writes Aya's notebooks (nbformat 4) from the cell sources below.

The .ipynb files are checked in and executed by scripts/run-notebooks.sh; this
script is how they are edited: change a cell here, run
`python3 notebooks/make_notebooks.py`, and commit both. Standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text.strip("\n")}


def code(text: str) -> dict:
    return {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": text.strip("\n"),
    }


def notebook(cells: list[dict], requires: list[list[str]]) -> dict:
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
            # Probe commands for scripts/run-notebooks.sh: one per `aya` subcommand used.
            "aya": {"requires": requires},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


SETUP = """
%matplotlib inline
import json
import math

import matplotlib.pyplot as plt
import polars as pl

from aya_nb import aya, aya_bin, aya_json, datasets_dir, out_dir, records

plt.rcParams.update({"figure.figsize": (11, 4), "figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})
DATA = datasets_dir()
print("aya binary:", aya_bin())
print("datasets:  ", DATA)
print(aya("--version", quiet=True).strip())
"""

# --------------------------------------------------------------------------------------
# Forecasting on real traces.
# --------------------------------------------------------------------------------------

FORECASTING = [
    md("""
# Forecasting real traffic with Aya

Aya decides ahead of demand only as well as it forecasts. This notebook runs the `aya` binary on
real public traces from the shared datasets directory (`$AYA_DATASETS`, default `../shared/datasets`):

* **NYC taxi** passengers per 30 minutes (NAB `realKnownCause/nyc_taxi.csv`): strong daily and
  weekly seasonality, with holidays and a snowstorm as incidents;
* **AWS ELB request count** per 5 minutes (NAB `realAWSCloudwatch/elb_request_count_8c0756.csv`):
  the request rate a load balancer saw, bursty and irregularly sampled.

Two questions: *does the forecast with its intervals track what really happened next?* (hold out
the end of each series, `aya forecast` on the rest, compare) and *which model wins at which
horizon?* (`aya backtest`: rolling-origin MASE, sMAPE and interval coverage per model and horizon).
Every number below is computed by `aya`; the notebook only reads its CSV/JSON outputs and plots them.
"""),
    code(SETUP),
    code("""
WORK = out_dir("forecasting")

SERIES = {
    "nyc_taxi": {
        "path": DATA / "nab/realKnownCause/nyc_taxi.csv",
        "what": "NYC taxi passengers per 30 min",
        "holdout": 2 * 48,          # the last two days
        "context": 7 * 48,          # a week of training data in the plot
        "flags": [],
    },
    "elb_requests": {
        "path": DATA / "nab/realAWSCloudwatch/elb_request_count_8c0756.csv",
        "what": "AWS ELB requests per 5 min",
        "holdout": 288,             # the last day
        "context": 2 * 288,         # two days of training data in the plot
        "flags": ["--resample", "300"],  # a few irregular steps: put it on a 5-minute grid
    },
}


def read_series(path):
    \"\"\"A `timestamp,value` CSV as a polars frame with a Datetime `timestamp` column.\"\"\"
    df = pl.read_csv(path, try_parse_dates=True)
    ts = df["timestamp"]
    if ts.dtype == pl.String:
        df = df.with_columns(pl.col("timestamp").str.to_datetime(time_zone=None, strict=True))
    elif ts.dtype.is_integer():
        unit = "ms" if ts.max() > 10**11 else "s"
        df = df.with_columns(pl.from_epoch("timestamp", time_unit=unit))
    elif isinstance(ts.dtype, pl.Datetime) and ts.dtype.time_zone is not None:
        df = df.with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    return df


for name, s in SERIES.items():
    df = read_series(s["path"])
    s["df"] = df
    step = df["timestamp"].diff().drop_nulls().mode().first()
    s["step_s"] = int(step.total_seconds())
    print(f"{name:13s} {df.height:6d} rows  {df['timestamp'].min()} .. {df['timestamp'].max()}  step {step}")
"""),
    md("""
## 1. Forecast against what happened

For each series the last days are held out. `aya forecast` trains on everything before them
(model selection included) and writes `timestamp,yhat,lower,upper,level`; it runs twice, for 80% and
95% intervals. The plot shows the end of the training data, the held-out actuals, the point
forecast and both bands.
"""),
    code("""
def holdout_forecast(name, s):
    df, h = s["df"], s["holdout"]
    train = df.head(df.height - h)
    train_csv = WORK / f"{name}_train.csv"
    train.with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%d %H:%M:%S")).write_csv(train_csv)
    bands = {}
    for level in (0.8, 0.95):
        out = WORK / f"{name}_forecast_{int(level * 100)}.csv"
        aya("forecast", "--input", train_csv, "--horizon", h, "--level", level, "--output", out, *s["flags"])
        bands[level] = read_series_like(out)
    return train, df.tail(h), bands


def read_series_like(path):
    \"\"\"Aya's forecast CSV (`timestamp,yhat,lower,upper,level`) with a parsed timestamp.\"\"\"
    fc = pl.read_csv(path, try_parse_dates=True)
    if fc["timestamp"].dtype == pl.String:
        fc = fc.with_columns(pl.col("timestamp").str.to_datetime(strict=True))
    if isinstance(fc["timestamp"].dtype, pl.Datetime) and fc["timestamp"].dtype.time_zone is not None:
        fc = fc.with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    return fc.with_columns(pl.col("timestamp").dt.cast_time_unit("us"))


summary = []
fig, axes = plt.subplots(len(SERIES), 1, figsize=(11, 4 * len(SERIES)))
for ax, (name, s) in zip(axes, SERIES.items()):
    train, actual, bands = holdout_forecast(name, s)
    actual = actual.with_columns(pl.col("timestamp").dt.cast_time_unit("us")).sort("timestamp")
    context = train.tail(s["context"])
    ax.plot(context["timestamp"], context["value"], color="0.5", lw=0.8, label="training data")
    ax.plot(actual["timestamp"], actual["value"], color="black", lw=1.2, label="held-out actuals")
    for level, alpha in ((0.95, 0.18), (0.8, 0.35)):
        fc = bands[level]
        ax.fill_between(fc["timestamp"], fc["lower"], fc["upper"], color="tab:blue", alpha=alpha,
                        lw=0, label=f"{int(level * 100)}% interval")
    fc = bands[0.95]
    ax.plot(fc["timestamp"], fc["yhat"], color="tab:blue", lw=1.4, label="aya forecast")
    ax.set_title(f"{s['what']}: {s['holdout']}-step forecast from {train['timestamp'].max()}")
    ax.legend(loc="upper left", fontsize=8, ncols=3)
    # Score the hold-out: match forecast steps to actuals by nearest timestamp.
    for level, fc in bands.items():
        joined = fc.sort("timestamp").join_asof(actual.rename({"value": "actual"}), on="timestamp",
                                                strategy="nearest").drop_nulls("actual")
        inside = ((joined["actual"] >= joined["lower"]) & (joined["actual"] <= joined["upper"])).mean()
        mae = (joined["actual"] - joined["yhat"]).abs().mean()
        summary.append({"series": name, "level": level, "steps": joined.height,
                        "coverage": round(inside, 3), "mae": round(mae, 2),
                        "mean_actual": round(joined["actual"].mean(), 2)})
fig.tight_layout()
plt.show()
pl.DataFrame(summary)
"""),
    md("""
`coverage` is the share of held-out points inside the interval (on one hold-out window it is a
noisy estimate: the backtest below measures it over many origins). `mae` is the mean absolute error
of the point forecast, next to the mean of the actuals for scale.

## 2. Backtest: which model, which horizon

`aya backtest` refits every model at evenly spaced origins over the last 20% of the series and
scores horizons of 1 step, 12 steps and one season. MASE is scaled by the in-sample seasonal-naive
error, so 1.0 means "as good as repeating yesterday"; lower is better.
"""),
    code("""
ORIGINS = 10
tables = []
for name, s in SERIES.items():
    doc = aya_json("backtest", "--input", s["path"], "--horizons", "1,12,season", "--origins", ORIGINS,
                   "--json", "--forecasts-out", WORK / f"{name}_backtest_forecasts.csv", *s["flags"],
                   timeout=1800)
    (WORK / f"{name}_backtest.json").write_text(json.dumps(doc, indent=1))
    rows = records(doc, ("model", "horizon", "mase"))
    tables.append(pl.DataFrame(rows, infer_schema_length=None).with_columns(pl.lit(name).alias("series")))
bt = pl.concat(tables, how="diagonal_relaxed")
# Two candidates can share a family name (e.g. two Theta variants): number the repeats.
bt = bt.with_columns(
    pl.int_range(pl.len()).over("series", "horizon", "model").alias("_k")
).with_columns(
    pl.when(pl.col("_k") > 0).then(pl.col("model") + " #" + (pl.col("_k") + 1).cast(pl.String))
    .otherwise(pl.col("model")).alias("model")
).drop("_k")
keep = [c for c in ("series", "model", "horizon", "mase", "smape", "coverage80", "coverage95", "ms_per_origin")
        if c in bt.columns]
bt = bt.select(keep).sort("series", "horizon", "mase")
with pl.Config(tbl_rows=60):
    display(bt)
"""),
    code("""
fig, axes = plt.subplots(1, len(SERIES), figsize=(12, 4.2), sharey=False)
for ax, (name, s) in zip(axes, SERIES.items()):
    t = bt.filter(pl.col("series") == name)
    horizons = sorted(t["horizon"].unique().to_list())
    models = t.group_by("model").agg(pl.col("mase").mean()).sort("mase")["model"].to_list()
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        m = t.filter(pl.col("model") == model)
        ys = [m.filter(pl.col("horizon") == h)["mase"].first() for h in horizons]
        ax.bar([x + i * width for x in range(len(horizons))], [y if y is not None else math.nan for y in ys],
               width=width, label=model)
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(horizons))],
                  [f"h={h}" + (" (one day)" if h * s["step_s"] == 86400 else "") for h in horizons])
    ax.set_ylabel("MASE (vs seasonal naive in-sample)")
    ax.set_title(s["what"])
    ax.legend(fontsize=7, ncols=2)
fig.tight_layout()
plt.show()
"""),
    md("""
### Interval calibration

A 95% interval should contain about 95% of the outcomes over the backtest, an 80% one about 80%
(dashed lines). Mean coverage over horizons, per model.
"""),
    code("""
cov_cols = [c for c in ("coverage80", "coverage95") if c in bt.columns]
if cov_cols:
    cov = bt.group_by("series", "model").agg([pl.col(c).mean().round(3) for c in cov_cols]).sort("series", "model")
    with pl.Config(tbl_rows=40):
        display(cov)
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, marker in zip(SERIES, "os"):
        c = cov.filter(pl.col("series") == name)
        ax.scatter(c["coverage80"], c["coverage95"], marker=marker, label=SERIES[name]["what"])
        for row in c.iter_rows(named=True):
            ax.annotate(row["model"], (row["coverage80"], row["coverage95"]), fontsize=7)
    ax.axvline(0.8, color="k", lw=0.6, ls="--"); ax.axhline(0.95, color="k", lw=0.6, ls="--")
    ax.set_xlabel("80% interval coverage"); ax.set_ylabel("95% interval coverage"); ax.legend(fontsize=8)
    plt.show()
else:
    raise KeyError(f"the backtest JSON has no coverage columns: {bt.columns}")
"""),
    md("""
### The forecasts the backtest scored

`--forecasts-out` writes every forecast the backtest scored. Below: for the last origin on NYC taxi,
each model's one-season forecast against the actuals.
"""),
    code("""
fc = pl.read_csv(WORK / "nyc_taxi_backtest_forecasts.csv", try_parse_dates=True, infer_schema_length=None)
print(fc.columns)
origin_col = next(c for c in fc.columns if "origin" in c)
last_origin = fc[origin_col].max()
one = fc.filter(pl.col(origin_col) == last_origin)
time_col0 = next(c for c in ("timestamp", "target_time", "time") if c in one.columns)
one = one.with_columns(pl.int_range(pl.len()).over("model", time_col0).alias("_k")).with_columns(
    pl.when(pl.col("_k") > 0).then(pl.col("model") + " #" + (pl.col("_k") + 1).cast(pl.String))
    .otherwise(pl.col("model")).alias("model")).drop("_k")
time_col = next(c for c in ("timestamp", "target_time", "time") if c in one.columns)
yhat_col = next(c for c in ("yhat", "forecast", "prediction") if c in one.columns)
actual_col = next(c for c in ("actual", "y", "value") if c in one.columns)
fig, ax = plt.subplots()
first = one.filter(pl.col("model") == one["model"].first()).sort(time_col)
ax.plot(first[time_col], first[actual_col], color="black", lw=1.5, label="actual")
for model in sorted(one["model"].unique().to_list()):
    m = one.filter(pl.col("model") == model).sort(time_col)
    ax.plot(m[time_col], m[yhat_col], lw=1, label=model)
ax.set_title(f"NYC taxi: every model's forecast from the last backtest origin ({last_origin})")
ax.legend(fontsize=8, ncols=3)
plt.show()
"""),
]

# --------------------------------------------------------------------------------------
# The policy league table.
# --------------------------------------------------------------------------------------

LEAGUE = [
    md("""
# The policy league: Aya against reactive balancing

Aya's decision engine is the same code in `aya serve` and in the simulator, so its policies can be
compared before a rollout. This notebook looks at the simulator's scores:

1. a textbook check: the one-line form of `aya sim` on identical exponential servers, against
   queueing theory (random dispatch makes each server an M/M/1 queue);
2. the data-plane algorithms side by side on the same arrivals (common random numbers);
3. the league table (`aya league`): Aya against P2C least request, gRPC A58 weighted round robin,
   peak-EWMA and Kubernetes HPA on the checked-in scenarios: latency percentiles, success rate,
   the issue's targets, and replicas against demand.

Sizes are kept small so the notebook executes in a minute or two; the README's league table uses the
full settings.
"""),
    code(SETUP),
    code("""
from aya_nb import ROOT

WORK = out_dir("league")


def sim_one_line(**kw):
    args = ["sim", "--json"]
    for k, v in kw.items():
        args += [f"--{k}", v]
    return aya_json(*args)


def pick(doc, *names):
    \"\"\"The first of `names` found at the top level or one level down in a JSON object.\"\"\"
    for n in names:
        if n in doc:
            return doc[n]
    for v in doc.values():
        if isinstance(v, dict):
            for n in names:
                if n in v:
                    return v[n]
    raise KeyError(f"none of {names} in {sorted(doc)}")
"""),
    md("""
## 1. Textbook check: random dispatch is M/M/1

With `n` identical exponential servers at utilisation ρ and random dispatch, each server is an
M/M/1 queue: the response time (in units of the mean service time) is exponential with mean
1/(1−ρ), so its p-quantile is −ln(1−p)/(1−ρ).
"""),
    code("""
RHOS = [0.5, 0.7, 0.8, 0.9]
rows = []
for rho in RHOS:
    doc = sim_one_line(servers=10, utilization=rho, service="exp", algorithm="random",
                       requests=500_000, seed=1)
    (WORK / f"mm1_rho{rho}.json").write_text(json.dumps(doc, indent=1))
    rows.append({"rho": rho,
                 "sim_mean": pick(doc, "mean", "mean_response"),
                 "theory_mean": 1 / (1 - rho),
                 "sim_p99": pick(doc, "p99"),
                 "theory_p99": -math.log(0.01) / (1 - rho)})
mm1 = pl.DataFrame(rows).with_columns(
    ((pl.col("sim_mean") / pl.col("theory_mean") - 1) * 100).round(2).alias("mean_err_%"),
    ((pl.col("sim_p99") / pl.col("theory_p99") - 1) * 100).round(2).alias("p99_err_%"))
display(mm1)
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(mm1["rho"], mm1["theory_mean"], "k-", label="M/M/1 mean (theory)")
ax.plot(mm1["rho"], mm1["sim_mean"], "o", color="tab:blue", label="aya sim mean")
ax.plot(mm1["rho"], mm1["theory_p99"], "k--", label="M/M/1 p99 (theory)")
ax.plot(mm1["rho"], mm1["sim_p99"], "s", color="tab:red", label="aya sim p99")
ax.set_xlabel("utilisation ρ"); ax.set_ylabel("response time / mean service time")
ax.legend(); plt.show()
"""),
    md("""
## 2. Data-plane algorithms on the same arrivals

Ten servers at ρ = 0.9 with a heavy-tailed (lognormal, CV 2) service time. Every algorithm sees the
same arrivals and service draws (same seed), so the differences are the algorithm's.
"""),
    code("""
ALGOS = ["random", "round_robin", "least_request", "peak_ewma", "join_shortest_queue"]
rows = []
for algo in ALGOS:
    doc = sim_one_line(servers=10, utilization=0.9, service="lognormal:2", algorithm=algo,
                       requests=200_000, seed=7)
    rows.append({"algorithm": algo, **{q: pick(doc, q) for q in ("p50", "p90", "p99", "p999")}})
algos = pl.DataFrame(rows)
display(algos)
fig, ax = plt.subplots(figsize=(10, 4))
qs = ["p50", "p90", "p99", "p999"]
w = 0.8 / len(ALGOS)
for i, row in enumerate(algos.iter_rows(named=True)):
    ax.bar([x + i * w for x in range(len(qs))], [row[q] for q in qs], width=w, label=row["algorithm"])
ax.set_xticks([x + 0.4 - w / 2 for x in range(len(qs))], qs)
ax.set_yscale("log"); ax.set_ylabel("response time / mean service time")
ax.legend(fontsize=8); plt.show()
"""),
    md("""
## 3. The league table

`aya league` runs every checked-in scenario in `scenarios/league/` under Aya and the baselines,
with several seeds (common random numbers: every policy sees the same arrivals and service draws),
and writes `league.json` and `league.md`. Here with 2 seeds to stay quick; the README's table uses 5.
"""),
    code("""
LEAGUE_OUT = WORK / "league"
aya("league", "--scenarios", ROOT / "scenarios" / "league", "--seeds", 2, "--output", LEAGUE_OUT, timeout=1800)
league_doc = json.loads((LEAGUE_OUT / "league.json").read_text())
rows = []
for sc in league_doc["scenarios"]:
    for p in sc["policies"]:
        m = p["summary"]
        rows.append({"scenario": sc["name"], "policy": p["label"],
                     **{f"{k}": m[k]["mean"] for k in ("p50", "p99", "p999", "success_rate",
                                                       "slo_violation_minutes", "replica_hours")},
                     **{f"{k}_ci": m[k]["ci95"] for k in ("p99", "p999", "success_rate")}})
league = pl.DataFrame(rows)
with pl.Config(tbl_rows=40, tbl_cols=12, float_precision=2, tbl_width_chars=160):
    display(league.select(
        "scenario", "policy",
        (pl.col("p50") * 1000).alias("p50 ms"), (pl.col("p99") * 1000).alias("p99 ms"),
        (pl.col("p999") * 1000).alias("p99.9 ms"), (pl.col("success_rate") * 100).round(3).alias("success %"),
        pl.col("slo_violation_minutes").alias("SLO-viol. min"), pl.col("replica_hours").alias("replica-h")))
"""),
    md("""
Latency percentiles (log scale, error bars = 95% CI over seeds) and success rate per scenario.
"""),
    code("""
scenarios = league["scenario"].unique(maintain_order=True).to_list()
fig, axes = plt.subplots(len(scenarios), 2, figsize=(12, 3.3 * len(scenarios)), squeeze=False)
for (ax_lat, ax_ok), scen in zip(axes, scenarios):
    t = league.filter(pl.col("scenario") == scen)
    pols = t["policy"].to_list()
    w = 0.27
    for i, (q, ci) in enumerate((("p50", None), ("p99", "p99_ci"), ("p999", "p999_ci"))):
        xs = [x + i * w for x in range(len(pols))]
        ys = [v * 1000 for v in t[q].to_list()]
        err = [v * 1000 for v in t[ci].to_list()] if ci else None
        ax_lat.bar(xs, ys, width=w, yerr=err, capsize=2, label=q.replace("p999", "p99.9"))
    ax_lat.set_xticks([x + w for x in range(len(pols))], pols)
    ax_lat.set_yscale("log"); ax_lat.set_ylabel("ms"); ax_lat.set_title(f"{scen}: latency")
    ax_lat.legend(fontsize=7)
    ok = [100 * v for v in t["success_rate"].to_list()]
    ax_ok.bar(pols, ok, yerr=[100 * v for v in t["success_rate_ci"].to_list()], capsize=2, color="tab:green")
    ax_ok.set_ylim(max(0.0, min(ok) - 1.0), 100.05); ax_ok.set_title(f"{scen}: success rate (%)")
fig.tight_layout(); plt.show()
"""),
    md("""
### The issue's targets

Each league target, what was measured, and whether it was met (with only 2 seeds here; the
README's figures use more).
"""),
    code("""
targets = pl.DataFrame([{"scenario": t["target"]["scenario"], "target": t["target"]["text"],
                         "measured": t["measured"], "met": t["met"]} for t in league_doc["targets"]])
with pl.Config(tbl_rows=20, fmt_str_lengths=80, tbl_width_chars=200):
    display(targets)
"""),
    md("""
## 4. Replicas against demand

The autoscaling scenario replays two days of the WorldCup98 per-minute trace (time-compressed).
The league keeps each policy's time series for the first seed: demand, and the replicas that
exist (booting + ready + draining). A predictive policy adds replicas before a surge, boot delay
included; a reactive one after it.
"""),
    code("""
auto = next(sc for sc in league_doc["scenarios"] if sc["name"] == "worldcup_autoscaling")
fig, (ax, ax_lat) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
ax2 = ax.twinx()
first = auto["policies"][0]["series"]
ax2.plot([w["t"] for w in first], [w["demand_rps"] for w in first], color="0.6", lw=0.8, label="demand (req/s)")
for p in auto["policies"]:
    ts = [w["t"] for w in p["series"]]
    ax.step(ts, [w["alive"] for w in p["series"]], where="post", lw=1.2, label=f"{p['label']} replicas")
    ax_lat.plot(ts, [w["p99"] for w in p["series"]], lw=0.9, label=f"{p['label']} p99")
ax.set_ylabel("replicas"); ax2.set_ylabel("demand (req/s)")
ax.legend(loc="upper left", fontsize=8); ax2.legend(loc="upper right", fontsize=8)
ax_lat.set_yscale("log"); ax_lat.set_ylabel("p99 per window (s)"); ax_lat.set_xlabel("virtual time (s)")
ax_lat.axhline(0.5, color="k", lw=0.6, ls="--"); ax_lat.legend(fontsize=8)
fig.tight_layout(); plt.show()
summary = league.filter(pl.col("scenario") == "worldcup_autoscaling").select(
    "policy", "slo_violation_minutes", "replica_hours", "p99", "success_rate")
display(summary)
"""),
]


# --------------------------------------------------------------------------------------
# What the reports mark: known events, anomalies, predictive alerts.
# --------------------------------------------------------------------------------------

MARKS = [
    md("""
# Events, anomalies and alerts on real data

`aya sim`'s `report.html` marks three things on its charts (docs/sim.md, "The report"): the
scenario's **event calendar** shaded on the demand chart, the **streaming anomaly detector**'s
marks on the demand and latency series, and the **predictive alert timeline** (docs/alerts.md)
against the SLO windows each policy violated. This notebook shows each on real public data from
the shared datasets (`$AYA_DATASETS`):

1. the 1998 World Cup match schedule (`datasets/worldcup98_matches.csv`, in the repository) over
   the WorldCup98 site's requests per minute;
2. `aya anomalies` on NAB's NYC taxi series, against NAB's labelled anomaly windows;
3. `aya sim` on a short window of WorldCup98 with two matches: when Aya's headroom forecast would
   have raised the predictive alert, and when the pool actually broke its SLO.
"""),
    code(SETUP),
    code("""
from datetime import datetime, timezone

from aya_nb import ROOT

WORK = out_dir("marks")
MATCHES = ROOT / "datasets" / "worldcup98_matches.csv"
matches = pl.read_csv(MATCHES, comment_prefix="#", try_parse_dates=True)
wc = pl.read_csv(DATA / "worldcup98" / "worldcup98_requests_per_minute.csv", try_parse_dates=True)
print(f"{matches.height} matches, {wc.height} minutes of requests")
display(matches.head(3))
"""),
    md("""
## 1. The event calendar

The last week of the group stage and the round of 16 (24 June to 1 July 1998): requests per
minute (hourly means) with each match's `[start, end)` shaded, coloured by category. This is the
calendar a scenario names with `forecaster.events`; the simulator places it on the virtual time
line and the report shades the same spans.
"""),
    code("""
lo, hi = datetime(1998, 6, 24, tzinfo=timezone.utc), datetime(1998, 7, 2, tzinfo=timezone.utc)
week = (wc.filter((pl.col("timestamp") >= lo) & (pl.col("timestamp") < hi))
          .group_by_dynamic("timestamp", every="1h").agg(pl.col("value").mean()))
shown = matches.filter((pl.col("end") > lo) & (pl.col("start") < hi))
colours = {c: f"C{i + 1}" for i, c in enumerate(shown["category"].unique(maintain_order=True))}
fig, ax = plt.subplots(figsize=(12, 4))
ax.plot(week["timestamp"], week["value"], lw=0.9, color="C0", label="requests per minute (hourly mean)")
for m in shown.iter_rows(named=True):
    ax.axvspan(m["start"], m["end"], color=colours[m["category"]], alpha=0.3, lw=0)
for c, col in colours.items():
    ax.axvspan(lo, lo, color=col, alpha=0.3, label=c)
ax.set_xlim(lo, hi); ax.set_ylabel("requests per minute"); ax.legend(fontsize=8, loc="upper left")
ax.set_title("WorldCup98: requests and the match calendar")
fig.tight_layout(); plt.show()
display(shown.select("name", "start", "end", "category"))
"""),
    md("""
## 2. Anomalies: `aya anomalies` on NAB

`aya anomalies --input CSV` scores every point with the streaming detector (docs/anomaly.md: each
point once, in order, no look-ahead). Points scoring at least 0.5 (`aya serve`'s default
`[anomaly] threshold`) are marked; NAB's labelled windows (`labels/combined_windows.json`: the
NYC marathon, Thanksgiving, Christmas, New Year, a snowstorm) are shaded.
"""),
    code("""
NAB_FILE = "realKnownCause/nyc_taxi.csv"
scored_csv = WORK / "nyc_taxi_scores.csv"
aya("anomalies", "--input", DATA / "nab" / NAB_FILE, "--output", scored_csv)
scores = pl.read_csv(scored_csv, try_parse_dates=True)
marked = scores.filter(pl.col("score") >= 0.5)
windows = json.loads((DATA / "nab" / "labels" / "combined_windows.json").read_text())[NAB_FILE]
parse = lambda s: datetime.strptime(s[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
fig, ax = plt.subplots(figsize=(12, 4))
ax.plot(scores["timestamp"], scores["value"], lw=0.5, color="C0", label="passengers per 30 min")
for i, (a, b) in enumerate(windows):
    ax.axvspan(parse(a), parse(b), color="C1", alpha=0.25, lw=0, label="NAB labelled window" if i == 0 else None)
ax.scatter(marked["timestamp"], marked["value"], s=40, facecolors="none", edgecolors="#e6007e",
           lw=1.5, label="score ≥ 0.5", zorder=3)
ax.legend(fontsize=8, loc="upper left"); ax.set_title("NYC taxi: anomalies marked by Aya's detector")
fig.tight_layout(); plt.show()
inside = sum(any(parse(a) <= t <= parse(b) for a, b in windows) for t in marked["timestamp"])
print(f"{marked.height} of {scores.height} points marked, {inside} inside a labelled window")
display(marked.sort("score", descending=True).head(10))
"""),
    md("""
## 3. The alert timeline: `aya sim` on WorldCup98

`scenarios/examples/worldcup_events.toml` shortened to stay quick: 1998-06-29 from 08:00 UTC for
4,800 virtual seconds (13 h of trace, compressed 10x, two round-of-16 matches), one seed, Aya
(online forecaster with the calendar, warm-started on the 2 days before instead of 7: a seventh of
the time, ≈ 10 s instead of ≈ 2 min in a debug build) and HPA. `result.json` carries, per policy,
the headroom forecast of every control tick and every scored SLO window; the predictive alert
fires when the forecast's upper bound (or mean) exceeds the serving pool's capacity within 5
minutes (docs/alerts.md). The strip puts Aya's alerts next to the SLO windows its own run and
HPA's run (no forecast, so no alerts; a reactive pool on the same trace and seed) violated:
how long before a break, if at all, the alert came.
"""),
    code("""
text = (ROOT / "scenarios" / "examples" / "worldcup_events.toml").read_text()
for old, new in [("duration = 17280.0", "duration = 4800.0"), ("replications = 3", "replications = 1"),
                 ('start = "1998-06-29T00:00:00Z"', 'start = "1998-06-29T08:00:00Z"'),
                 ("warm_start = 604800.0", "warm_start = 172800.0"),
                 ('events = "../../datasets/worldcup98_matches.csv"', f'events = "{MATCHES}"')]:
    assert old in text, old
    text = text.replace(old, new)
scenario = WORK / "worldcup_short.toml"
scenario.write_text(text)
SIM_OUT = WORK / "sim"
aya("sim", scenario, "-o", SIM_OUT, timeout=900)
res = json.loads((SIM_OUT / "result.json").read_text())
print("report:", SIM_OUT / "report.html")
display(pl.DataFrame(res["events"]))
"""),
    code("""
LEAD = 300.0
fig, (ax, ax_d) = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True, gridspec_kw={"height_ratios": [1.3, 1]})
lanes = []
for p in res["policies"]:
    ticks = p.get("headroom", [])
    for key, what in [("exhausted_upper_in", "upper bound"), ("exhausted_mean_in", "mean")]:
        if ticks:
            fired = [t for t, h in ticks if h[key] is not None and h[key] <= LEAD]
            lanes.append((f"{p['label']}: alert, {what} out in ≤ {LEAD:.0f} s", fired, 15.0))
windows = {p["label"]: p.get("slo_windows", []) for p in res["policies"]}
for label, ws in windows.items():
    lanes.append((f"{label}: SLO window violated", [w["start"] for w in ws if w["violated"]], 60.0))
for i, (name, starts, width) in enumerate(lanes):
    y = len(lanes) - 1 - i
    ax.broken_barh([(s, width) for s in starts], (y + 0.2, 0.6), color=f"C{i}")
    print(f"{name}: {len(starts)}")
ax.set_yticks([len(lanes) - 1 - i + 0.5 for i in range(len(lanes))], [n for n, _, _ in lanes], fontsize=8)
ax.grid(axis="y", visible=False)
for e in res["events"]:
    for a in (ax, ax_d):
        a.axvspan(e["start"], e["end"], color="orange", alpha=0.2, lw=0)
first = res["policies"][0]["series"]
ax_d.plot([w["t"] for w in first], [w["demand_rps"] for w in first], lw=0.8, label="demand (req/s)")
ax_d.set_xlabel("virtual time (s)"); ax_d.set_ylabel("requests/s"); ax_d.legend(fontsize=8)
ax.set_title("Predictive alert vs SLO violations (matches shaded)")
fig.tight_layout(); plt.show()
"""),
    md("""
The same three marks, drawn by Aya itself, are in `out/notebooks/marks/sim/report.html`: the
matches shaded and named on the demand chart (with the event table), anomaly rings on the demand
and latency charts (with the table of anomaly episodes), and the alert strip with the headroom
forecast per tick.
"""),
]


def main() -> None:
    nbs = {
        "forecasting.ipynb": notebook(
            FORECASTING,
            [
                ["forecast", "--input", "/nonexistent/aya-probe.csv", "--horizon", "1", "--output", "/dev/null"],
                ["backtest", "--input", "/nonexistent/aya-probe.csv"],
            ],
        ),
        "league.ipynb": notebook(
            LEAGUE,
            [
                ["sim", "/nonexistent/aya-probe.toml"],
                ["league", "--scenarios", "/nonexistent/aya-probe", "--output", "/nonexistent/aya-probe-out"],
            ],
        ),
        "marks.ipynb": notebook(
            MARKS,
            [
                ["anomalies", "--input", "/nonexistent/aya-probe.csv"],
                ["sim", "/nonexistent/aya-probe.toml"],
            ],
        ),
    }
    for name, nb in nbs.items():
        path = HERE / name
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        print("wrote", path)


if __name__ == "__main__":
    main()
