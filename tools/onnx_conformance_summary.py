#!/usr/bin/env python3
"""Writes bench/onnx-conformance.md: a per-op table of `kiln onnx-conformance DIR --json` results.

Usage: python3 tools/onnx_conformance_summary.py SUITE_DIR RESULTS.json COMMAND [NOTE.md] > bench/onnx-conformance.md
NOTE.md, when given, is a paragraph printed after the counts (what changed since the previous run).
Each case is attributed to the operator it tests: the last op of its (non-expanded) model, read with
the pinned onnx package; `_expanded` cases belong to the op whose function body they spell out.
"""

import collections
import datetime
import json
import os
import sys


def case_ops(suite):
    import onnx

    ops = {}
    for name in sorted(os.listdir(suite)):
        if "_expanded" in name or not os.path.isfile(os.path.join(suite, name, "model.onnx")):
            continue
        nodes = onnx.load(os.path.join(suite, name, "model.onnx")).graph.node
        types = [n.op_type for n in nodes]
        ops[name] = types[-1] if len(set(types)) > 1 else types[0]
    return ops


def main():
    suite, results_path, command = sys.argv[1], sys.argv[2], sys.argv[3]
    note = open(sys.argv[4]).read().strip() if len(sys.argv) > 4 else None
    results = json.load(open(results_path))
    ops = case_ops(suite)
    table = collections.defaultdict(collections.Counter)
    for case in results["cases"]:
        op = ops.get(case["name"].split("_expanded")[0], "?")
        table[op]["cases"] += 1
        table[op][case["status"]] += 1
    total = len(results["cases"])
    print("# ONNX node conformance\n")
    print(f"kiln's ONNX importer and CPU executor on the node suite of onnx 1.23.2 "
          f"(`tools/gen_onnx_node_suite.py`), {datetime.date.today().isoformat()}.\n")
    print(f"Command: `{command}`\n")
    print(f"**{results['passed']} of {total} cases pass**, {results['failed']} fail, "
          f"{results['unsupported']} are unsupported (the op, an opset feature or a dtype kiln lacks; "
          "each case's `detail` names it). Floats compare with rtol 1e-3, atol 1e-4; the 8- and "
          "4-bit floats exactly by value (NaN equal to NaN); integers, bools and strings exactly. `.ci/run` fails when fewer cases pass than `bench/onnx-conformance.count`.\n")
    if note:
        print(note + "\n")
    print("Where an op needs an input's value when the graph is imported (Squeeze's `axes`, Split's "
          "sizes, Resize's scales, a Loop's trip count... given as graph inputs in the suite, or "
          "computed from them), the runner supplies the case's value and the import is specialised "
          "to it.\n")
    print("| op | cases | passed | failed | unsupported |")
    print("|---|---:|---:|---:|---:|")
    for op in sorted(table, key=lambda o: (-table[o]["cases"], o)):
        c = table[op]
        print(f"| {op} | {c['cases']} | {c['pass']} | {c['fail']} | {c['unsupported']} |")
    print(f"| **total** | {total} | {results['passed']} | {results['failed']} | {results['unsupported']} |")


if __name__ == "__main__":
    main()
