#!/usr/bin/env python3
"""Writes the ONNX node conformance suite from the generators of the pinned onnx wheel.

The onnx 1.23.2 wheel no longer ships the node test data, but it ships the generators
(`onnx.backend.test.case.node.collect_testcases`). Each case becomes a directory holding `model.onnx`
and `test_data_set_N/{input,output}_K.pb`, the layout `kiln onnx-conformance DIR` reads.

Usage: python3 tools/gen_onnx_node_suite.py [OUT_DIR]
OUT_DIR defaults to $KILN_CACHE/onnx-node-suite (KILN_CACHE defaults to ~/.cache/kiln). Needs
`pip install onnx==1.23.2 numpy`; any other onnx version is refused, because the case set and the
committed pass count belong to that version.
"""

import os
import shutil
import sys

PINNED = "1.23.2"


def main() -> int:
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnx.backend.test.case import node as node_cases

    if onnx.__version__ != PINNED:
        print(f"onnx {onnx.__version__} is installed but the suite is pinned to {PINNED}: "
              f"pip install onnx=={PINNED}", file=sys.stderr)
        return 1
    cache = os.environ.get("KILN_CACHE") or os.path.expanduser("~/.cache/kiln")
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(cache, "onnx-node-suite")
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)

    def serialize(value, value_info):
        # Sequences, optionals and maps have their own protos; plain tensors go through from_array.
        kind = value_info.type.WhichOneof("value")
        if kind == "sequence_type":
            return numpy_helper.from_list(value, value_info.name).SerializeToString()
        if kind == "optional_type":
            return numpy_helper.from_optional(value, value_info.name).SerializeToString()
        if kind == "map_type":
            return numpy_helper.from_dict(value, value_info.name).SerializeToString()
        if isinstance(value, TensorProto):
            return value.SerializeToString()
        return numpy_helper.from_array(value, value_info.name).SerializeToString()

    cases = node_cases.collect_testcases(None)
    for case in cases:
        case_dir = os.path.join(out, case.name)
        os.makedirs(case_dir)
        with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        graph = case.model.graph
        for i, (inputs, outputs) in enumerate(case.data_sets):
            data_dir = os.path.join(case_dir, f"test_data_set_{i}")
            os.makedirs(data_dir)
            for j, value in enumerate(inputs):
                with open(os.path.join(data_dir, f"input_{j}.pb"), "wb") as f:
                    f.write(serialize(value, graph.input[j]))
            for j, value in enumerate(outputs):
                with open(os.path.join(data_dir, f"output_{j}.pb"), "wb") as f:
                    f.write(serialize(value, graph.output[j]))
    print(f"wrote {len(cases)} node cases from onnx {onnx.__version__} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
