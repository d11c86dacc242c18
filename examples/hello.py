"""Reads a CSV of measurements and writes a JSON summary: CSV in, JSON out."""

import csv
import json
import sys
from statistics import mean

path = sys.argv[1]
with open(path, newline="") as fh:
    rows = list(csv.DictReader(fh))

summary = {
    "rows": len(rows),
    "cities": sorted({r["city"] for r in rows}),
    "mean_temp_c": round(mean(float(r["temp_c"]) for r in rows), 2),
}
with open("summary.json", "w") as fh:
    json.dump(summary, fh, indent=2)

print(f"read {len(rows)} rows from {path}")
print(f"mean temperature {summary['mean_temp_c']} °C over {len(summary['cities'])} cities")
