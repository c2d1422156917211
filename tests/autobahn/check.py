#!/usr/bin/env python3
"""Summarise an Autobahn fuzzingclient index.json and compare it to expected results.

Usage: check.py INDEX_JSON EXPECTED_TXT [--update] [--subset] [--agent NAME] [--cases N]

expected.txt holds one line per case, `case behavior behaviorClose`, sorted by case id
numerically; lines starting with '#' and blank lines are ignored. behaviorClose may hold a
space (wstest's "WRONG CODE", "FAILED BY CLIENT"), so it is the rest of the line.

Exit status: 0 when every case is OK or INFORMATIONAL (in both behavior and behaviorClose)
and the results equal expected.txt; 1 otherwise (2 for usage or unreadable input).

--update   write expected.txt from this run instead of comparing (still exits 1 when a
           case is FAILED / NON-STRICT / UNIMPLEMENTED).
--subset   the run covered only some cases (AUTOBAHN_CASES): compare only the cases that
           were run; with --update, replace only those lines and keep the others.
--cases N  the number of cases the spec selected: fewer in index.json means wstest gave up
           part-way (it stops the run, and still writes index.json, when a connection is
           refused); that fails, and --update then writes nothing.
"""

import argparse
import difflib
import json
import os
import sys

GOOD = ("OK", "INFORMATIONAL")
ORDER = ("OK", "INFORMATIONAL", "NON-STRICT", "FAILED", "UNIMPLEMENTED")


def case_key(case_id):
    """'1.2.10' -> (1, 2, 10), so that cases sort numerically."""
    try:
        return tuple(int(p) for p in case_id.split("."))
    except ValueError:
        return (float("inf"), case_id)


def load_index(path, agent):
    with open(path, encoding="utf-8") as f:
        index = json.load(f)
    if not isinstance(index, dict) or not index:
        raise ValueError("no agent in %s" % path)
    if agent is None:
        if len(index) != 1:
            raise ValueError("several agents in %s (%s): pass --agent" % (path, ", ".join(sorted(index))))
        agent = next(iter(index))
    if agent not in index:
        raise ValueError("agent %r not in %s (has %s)" % (agent, path, ", ".join(sorted(index))))
    results = {}
    for case_id, r in index[agent].items():
        results[case_id] = (r.get("behavior", "?"), r.get("behaviorClose", "?"))
    return agent, results


def load_expected(path):
    expected = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) != 3:
                raise ValueError("%s:%d: expected `case behavior behaviorClose`, got %r" % (path, n, line))
            expected[parts[0]] = (parts[1], parts[2])
    return expected


def render(results):
    return ["%s %s %s\n" % (c, b, bc) for c, (b, bc) in sorted(results.items(), key=lambda kv: case_key(kv[0]))]


def count(values):
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    other = sorted(k for k in counts if k not in ORDER)
    return ", ".join("%s %d" % (k, counts.get(k, 0)) for k in list(ORDER) + other)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index")
    ap.add_argument("expected")
    ap.add_argument("--update", action="store_true")
    ap.add_argument("--subset", action="store_true")
    ap.add_argument("--agent")
    ap.add_argument("--cases", type=int, help="number of cases the spec selected")
    args = ap.parse_args()

    try:
        agent, results = load_index(args.index, args.agent)
    except (OSError, ValueError) as e:
        print("autobahn: cannot read results: %s" % e)
        return 2
    if not results:
        print("autobahn: %s has no cases for agent %s" % (args.index, agent))
        return 1

    print("autobahn: agent %s, %d cases" % (agent, len(results)))
    print("  behavior:      %s" % count(b for b, _ in results.values()))
    print("  behaviorClose: %s" % count(bc for _, bc in results.values()))

    bad = {c: r for c, r in results.items() if r[0] not in GOOD or r[1] not in GOOD}
    if bad:
        print("autobahn: %d case(s) not OK/INFORMATIONAL (case behavior behaviorClose):" % len(bad))
        for line in render(bad):
            print("  " + line, end="")
        report_dir = os.path.dirname(os.path.abspath(args.index))
        print("  (details: %s/index.html and the per-case JSON files there)" % report_dir)

    ok = not bad

    complete = args.cases is None or len(results) >= args.cases
    if not complete:
        ok = False
        print("autobahn: only %d of the %d selected cases have results: the run stopped part-way"
              " (did the server die or refuse a connection?)" % (len(results), args.cases))

    if args.update and not complete:
        print("autobahn: not updating %s from an incomplete run" % args.expected)
    elif args.update:
        merged = dict(results)
        if args.subset and os.path.exists(args.expected):
            try:
                old = load_expected(args.expected)
            except (OSError, ValueError) as e:
                print("autobahn: cannot read %s: %s" % (args.expected, e))
                return 2
            old.update(results)
            merged = old
        with open(args.expected, "w", encoding="utf-8") as f:
            f.writelines(render(merged))
        print("autobahn: wrote %d cases to %s" % (len(merged), args.expected))
    else:
        try:
            expected = load_expected(args.expected)
        except FileNotFoundError:
            print("autobahn: %s is missing (create it with run.sh --update)" % args.expected)
            expected = None
            ok = False
        except (OSError, ValueError) as e:
            print("autobahn: cannot read %s: %s" % (args.expected, e))
            return 2
        if expected is not None:
            if args.subset:
                expected = {c: r for c, r in expected.items() if c in results}
            want, got = render(expected), render(results)
            if want != got:
                ok = False
                print("autobahn: results differ from %s (- expected, + this run):" % args.expected)
                sys.stdout.writelines(difflib.unified_diff(want, got, "expected.txt", "this run", n=0))
            else:
                print("autobahn: results match %s (%d cases)" % (args.expected, len(results)))

    print("autobahn: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
