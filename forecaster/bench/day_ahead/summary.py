#!/usr/bin/env python3
"""Summary of a day-ahead benchmark run (fcbench.py score's results.csv).

Prints, per horizon (1, 12, one day), every model's geometric mean over series
of MASE / MASE(seasonal naive); Aya against AutoTheta when both are there;
Aya's worst ratio to the better of naive and seasonal naive (series where that
naive is exact, MASE 0, are listed apart: any error is infinitely worse);
Aya's time per origin; and the one-day per-series table in markdown.

    python3 summary.py results.csv
"""
import sys

import numpy as np
import pandas as pd


def main(path):
    df = pd.read_csv(path)
    df["hl"] = df["h_label"].astype(str)
    models = list(dict.fromkeys(df["model"]))
    for hl in ("1", "12", "season"):
        d = df[df["hl"] == hl].pivot(index="series", columns="model", values="mase")
        rel = {m: float(np.exp(np.log(d[m] / d["SeasonalNaive"]).mean()))
               for m in models if m in d and d[m].notna().all()}
        label = "one day" if hl == "season" else f"h={hl}"
        cells = "  ".join(f"{m} {v:.3f}" for m, v in rel.items())
        print(f"{label:8} ({len(d)} series) rel. to seasonal naive: {cells}")
        if "AutoTheta" in rel:
            gain = 1 - rel["Aya"] / rel["AutoTheta"]
            print(f"{'':8} Aya vs AutoTheta: {gain:+.1%} ({'better' if gain > 0 else 'worse'})")
        best_naive = np.minimum(d["Naive"], d["SeasonalNaive"])
        exact = best_naive <= 0
        ratio = (d["Aya"] / best_naive)[~exact]
        worst = ratio.idxmax()
        over = ratio[ratio > 1.3]
        print(f"{'':8} Aya worst ratio to the better naive: {ratio.max():.2f} ({worst}); "
              f"series over 1.3x: {len(over)}"
              + (f" ({', '.join(f'{s} {v:.2f}' for s, v in over.items())})" if len(over) else "")
              + (f"; naive exact on {', '.join(d.index[exact])}" if exact.any() else ""))
    t = df[(df["model"] == "Aya") & (df["hl"] == "1")]
    if t["fit_predict_s_mean"].notna().any():
        print(f"Aya per origin (selection included, one thread): mean "
              f"{1000 * t['fit_predict_s_mean'].mean():.1f} ms, slowest series mean "
              f"{1000 * t['fit_predict_s_mean'].max():.1f} ms")
    d = df[df["hl"] == "season"].pivot(index="series", columns="model", values="mase")
    cols = [m for m in models if m in d]
    print("\n| series | " + " | ".join(cols) + " | Aya / better naive |")
    print("|---|" + "---|" * (len(cols) + 1))
    for s, r in d.iterrows():
        b = min(r["Naive"], r["SeasonalNaive"])
        ratio = f"{r['Aya'] / b:.2f}" if b > 0 else "naive exact"
        print(f"| {s} | " + " | ".join(f"{r[m]:.3f}" for m in cols) + f" | {ratio} |")


if __name__ == "__main__":
    with np.errstate(divide="ignore"):  # an exact naive has MASE 0 (listed apart)
        main(sys.argv[1])
