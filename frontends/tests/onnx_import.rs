//! The ONNX importer on hand-built models: what it accepts (initializers in raw, typed and external
//! form, unsigned element types, symbolic dims, opset-dependent semantics, If, Loop unrolled at
//! import) and a clear error for each kind of malformed input (not a protobuf, an input nothing
//! produces, a cycle, an initializer whose size disagrees with its shape, external data outside the
//! model directory, a Loop that cannot be unrolled).

use std::path::Path;

use kiln_frontends::FrontendError;
use kiln_frontends::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataLocation,
    tensor_shape_proto::Dimension, tensor_shape_proto::dimension, type_proto,
};
use kiln_frontends::onnx::{ImportOptions, OnnxError, import_bytes, load_onnx};
use kiln_ir::{Dim, Op, Tensor};
use prost::Message;

const FLOAT: i32 = 1;

fn value_info(name: &str, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Ok(n) => dimension::Value::DimValue(*n),
                Err(p) => dimension::Value::DimParam(p.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(FLOAT),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model(graph: GraphProto, opset: i64) -> ModelProto {
    ModelProto {
        ir_version: Some(10),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
        graph: Some(graph),
        ..Default::default()
    }
}

fn f32_raw(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(FLOAT),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn import(m: &ModelProto) -> Result<kiln_frontends::onnx::OnnxImport, OnnxError> {
    import_bytes(&m.encode_to_vec(), None, "test", &ImportOptions::default())
}

/// Evaluates an imported graph of generic ops with kiln's reference evaluator, weights materialised.
fn evaluate(m: &kiln_ir::Model, inputs: &[Tensor]) -> Vec<Tensor> {
    let g = &m.graph;
    let mut values: Vec<Option<Tensor>> = vec![None; g.num_values()];
    for (&v, t) in g.inputs().iter().zip(inputs) {
        values[v.index()] = Some(t.clone());
    }
    for (_, n) in g.nodes() {
        let outs = match &n.op {
            Op::Weight { name } => vec![m.weights.get(name).unwrap().to_tensor()],
            op => {
                let args: Vec<&Tensor> = n.inputs.iter().map(|v| values[v.index()].as_ref().unwrap()).collect();
                kiln_ir::eval::eval_generic(op, &args).unwrap().expect("a generic op")
            }
        };
        for (&o, t) in n.outputs.iter().zip(outs) {
            values[o.index()] = Some(t);
        }
    }
    g.outputs().iter().map(|v| values[v.index()].clone().unwrap()).collect()
}

fn linear_graph(weight: TensorProto) -> GraphProto {
    GraphProto {
        name: Some("linear".into()),
        node: vec![node("MatMul", &["x", "w"], &["y"])],
        input: vec![value_info("x", &[Err("batch"), Ok(3)])],
        output: vec![value_info("y", &[Err("batch"), Ok(2)])],
        initializer: vec![weight],
        ..Default::default()
    }
}

#[test]
fn a_matmul_imports_with_symbolic_batch_and_computes() {
    let w = f32_raw("w", &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let imported = import(&model(linear_graph(w), 17)).unwrap();
    let g = &imported.model.graph;
    assert_eq!(g.value_type(g.inputs()[0]).shape.dims()[0], Dim::sym("batch"));
    assert_eq!(imported.input_names, ["x"]);
    let x = Tensor::f32(vec![2, 3], vec![1.0, 0.0, -1.0, 0.5, 0.5, 0.5]).unwrap();
    let y = evaluate(&imported.model, &[x]);
    // [1,0,-1] @ w = [1-5, 2-6]; [.5,.5,.5] @ w = [4.5, 6].
    assert_eq!(y[0].to_f32_vec(), [-4.0, -4.0, 4.5, 6.0]);
}

#[test]
fn typed_field_initializers_match_raw_ones() {
    let mut w = f32_raw("w", &[3, 2], &[]);
    w.raw_data = None;
    w.float_data = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let imported = import(&model(linear_graph(w), 17)).unwrap();
    let x = Tensor::f32(vec![1, 3], vec![1.0, 1.0, 1.0]).unwrap();
    assert_eq!(evaluate(&imported.model, &[x])[0].to_f32_vec(), [9.0, 12.0]);
}

#[test]
fn large_initializers_become_weights_and_external_data_is_read_beside_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<f32> = (0..3000).map(|i| i as f32 * 0.5).collect();
    let mut bytes = vec![0u8; 16];
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(dir.path().join("weights.bin"), &bytes).unwrap();
    let mut w = f32_raw("w", &[3, 1000], &[]);
    w.raw_data = None;
    w.data_location = Some(DataLocation::External as i32);
    let entry = |k: &str, v: &str| StringStringEntryProto { key: Some(k.into()), value: Some(v.into()) };
    w.external_data = vec![entry("location", "weights.bin"), entry("offset", "16"), entry("length", "12000")];
    let mut g = linear_graph(w);
    g.output = vec![value_info("y", &[Err("batch"), Ok(1000)])];
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, model(g, 17).encode_to_vec()).unwrap();
    let m = load_onnx(&path).unwrap();
    let stored = m.weights.get("w").unwrap().to_tensor();
    assert_eq!(stored.to_f32_vec(), values);
    assert!(kiln_ir::text::print(&m.graph).contains("weight {name = \"w\"}"));
}

#[test]
fn squeeze_axes_follow_the_opset() {
    // Opset 11: axes is an attribute; opset 13: an input.
    let mut n = node("Squeeze", &["x"], &["y"]);
    n.attribute = vec![AttributeProto {
        name: Some("axes".into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: vec![0],
        ..Default::default()
    }];
    let graph = |n: NodeProto, init: Vec<TensorProto>| GraphProto {
        node: vec![n],
        input: vec![value_info("x", &[Ok(1), Ok(3)])],
        output: vec![value_info("y", &[Ok(3)])],
        initializer: init,
        ..Default::default()
    };
    let old = import(&model(graph(n, vec![]), 11)).unwrap();
    let out = old.model.graph.outputs()[0];
    assert_eq!(old.model.graph.value_type(out).to_string(), "f32[3]");
    let axes = TensorProto {
        name: Some("axes".into()),
        dims: vec![1],
        data_type: Some(7),
        int64_data: vec![0],
        ..Default::default()
    };
    let new = import(&model(graph(node("Squeeze", &["x", "axes"], &["y"]), vec![axes]), 13)).unwrap();
    let out = new.model.graph.outputs()[0];
    assert_eq!(new.model.graph.value_type(out).to_string(), "f32[3]");
}

#[test]
fn bytes_that_are_not_a_protobuf_are_refused() {
    for bytes in [&b"this is not an onnx model"[..], &[0x0a, 0xff, 0xff, 0xff][..], &[0x08][..]] {
        let err = import_bytes(bytes, None, "test", &ImportOptions::default()).unwrap_err();
        assert!(matches!(err, OnnxError::Decode { .. }), "{err}");
        assert!(err.to_string().contains("not an ONNX model"), "{err}");
    }
}

#[test]
fn a_node_input_nothing_produces_is_named() {
    let g = GraphProto {
        node: vec![node("Add", &["x", "missing"], &["y"])],
        input: vec![value_info("x", &[Ok(2)])],
        output: vec![value_info("y", &[Ok(2)])],
        ..Default::default()
    };
    let err = import(&model(g, 17)).unwrap_err();
    assert!(matches!(err, OnnxError::UnknownInput { ref input, .. } if input == "missing"), "{err}");
    assert!(err.to_string().contains("`missing`, which no node produces"), "{err}");
}

#[test]
fn a_cycle_is_reported_with_its_nodes() {
    let mut a = node("Neg", &["b"], &["a"]);
    a.name = Some("first".into());
    let mut b = node("Neg", &["a"], &["b"]);
    b.name = Some("second".into());
    let g = GraphProto {
        node: vec![a, b, node("Add", &["x", "a"], &["y"])],
        input: vec![value_info("x", &[Ok(2)])],
        output: vec![value_info("y", &[Ok(2)])],
        ..Default::default()
    };
    let err = import(&model(g, 17)).unwrap_err();
    let OnnxError::Cycle { nodes } = &err else { panic!("expected a cycle, got {err}") };
    assert!(nodes.contains(&"first".to_string()) && nodes.contains(&"second".to_string()), "{err}");
}

#[test]
fn an_initializer_whose_size_disagrees_with_its_shape_is_refused() {
    let w = f32_raw("w", &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0]);
    let err = import(&model(linear_graph(w), 17)).unwrap_err();
    assert!(matches!(err, OnnxError::BadTensor { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("`w`") && msg.contains("6 elements") && msg.contains("raw_data holds 20 bytes"), "{msg}");
    let mut typed = f32_raw("w", &[3, 2], &[]);
    typed.raw_data = None;
    typed.float_data = vec![1.0; 7];
    let msg = import(&model(linear_graph(typed), 17)).unwrap_err().to_string();
    assert!(msg.contains("float_data holds 7 values"), "{msg}");
}

fn external(location: &str) -> TensorProto {
    let mut w = f32_raw("w", &[3, 2], &[]);
    w.raw_data = None;
    w.data_location = Some(DataLocation::External as i32);
    w.external_data = vec![StringStringEntryProto { key: Some("location".into()), value: Some(location.into()) }];
    w
}

fn load_with_external(dir: &Path, location: &str) -> FrontendError {
    let path = dir.join("m.onnx");
    std::fs::write(&path, model(linear_graph(external(location)), 17).encode_to_vec()).unwrap();
    load_onnx(&path).unwrap_err()
}

#[test]
fn external_data_outside_the_model_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    let secret = root.path().join("secret.bin");
    std::fs::write(&secret, [0u8; 24]).unwrap();
    for location in ["../secret.bin", secret.to_str().unwrap(), "sub/../../secret.bin"] {
        let err = load_with_external(&dir, location).to_string();
        assert!(err.contains("must be a relative path inside the model's directory"), "{location}: {err}");
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&secret, dir.join("link.bin")).unwrap();
        let err = load_with_external(&dir, "link.bin").to_string();
        assert!(err.contains("outside the model's directory"), "{err}");
    }
    let err = load_with_external(&dir, "absent.bin").to_string();
    assert!(err.contains("cannot open `absent.bin`"), "{err}");
}

#[test]
fn unsupported_ops_and_dtypes_name_themselves() {
    let g = GraphProto {
        node: vec![node("NonMaxSuppression", &["x"], &["y"])],
        input: vec![value_info("x", &[Ok(2)])],
        output: vec![value_info("y", &[Ok(2)])],
        ..Default::default()
    };
    let err = import(&model(g, 17)).unwrap_err();
    assert!(err.is_unsupported());
    assert!(err.to_string().contains("`NonMaxSuppression` (domain ``, opset 17)"), "{err}");
    let mut w = f32_raw("w", &[3, 2], &[]);
    w.data_type = Some(27);
    let err = import(&model(linear_graph(w), 17)).unwrap_err();
    assert!(err.is_unsupported() && err.to_string().contains("FLOAT6E2M3"), "{err}");
}

/// `a + b` with `a` from the dtype's typed field and `b` from `raw_data`, both of ONNX type `elem_type`.
fn unsigned_sum_model(elem_type: i32, a: TensorProto, b_raw: Vec<u8>) -> ModelProto {
    let b = TensorProto {
        name: Some("b".into()),
        dims: a.dims.clone(),
        data_type: Some(elem_type),
        raw_data: Some(b_raw),
        ..Default::default()
    };
    let n = a.dims[0];
    model(
        GraphProto {
            node: vec![node("Add", &["a", "b"], &["y"])],
            output: vec![typed_value_info("y", elem_type, &[Ok(n)])],
            initializer: vec![a, b],
            ..Default::default()
        },
        17,
    )
}

#[test]
fn unsigned_initializers_decode_from_their_typed_fields_and_raw_data() {
    use kiln_ir::TensorData;
    const UINT16: i32 = 4;
    const UINT32: i32 = 12;
    const UINT64: i32 = 13;
    let typed = |elem_type: i32| TensorProto {
        name: Some("a".into()),
        dims: vec![2],
        data_type: Some(elem_type),
        ..Default::default()
    };
    // uint16 lives in int32_data; uint32 and uint64 in uint64_data (onnx.proto).
    let a = TensorProto { int32_data: vec![65535, 7], ..typed(UINT16) };
    let raw = [1u16, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let out = evaluate(&import(&unsigned_sum_model(UINT16, a, raw)).unwrap().model, &[]);
    assert_eq!(out[0].data(), &TensorData::U16(vec![0, 10]));

    let a = TensorProto { uint64_data: vec![u64::from(u32::MAX), 7], ..typed(UINT32) };
    let raw = [2u32, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let out = evaluate(&import(&unsigned_sum_model(UINT32, a, raw)).unwrap().model, &[]);
    assert_eq!(out[0].data(), &TensorData::U32(vec![1, 10]));

    let big = (1u64 << 63) + 5;
    let a = TensorProto { uint64_data: vec![big, u64::MAX], ..typed(UINT64) };
    let raw = [1u64, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let out = evaluate(&import(&unsigned_sum_model(UINT64, a, raw)).unwrap().model, &[]);
    assert_eq!(out[0].data(), &TensorData::U64(vec![big + 1, 0]));

    // The values in a field the type does not use are a size error naming the field.
    let a = TensorProto { int64_data: vec![1, 2], ..typed(UINT64) };
    let raw = [0u64, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let err = import(&unsigned_sum_model(UINT64, a, raw)).unwrap_err().to_string();
    assert!(err.contains("uint64_data holds 0 values"), "{err}");
}

// ---- the ONNX Runtime / Optimum cache interface ----

const INT64: i32 = 7;

fn typed_value_info(name: &str, elem_type: i32, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    let mut vi = value_info(name, dims);
    if let Some(TypeProto { value: Some(type_proto::Value::TensorType(t)), .. }) = &mut vi.r#type {
        t.elem_type = Some(elem_type);
    }
    vi
}

fn ints_attribute(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn int_attribute(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    }
}

fn i64_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![values.len() as i64],
        data_type: Some(INT64),
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// A one-layer graph with the ONNX Runtime cache interface: `present.0.* = concat(past, k)` with `k` the
/// embedded ids as `[1, 2 heads, seq, 3]`, and `logits = embedding + position + Σ attention_mask`, so the
/// result shows what the import bound the mask and the positions to.
fn cache_interface_graph() -> GraphProto {
    let emb: Vec<f32> = (0..30).map(|i| i as f32 * 0.5).collect();
    let mut transpose = node("Transpose", &["r"], &["k"]);
    transpose.attribute = vec![ints_attribute("perm", &[0, 2, 1, 3])];
    let concat = |past: &str, out: &str| {
        let mut n = node("Concat", &[past, "k"], &[out]);
        n.attribute = vec![int_attribute("axis", 2)];
        n
    };
    let mut cast_positions = node("Cast", &["position_ids"], &["pos_f"]);
    cast_positions.attribute = vec![int_attribute("to", i64::from(FLOAT))];
    let mut cast_mask = node("Cast", &["attention_mask"], &["mask_f"]);
    cast_mask.attribute = vec![int_attribute("to", i64::from(FLOAT))];
    GraphProto {
        name: Some("ort-cache".into()),
        node: vec![
            node("Gather", &["emb", "input_ids"], &["e"]),
            node("Reshape", &["e", "kv_shape"], &["r"]),
            transpose,
            concat("past_key_values.0.key", "present.0.key"),
            concat("past_key_values.0.value", "present.0.value"),
            cast_positions,
            node("Unsqueeze", &["pos_f", "last_axis"], &["pos_col"]),
            cast_mask,
            node("ReduceSum", &["mask_f"], &["mask_sum"]),
            node("Add", &["e", "pos_col"], &["e_pos"]),
            node("Add", &["e_pos", "mask_sum"], &["logits"]),
        ],
        input: vec![
            typed_value_info("input_ids", INT64, &[Ok(1), Err("seq")]),
            typed_value_info("attention_mask", INT64, &[Ok(1), Err("total")]),
            typed_value_info("position_ids", INT64, &[Ok(1), Err("seq")]),
            value_info("past_key_values.0.key", &[Ok(1), Ok(2), Err("past"), Ok(3)]),
            value_info("past_key_values.0.value", &[Ok(1), Ok(2), Err("past"), Ok(3)]),
        ],
        output: vec![
            value_info("logits", &[Ok(1), Err("seq"), Ok(6)]),
            value_info("present.0.key", &[Ok(1), Ok(2), Err("total"), Ok(3)]),
            value_info("present.0.value", &[Ok(1), Ok(2), Err("total"), Ok(3)]),
        ],
        initializer: vec![
            f32_raw("emb", &[5, 6], &emb),
            i64_tensor("kv_shape", &[1, -1, 2, 3]),
            i64_tensor("last_axis", &[2]),
        ],
        ..Default::default()
    }
}

#[test]
fn the_onnx_runtime_cache_interface_is_bound_to_a_first_step_from_an_empty_cache() {
    let imported = import(&model(cache_interface_graph(), 17)).unwrap();
    assert_eq!(imported.cache_interface_layers, Some(1));
    assert_eq!(imported.input_names, ["input_ids"], "mask, positions and pasts are bound, not inputs");
    assert_eq!(imported.output_names, ["logits"], "the presents are dropped");
    // The concats of an empty past with k are gone from the path to anything live.
    let g = &imported.model.graph;
    let uses = g.use_counts();
    assert!(
        g.nodes().all(|(_, n)| !matches!(n.op, Op::Concat { .. }) || uses[n.outputs[0].index()] == 0),
        "a concat with an empty past is still used"
    );
    let ids = [4i64, 0, 2];
    let out = evaluate(&imported.model, &[Tensor::i64(vec![1, 3], ids.to_vec()).unwrap()]);
    // embedding + position (0, 1, 2) + Σ mask (ones over the 3 ids).
    let want: Vec<f32> = ids
        .iter()
        .enumerate()
        .flat_map(|(p, &id)| (0..6).map(move |j| (id * 6 + j) as f32 * 0.5 + p as f32 + 3.0))
        .collect();
    assert_eq!(out[0].to_f32_vec(), want);
}

#[test]
fn an_incomplete_cache_interface_is_refused_with_what_is_missing() {
    let mut g = cache_interface_graph();
    g.input.retain(|i| i.name() != "past_key_values.0.value");
    let err = import(&model(g, 17)).unwrap_err().to_string();
    assert!(err.contains("past_key_values.0.value") && err.contains("missing"), "{err}");

    let mut g = cache_interface_graph();
    g.output.retain(|o| o.name() != "present.0.value");
    let err = import(&model(g, 17)).unwrap_err().to_string();
    assert!(err.contains("present") && err.contains("1 layers"), "{err}");

    let mut g = cache_interface_graph();
    g.input[3] = value_info("past_key_values.0.key", &[Ok(1), Err("heads"), Err("past"), Ok(3)]);
    let err = import(&model(g, 17)).unwrap_err().to_string();
    assert!(err.contains("past_key_values.0.key") && err.contains("static"), "{err}");
}

/// Inputs the `onnx_reader` fuzz target (fuzz/) found to panic the importer, kept as regressions: each
/// must import or fail with an error, never panic.
#[test]
fn inputs_the_fuzzer_found_are_refused_without_a_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx_fuzz_crashes");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| import_bytes(&bytes, None, "fuzz", &ImportOptions::default()));
        assert!(result.is_ok(), "{} panicked the importer", path.display());
        seen += 1;
    }
    assert!(seen > 0, "no regression inputs in {}", dir.display());
}

#[test]
fn a_same_padded_conv_whose_kernel_rank_disagrees_with_its_input_is_refused() {
    let mut conv = node("Conv", &["x", "w"], &["y"]);
    conv.attribute = vec![
        ints_attribute("kernel_shape", &[1, 1, 1]),
        AttributeProto {
            name: Some("auto_pad".into()),
            r#type: Some(AttributeType::String as i32),
            s: Some(b"SAME_UPPER".to_vec()),
            ..Default::default()
        },
    ];
    let g = GraphProto {
        node: vec![conv],
        input: vec![value_info("x", &[Ok(1), Ok(1), Ok(4), Ok(4)]), value_info("w", &[Ok(1), Ok(1), Ok(1), Ok(1)])],
        output: vec![value_info("y", &[Ok(1), Ok(1), Ok(4), Ok(4)])],
        ..Default::default()
    };
    let err = import(&model(g, 17)).unwrap_err().to_string();
    assert!(err.contains("kernel has 3 spatial dims") && err.contains("has 2"), "{err}");
}

// ---- Loop, unrolled at import ----

const BOOL: i32 = 9;

fn name_only(name: &str) -> ValueInfoProto {
    ValueInfoProto { name: Some(name.into()), ..Default::default() }
}

fn graph_attribute(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    }
}

fn loop_node(inputs: &[&str], outputs: &[&str], body: GraphProto) -> NodeProto {
    let mut n = node("Loop", inputs, outputs);
    n.attribute = vec![graph_attribute("body", body)];
    n
}

fn scalar_tensor(name: &str, elem_type: i32, value: i64) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(elem_type),
        int64_data: if elem_type == INT64 { vec![value] } else { vec![] },
        int32_data: if elem_type == BOOL { vec![value as i32] } else { vec![] },
        ..Default::default()
    }
}

/// Body `(i, c, acc) -> (c, acc + float(i) * step, acc + float(i) * step)`: it reads `step` from the
/// enclosing graph and gives the new accumulator both as the loop-carried value and as a scan output.
fn accumulating_body() -> GraphProto {
    let mut cast = node("Cast", &["i"], &["i_f"]);
    cast.attribute = vec![int_attribute("to", i64::from(FLOAT))];
    GraphProto {
        name: Some("body".into()),
        node: vec![
            node("Identity", &["c"], &["c_out"]),
            cast,
            node("Mul", &["i_f", "step"], &["inc"]),
            node("Add", &["acc", "inc"], &["acc_out"]),
            node("Identity", &["acc_out"], &["scan"]),
        ],
        input: vec![name_only("i"), name_only("c"), name_only("acc")],
        output: vec![name_only("c_out"), name_only("acc_out"), value_info("scan", &[Ok(2)])],
        ..Default::default()
    }
}

/// `final, scans = Loop(M, cond, x)` over [`accumulating_body`], with `M` and `cond` named by the
/// caller: initializers in `init`, graph inputs in `extra_inputs`, or "" for absent.
fn accumulating_loop(m: &str, cond: &str, extra_inputs: Vec<ValueInfoProto>, init: Vec<TensorProto>) -> ModelProto {
    let mut input = vec![value_info("x", &[Ok(2)]), value_info("step", &[])];
    input.extend(extra_inputs);
    model(
        GraphProto {
            node: vec![loop_node(&[m, cond, "x"], &["final", "scans"], accumulating_body())],
            input,
            output: vec![value_info("final", &[Ok(2)]), value_info("scans", &[Err("n"), Ok(2)])],
            initializer: init,
            ..Default::default()
        },
        16,
    )
}

fn run_accumulating(imported: &kiln_frontends::onnx::OnnxImport) -> Vec<Tensor> {
    let x = Tensor::f32(vec![2], vec![10.0, 20.0]).unwrap();
    let step = Tensor::scalar_f32(2.0);
    let mut feed = vec![x, step];
    // Specialised inputs stay graph inputs; the runner feeds them too.
    for name in &imported.input_names[2..] {
        feed.push(specialised_value(name));
    }
    evaluate(&imported.model, &feed)
}

fn specialised_value(name: &str) -> Tensor {
    match name {
        "n" => Tensor::scalar_i64(3),
        "go" => Tensor::new(vec![], kiln_ir::TensorData::Bool(vec![true])).unwrap(),
        other => panic!("no value for input `{other}`"),
    }
}

#[test]
fn a_loop_with_a_constant_trip_count_is_unrolled_with_carried_values_and_scan_outputs() {
    let init = vec![scalar_tensor("M", INT64, 3), scalar_tensor("cond", BOOL, 1)];
    let imported = import(&model_with_opset(accumulating_loop("M", "cond", vec![], init), 11)).unwrap();
    let out = run_accumulating(&imported);
    // acc: x, then + 0*2, + 1*2, + 2*2.
    assert_eq!(out[0].to_f32_vec(), [16.0, 26.0]);
    assert_eq!(out[1].shape(), [3, 2]);
    assert_eq!(out[1].to_f32_vec(), [10.0, 20.0, 12.0, 22.0, 16.0, 26.0]);
    // One Add per iteration: the body was imported three times.
    let adds = imported.model.graph.nodes().filter(|(_, n)| n.op == Op::Binary(kiln_ir::BinaryOp::Add)).count();
    assert_eq!(adds, 3);
}

fn model_with_opset(mut m: ModelProto, opset: i64) -> ModelProto {
    m.opset_import[0].version = Some(opset);
    m
}

#[test]
fn without_cond_the_body_condition_is_ignored() {
    // A for loop: no `cond` input, and the body's condition output (here always false) does not stop it.
    let mut m = accumulating_loop("M", "", vec![], vec![scalar_tensor("M", INT64, 3), scalar_tensor("no", BOOL, 0)]);
    let body = &mut m.graph.as_mut().unwrap().node[0].attribute[0];
    body.g.as_mut().unwrap().node[0] = node("Identity", &["no"], &["c_out"]);
    let out = run_accumulating(&import(&m).unwrap());
    assert_eq!(out[1].to_f32_vec(), [10.0, 20.0, 12.0, 22.0, 16.0, 26.0]);
}

#[test]
fn a_while_loop_stops_when_the_body_computes_false() {
    // k = 0; while k < 5: k = k + 1 (no M): five iterations, the scan output holds each new k.
    let body = GraphProto {
        node: vec![
            node("Add", &["k", "one"], &["k_out"]),
            node("Less", &["k_out", "five"], &["c_out"]),
            node("Identity", &["k_out"], &["k_scan"]),
        ],
        input: vec![name_only("i"), name_only("c"), name_only("k")],
        output: vec![name_only("c_out"), name_only("k_out"), name_only("k_scan")],
        initializer: vec![scalar_tensor("one", INT64, 1), scalar_tensor("five", INT64, 5)],
        ..Default::default()
    };
    let g = GraphProto {
        node: vec![loop_node(&["", "go", "k0"], &["k_final", "ks"], body)],
        output: vec![typed_value_info("k_final", INT64, &[]), typed_value_info("ks", INT64, &[Ok(5)])],
        initializer: vec![scalar_tensor("go", BOOL, 1), scalar_tensor("k0", INT64, 0)],
        ..Default::default()
    };
    let out = evaluate(&import(&model(g, 13)).unwrap().model, &[]);
    assert_eq!(out[0].to_i64_vec(), [5]);
    assert_eq!(out[1].to_i64_vec(), [1, 2, 3, 4, 5]);
}

#[test]
fn a_trip_count_known_only_at_run_time_is_unsupported_and_a_supplied_one_specialises() {
    let n = typed_value_info("n", INT64, &[]);
    let m = accumulating_loop("n", "", vec![n.clone()], vec![]);
    let err = import(&m).unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("Loop") && msg.contains("trip count `M` computed at run time"), "{msg}");

    // With the input's value supplied (as the conformance runner does), the import is specialised to it.
    let options = ImportOptions { input_values: [("n".to_string(), specialised_value("n"))].into_iter().collect() };
    let imported = import_bytes(&m.encode_to_vec(), None, "test", &options).unwrap();
    assert_eq!(imported.specialized_inputs, ["n"]);
    assert_eq!(run_accumulating(&imported)[1].shape(), [3, 2]);

    // Also when M is computed from the input: Loop(n + 1, ...) evaluates the Add at import.
    let mut m = accumulating_loop("n_plus_one", "", vec![n], vec![scalar_tensor("one", INT64, 1)]);
    m.graph.as_mut().unwrap().node.insert(0, node("Add", &["n", "one"], &["n_plus_one"]));
    let imported = import_bytes(&m.encode_to_vec(), None, "test", &options).unwrap();
    assert_eq!(imported.specialized_inputs, ["n"]);
    let out = run_accumulating(&imported);
    assert_eq!(out[1].shape(), [4, 2]);
    assert_eq!(out[0].to_f32_vec(), [22.0, 32.0]);
}

#[test]
fn a_condition_known_only_at_run_time_is_unsupported() {
    let go = typed_value_info("go", BOOL, &[]);
    let err = import(&accumulating_loop("M", "go", vec![go], vec![scalar_tensor("M", INT64, 3)])).unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    assert!(err.to_string().contains("the condition input `cond` computed at run time"), "{err}");

    // A condition the body computes from a run-time value stops the unrolling the same way.
    let mut m =
        accumulating_loop("M", "cond", vec![], vec![scalar_tensor("M", INT64, 3), scalar_tensor("cond", BOOL, 1)]);
    let body = m.graph.as_mut().unwrap().node[0].attribute[0].g.as_mut().unwrap();
    body.node[0] = node("Less", &["step", "step"], &["c_out"]);
    let err = import(&m).unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    assert!(err.to_string().contains("the condition computed by iteration 0 computed at run time"), "{err}");
}

#[test]
fn unrolling_stops_at_its_cap_with_an_error() {
    let err = import(&accumulating_loop("M", "", vec![], vec![scalar_tensor("M", INT64, 5000)])).unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    assert!(err.to_string().contains("a trip count of 5000") && err.to_string().contains("4096"), "{err}");

    // A while loop whose condition never turns false stops after 4096 iterations.
    let m = accumulating_loop("", "cond", vec![], vec![scalar_tensor("cond", BOOL, 1)]);
    let err = import(&m).unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    assert!(err.to_string().contains("more than 4096 iterations"), "{err}");
}

#[test]
fn a_loop_that_runs_no_iterations_gives_its_initial_values_and_empty_scans() {
    let imported = import(&accumulating_loop("M", "", vec![], vec![scalar_tensor("M", INT64, 0)])).unwrap();
    let out = run_accumulating(&imported);
    assert_eq!(out[0].to_f32_vec(), [10.0, 20.0]);
    assert_eq!(out[1].shape(), [0, 2], "the empty scan has the body's declared element shape");

    // Without a declared type for the scan output there is no shape to give it.
    let mut m = accumulating_loop("M", "", vec![], vec![scalar_tensor("M", INT64, -1)]);
    let body = m.graph.as_mut().unwrap().node[0].attribute[0].g.as_mut().unwrap();
    body.output[2] = name_only("scan");
    let err = import(&m).unwrap_err();
    assert!(err.is_unsupported() && err.to_string().contains("runs no iterations"), "{err}");
}

#[test]
fn malformed_loops_are_refused() {
    let mut m = accumulating_loop("", "", vec![], vec![]);
    let err = import(&m).unwrap_err();
    assert!(!err.is_unsupported() && err.to_string().contains("would never end"), "{err}");

    m.graph.as_mut().unwrap().initializer.push(scalar_tensor("M", INT64, 2));
    let n = &mut m.graph.as_mut().unwrap().node[0];
    n.input[0] = "M".into();
    n.attribute[0].g.as_mut().unwrap().input.push(name_only("extra"));
    let err = import(&m).unwrap_err().to_string();
    assert!(err.contains("the body takes 4 inputs, but the Loop gives it 3"), "{err}");

    let mut m = accumulating_loop("M", "", vec![], vec![scalar_tensor("M", INT64, 2)]);
    let body = m.graph.as_mut().unwrap().node[0].attribute[0].g.as_mut().unwrap();
    let mut cast = node("Cast", &["acc"], &["acc_i"]);
    cast.attribute = vec![int_attribute("to", INT64.into())];
    body.node.push(cast);
    body.output[1] = name_only("acc_i");
    let err = import(&m).unwrap_err().to_string();
    assert!(err.contains("loop-carried value 0 (`acc_i`) changes type from f32[2] to i64[2]"), "{err}");
}
