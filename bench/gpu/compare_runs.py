"""Before/after decode table from alternating benchmark runs (bench/gpu/compare.sh):
compare_runs.py DIR → for each type, the median over the runs of each binary's median time
(B = 32, ctx = 32768), and the change."""
import glob
import json
import statistics
import sys

d = sys.argv[1]
res = {}
for tag in ("before", "after"):
    for f in sorted(glob.glob(f"{d}/{tag}_*.json")):
        for r in json.load(open(f))["rows"]:
            res.setdefault((r["type"], r["B"], r["ctx"]), {}).setdefault(tag, []).append(r["ms"])
print(f"{'type':9} {'B':>3} {'ctx':>6} {'before ms':>10} {'after ms':>10} {'change':>8}  runs")
for (t, b, c), v in res.items():
    bm, am = statistics.median(v.get("before", [0])), statistics.median(v.get("after", [0]))
    ch = f"{100 * (am - bm) / bm:+.1f}%" if bm and am else "-"
    spread = lambda xs: f"{min(xs):.4f}-{max(xs):.4f}" if xs else "-"
    print(f"{t:9} {b:>3} {c:>6} {bm:>10.4f} {am:>10.4f} {ch:>8}  "
          f"before {spread(v.get('before', []))}, after {spread(v.get('after', []))}")
