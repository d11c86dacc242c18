"""Writes several outputs into a sub-folder: one file per city and an index."""

import csv
import sys
from collections import defaultdict
from pathlib import Path

by_city = defaultdict(list)
with open(sys.argv[1], newline="") as fh:
    for row in csv.DictReader(fh):
        by_city[row["city"]].append(row)

out = Path("report")
out.mkdir(exist_ok=True)
for city, rows in sorted(by_city.items()):
    (out / f"{city.lower()}.txt").write_text(
        "\n".join(f"{r['date']}  {r['temp_c']:>6} °C" for r in rows) + "\n"
    )
(out / "index.txt").write_text("\n".join(sorted(by_city)) + "\n")
print(f"wrote {len(by_city) + 1} files into {out}/")
