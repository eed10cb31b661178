"""Merge our kernel timings and the SDPA timings of the same run into gpu-decode.json."""
import json
import sys

ours = json.load(open(sys.argv[1]))
sdpa = {(r["B"], r["ctx"]): r for r in json.load(open(sys.argv[2]))["rows"]}
rows = []
for r in ours["rows"]:
    s = sdpa.get((r["B"], r["ctx"]))
    r["sdpa_ms"] = s["ms"] if s else None
    r["sdpa_tbps"] = s["tbps"] if s else None
    r["speedup"] = (s["ms"] / r["ms"]) if s else None
    rows.append(r)
ours["rows"] = rows
json.dump(ours, open(sys.argv[3], "w"), indent=1)
print(f"{'type':9} {'B':>3} {'ctx':>7} {'ms':>9} {'sdpa_ms':>9} {'x':>6} {'TB/s':>6} {'%copy':>6}")
for r in rows:
    sp = f"{r['speedup']:.2f}" if r["speedup"] else "-"
    sm = f"{r['sdpa_ms']:.4f}" if r["sdpa_ms"] else "-"
    print(f"{r['type']:9} {r['B']:>3} {r['ctx']:>7} {r['ms']:>9.4f} {sm:>9} {sp:>6} "
          f"{r['tbps']:>6.3f} {r['pct_copy']:>6.1f}")
for a in ours.get("append", []):
    print(f"append {a['type']:9} {a['tokens']} tokens: {a['ms']:.3f} ms, {a['tbps']:.3f} TB/s of bf16 input")
