#!/usr/bin/env python3
"""Turns `cargo bench --bench kernels` output (divan's tree) into the
Markdown table of BENCHMARKS.md: per kernel, scalar vs SIMD throughput
(MB/s of f32 input; median and fastest sample) and the speedup.

    cargo bench --bench kernels | tee kernels.txt; python3 benches/divan_table.py kernels.txt
"""
import re
import sys

UNIT = {"B/s": 1e-6, "KB/s": 1e-3, "MB/s": 1.0, "GB/s": 1e3, "TB/s": 1e6}


def parse(text):
    rows, group, name, pending = {}, None, None, False
    for line in text.splitlines():
        m = re.match(r"^[├╰]─ (\w+)\s", line)
        if m:
            group = m.group(1)
            continue
        m = re.match(r"^[│ ]  [├╰]─ (\S+)\s", line)
        if m:
            name, pending = m.group(1), True
            continue
        if pending:
            cells = [c.strip() for c in line.split("│")]
            vals = []
            for c in cells:
                mm = re.match(r"^([\d.]+) ([KMGT]?B/s)$", c)
                if mm:
                    vals.append(float(mm.group(1)) * UNIT[mm.group(2)])
            if len(vals) >= 3:
                kind, impl = group.rsplit("_", 1)
                rows.setdefault((kind, name), {})[impl] = {"fastest": vals[0], "median": vals[2]}
            pending = False
    return rows


def fmt(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def main():
    rows = parse(open(sys.argv[1]).read())
    print("| kernel | type | scalar MB/s (median / best) | SIMD MB/s (median / best) | speedup (median / best) |")
    print("|---|---|---|---|---|")
    for (kind, name), r in sorted(rows.items()):
        if "scalar" not in r or "simd" not in r:
            continue
        s, v = r["scalar"], r["simd"]
        print(f"| {kind} | {name} | {fmt(s['median'])} / {fmt(s['fastest'])} | {fmt(v['median'])} / {fmt(v['fastest'])} "
              f"| {v['median'] / s['median']:.1f}× / {v['fastest'] / s['fastest']:.1f}× |")


if __name__ == "__main__":
    main()
