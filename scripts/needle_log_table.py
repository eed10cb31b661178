#!/usr/bin/env python3
"""Markdown table of `tq needle --log` files: one line per (row, length), a cell per depth
(correct/trials), the mean accuracy, points against the f16 reference of the same length, and
CPU seconds per prompt. Usage: scripts/needle_log_table.py LOG [LOG ...]"""
import json
import sys
from collections import defaultdict


def main(paths):
    cells = defaultdict(lambda: [0, 0])  # (row, length, depth) -> [correct, trials]
    cpu = defaultdict(list)  # (row, length) -> CPU seconds per prompt
    rows, depths = [], set()
    for p in paths:
        with open(p) as f:
            for line in f:
                if not line.strip():
                    continue
                j = json.loads(line)
                key = (j["row"], j["length"])
                if key not in rows:
                    rows.append(key)
                depths.add(j["depth"])
                c = cells[(j["row"], j["length"], j["depth"])]
                c[0] += bool(j["correct"])
                c[1] += 1
                cpu[key].append(j["cpu_seconds"])
    depths = sorted(depths)
    order = {k: i for i, k in enumerate(rows)}
    rows.sort(key=lambda k: (k[1], k[0] != "f16 (reference)", order[k]))

    def mean(row, length):
        acc = [cells[(row, length, d)][0] / cells[(row, length, d)][1]
               for d in depths if cells[(row, length, d)][1]]
        return 100.0 * sum(acc) / len(acc) if acc else None

    print("| row | length | " + " | ".join(f"d={d:g}" for d in depths) +
          " | mean | vs f16 | CPU s / prompt |")
    print("|---|---|" + "---|" * len(depths) + "---|---|---|")
    for row, length in rows:
        m, ref = mean(row, length), mean("f16 (reference)", length)
        cs = " | ".join(f"{cells[(row, length, d)][0]}/{cells[(row, length, d)][1]}"
                        if cells[(row, length, d)][1] else "–" for d in depths)
        vs = "" if row == "f16 (reference)" or ref is None else f"{m - ref:+.1f}"
        t = cpu[(row, length)]
        print(f"| {row} | {length} | {cs} | {m:.0f} % | {vs} | {sum(t) / len(t):.0f} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
