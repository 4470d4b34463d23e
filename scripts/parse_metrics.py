#!/usr/bin/python3
"""Reads Prometheus text (version 0.0.4) on stdin with prometheus_client's parser, adds the checks
that parser leaves out, and prints every sample as JSON: {"name{k=v,...}": value}.
Exits 1 on anything malformed: every family needs HELP and a known TYPE, counters end in _total,
histogram buckets are cumulative and end with +Inf equal to _count, no series appears twice."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
errors = []
helps, types = set(), {}
for line in text.splitlines():
    if line.startswith("# HELP "):
        helps.add(line.split()[2])
    elif line.startswith("# TYPE "):
        _, _, name, kind = line.split(maxsplit=3)
        types[name] = kind
    elif line and not line.startswith("#") and not line[0].isalpha():
        errors.append("bad line: " + line)
out = {}
for family in text_string_to_metric_families(text):
    declared = family.name + ("_total" if family.type == "counter" and family.name + "_total" in types else "")
    if declared not in helps or declared not in types:
        errors.append(f"{declared}: no HELP or TYPE")
    if family.type not in ("counter", "gauge", "histogram"):
        errors.append(f"{family.name}: type {family.type}")
    buckets = {}
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        key = f"{s.name}{{{labels}}}"
        if key in out:
            errors.append("duplicate series " + key)
        out[key] = s.value
        if family.type == "counter" and not s.name.endswith("_total"):
            errors.append(f"counter sample {s.name} does not end in _total")
        if s.name.endswith("_bucket"):
            rest = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            buckets.setdefault(rest, []).append((float(s.labels["le"]), s.value))
    for rest, bs in buckets.items():
        values = [v for _, v in sorted(bs)]
        if values != sorted(values) or sorted(bs)[-1][0] != float("inf"):
            errors.append(f"{family.name}{rest}: buckets not cumulative or no +Inf")
        labels = ",".join(f"{k}={v}" for k, v in rest)
        if out.get(f"{family.name}_count{{{labels}}}") != values[-1]:
            errors.append(f"{family.name}{rest}: +Inf bucket != _count")
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(json.dumps(out))
