#!/usr/bin/env python3
"""Checks a moerun output against its input (and a reference output).

  check-jsonl.py OUT IN [REF] [--partial]

Every line of OUT must be one whole JSON object with an "id"; no id may be
answered twice; without --partial every input id must be answered.  With
REF (an uninterrupted run), each line must equal REF's line of that id,
byte for byte.  Prints what it found; exit 1 on any problem."""
import json
import sys

args = [a for a in sys.argv[1:] if not a.startswith("--")]
partial = "--partial" in sys.argv
out_path, in_path = args[0], args[1]
ref_path = args[2] if len(args) > 2 else None
problems = []

ids_in = []
with open(in_path, "rb") as f:
    for n, raw in enumerate(f, 1):
        if raw.strip():
            ids_in.append(json.loads(raw)["id"])
want = set(ids_in)
if len(want) != len(ids_in):
    problems.append("the input repeats ids")


def lines_by_id(path, what):
    seen = {}
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        problems.append(f"{what}: the last line is not whole (no final newline)")
    for n, raw in enumerate(data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"), 1):
        try:
            obj = json.loads(raw)
        except ValueError as e:
            problems.append(f"{what}:{n}: not JSON ({e}): {raw[:80]!r}")
            continue
        if not isinstance(obj, dict) or "id" not in obj:
            problems.append(f"{what}:{n}: not an object with an id")
            continue
        key = obj["id"]
        if key in seen:
            problems.append(f"{what}:{n}: id {key!r} answered twice (first on line {seen[key][0]})")
        seen[key] = (n, raw)
    return seen


got = lines_by_id(out_path, "output")
extra = [k for k in got if k not in want]
missing = [k for k in ids_in if k not in got]
if extra:
    problems.append(f"{len(extra)} ids not in the input, e.g. {extra[:3]}")
if missing and not partial:
    problems.append(f"{len(missing)} input ids unanswered, e.g. {missing[:3]}")
if ref_path:
    ref = lines_by_id(ref_path, "reference")
    diff = [k for k in got if k in ref and got[k][1] != ref[k][1]]
    if diff:
        k = diff[0]
        problems.append(f"{len(diff)} lines differ from the reference, first id {k!r}:\n  got {got[k][1][:160]!r}\n"
                        f"  ref {ref[k][1][:160]!r}")
print(f"check-jsonl: {len(got)} lines, {len(want)} input ids, {len(missing)} unanswered"
      + (", lines equal to the reference" if ref_path and not problems else ""))
for p in problems:
    print("  problem:", p)
sys.exit(1 if problems else 0)
