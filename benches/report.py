#!/usr/bin/env python3
"""Summarise criterion results as Markdown: throughput per bench and the issue-5 target ratios.

Usage: python3 benches/report.py [TARGET_DIR]   (default: target)

Reads TARGET_DIR/criterion/**/new/{benchmark,estimates}.json as left by `cargo bench`. Times
are criterion's median estimate per iteration. Ratios compare benches of the same run.
"""

import json
import os
import platform
import sys
import time

GIB = 1 << 30


def load(target):
    root = os.path.join(target, "criterion")
    results = {}
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        ns = est["median"]["point_estimate"]
        results[bench["full_id"]] = {
            "group": bench["group_id"],
            "function": bench.get("function_id") or "",
            "value": bench.get("value_str") or "",
            "ns": ns,
            "throughput": bench.get("throughput") or {},
            "mtime": os.path.getmtime(os.path.join(dirpath, "estimates.json")),
        }
    return results


def rate(r):
    """Human throughput: GiB/s for bytes, M/s or K/s for elements."""
    t = r["throughput"]
    if "Bytes" in t:
        return "%.2f GiB/s" % (t["Bytes"] / r["ns"] * 1e9 / GIB)
    if "BytesDecimal" in t:
        return "%.2f GB/s" % (t["BytesDecimal"] / r["ns"])
    if "Elements" in t:
        per_s = t["Elements"] / r["ns"] * 1e9
        return "%.2f M/s" % (per_s / 1e6) if per_s >= 1e6 else "%.1f K/s" % (per_s / 1e3)
    return ""


def fmt_time(ns):
    if ns < 1e3:
        return "%.2f ns" % ns
    if ns < 1e6:
        return "%.2f µs" % (ns / 1e3)
    return "%.2f ms" % (ns / 1e6)


def size_label(value):
    try:
        n = int(value)
    except ValueError:
        return value
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return "%d MiB" % (n >> 20)
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return "%d KiB" % (n >> 10)
    return "%d B" % n


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# "No slower than" targets compare loops that are both bound by the same bandwidth at some
# sizes; a shortfall this small is reported as a tie, not hidden as a pass.
TIE = 0.02


def verdict(ratio, need):
    if ratio >= need:
        return "met"
    if need == 1.0 and ratio >= need - TIE:
        return "tie (within 2%)"
    return "**MISSED**"


def mask_section(res, out):
    """Unmasking: throughput table and the three targets, per placement."""
    targets = []
    for placement in ("aligned", "unaligned"):
        group = "mask/" + placement
        sizes = sorted(
            {int(r["value"]) for r in res.values() if r["group"] == group}, key=int
        )
        if not sizes:
            continue
        out.append("\n### Unmasking, %s (`%s`)\n" % (placement, group))
        out.append(
            "| size | apply_mask | bytewise | fastwebsockets | memcpy "
            "| vs memcpy | vs fastwebsockets | vs bytewise |"
        )
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for size in sizes:
            row = {}
            for fn in ("apply_mask", "bytewise", "fastwebsockets", "memcpy"):
                row[fn] = res.get("%s/%s/%d" % (group, fn, size))
            if row["apply_mask"] is None:
                continue
            prod = row["apply_mask"]["ns"]

            def ratio(fn):
                return row[fn]["ns"] / prod if row[fn] else None

            cells = [rate(row[fn]) if row[fn] else "-" for fn in row]
            ratios = [ratio("memcpy"), ratio("fastwebsockets"), ratio("bytewise")]
            out.append(
                "| %s | %s | %s |"
                % (
                    size_label(str(size)),
                    " | ".join(cells),
                    " | ".join("%.2fx" % x if x else "-" for x in ratios),
                )
            )
            name = "%s %s" % (placement, size_label(str(size)))
            if 4 << 10 <= size <= 1 << 20 and ratios[0]:
                targets.append(("apply_mask ≥ 0.7x memcpy, " + name, ratios[0], 0.7))
            if ratios[1]:
                targets.append(("apply_mask ≥ 1.0x fastwebsockets, " + name, ratios[1], 1.0))
            if size <= 16 and ratios[2]:
                targets.append(("apply_mask ≥ 1.0x bytewise, " + name, ratios[2], 1.0))
    group = "mask/split"
    sizes = sorted({int(r["value"]) for r in res.values() if r["group"] == group})
    if sizes:
        out.append("\n### Unmasking split in two calls at an odd point (`%s`)\n" % group)
        out.append("| size | apply_mask | bytewise | vs bytewise |")
        out.append("|---:|---:|---:|---:|")
        for size in sizes:
            p = res.get("%s/apply_mask/%d" % (group, size))
            b = res.get("%s/bytewise/%d" % (group, size))
            if p and b:
                out.append(
                    "| %s | %s | %s | %.2fx |"
                    % (size_label(str(size)), rate(p), rate(b), b["ns"] / p["ns"])
                )
    return targets


def utf8_section(res, out):
    targets = []
    inputs = [g for g in ("ascii", "mixed", "invalid") if "utf8/%s/simdutf8/oneshot" % g in res]
    if not inputs:
        return targets
    out.append("\n### UTF-8 validation, 64 KiB (`utf8/*`)\n")
    out.append(
        "| input | incremental 4 KiB | incremental 1 B | wsreactor one-shot | unmask+check fused "
        "| unmask, then check | simdutf8 one-shot | std one-shot | 4 KiB vs simdutf8 "
        "| fused vs two passes |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in inputs:
        g = "utf8/" + name
        inc = res.get(g + "/incremental/4KiB")
        one = res.get(g + "/incremental/1B")
        ours = res.get(g + "/wsreactor/oneshot")
        fused = res.get(g + "/wsreactor/unmask_fused")
        two = res.get(g + "/wsreactor/unmask_then_check")
        simd = res.get(g + "/simdutf8/oneshot")
        std = res.get(g + "/std/oneshot")
        r = simd["ns"] / inc["ns"] if inc and simd else None
        f = two["ns"] / fused["ns"] if two and fused else None
        cells = [rate(x) if x else "-" for x in (inc, one, ours, fused, two, simd, std)]
        ratios = ["%.2fx" % x if x else "-" for x in (r, f)]
        out.append("| %s | %s | %s |" % (name, " | ".join(cells), " | ".join(ratios)))
        if r:
            targets.append(("incremental 4 KiB ≥ 0.9x simdutf8 one-shot, " + name, r, 0.9))
    return targets


def other_section(res, out):
    groups = ["frame/", "handshake", "echo_path"]
    rows = [
        (k, r)
        for k, r in sorted(res.items())
        if any(r["group"].startswith(g) for g in groups)
    ]
    if not rows:
        return
    out.append("\n### Frames, handshake, echo path\n")
    out.append("| bench | time | throughput |")
    out.append("|---|---:|---:|")
    for k, r in rows:
        out.append("| `%s` | %s | %s |" % (k, fmt_time(r["ns"]), rate(r)))
    echo = [(k, r) for k, r in rows if r["group"] == "echo_path" and r["function"] == "text"]
    for k, r in echo:
        copy = res.get("echo_path/copy_only/" + r["value"])
        if copy:
            out.append(
                "| `%s` minus its input copy | %s | |" % (k, fmt_time(r["ns"] - copy["ns"]))
            )


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "target"
    res = load(target)
    if not res:
        sys.exit("no criterion results under %s/criterion: run `cargo bench` first" % target)
    newest = max(r["mtime"] for r in res.values())
    out = [
        "Measured %s on %s (%d cores visible), rustc release+LTO, median of criterion samples."
        % (
            time.strftime("%Y-%m-%d", time.localtime(newest)),
            cpu_model(),
            os.cpu_count() or 0,
        )
    ]
    targets = mask_section(res, out)
    targets += utf8_section(res, out)
    other_section(res, out)
    if targets:
        out.append("\n### Targets\n")
        out.append("| target | measured | verdict |")
        out.append("|---|---:|---|")
        for name, ratio, need in targets:
            out.append("| %s | %.2fx | %s |" % (name, ratio, verdict(ratio, need)))
        verdicts = [verdict(r, n) for _, r, n in targets]
        out.append(
            "\n%d of %d target checks met, %d ties within 2%%, %d missed."
            % (
                verdicts.count("met"),
                len(verdicts),
                sum(v.startswith("tie") for v in verdicts),
                sum(v.startswith("**") for v in verdicts),
            )
        )
    print("\n".join(out))


if __name__ == "__main__":
    main()
