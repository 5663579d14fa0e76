//! The ONNX importer on hand-built models: what it accepts (initializers in raw, typed and external
//! form, unsigned element types, symbolic dims, opset-dependent semantics, If) and a clear error for each kind of malformed
//! input (not a protobuf, an input nothing produces, a cycle, an initializer whose size disagrees with
//! its shape, external data outside the model directory).

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
    w.data_type = Some(17);
    let err = import(&model(linear_graph(w), 17)).unwrap_err();
    assert!(err.is_unsupported() && err.to_string().contains("FLOAT8E4M3FN"), "{err}");
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
