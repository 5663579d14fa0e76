//! The ONNX importer on low-bit and string tensors: packed `raw_data` and `int32_data` (odd element
//! counts included), `Cast`'s `saturate` and `round_mode` carried into the IR and its text form, and
//! string inputs compared with `Equal`.
//!
//! Packed bytes were produced with `onnx.helper.make_tensor` (onnx 1.23.2, ~/.cache/kiln/onnx-venv):
//! INT4 [-8, 7, -1, 3, 5] is raw `78 3f 05` and int32_data [120, 63, 5]; UINT2 [0, 1, 2, 3, 3, 1] is raw
//! `e4 07`; FLOAT8E4M3FN [448, -0.3125, 1000] is int32_data [126, 170, 126] (a saturating cast).

use kiln_frontends::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_shape_proto::Dimension, tensor_shape_proto::dimension,
    type_proto,
};
use kiln_frontends::onnx::{ImportOptions, import_bytes, read_tensor_proto};
use kiln_ir::{LowBitType, Op, Tensor, TensorData};
use prost::Message;

const FLOAT: i32 = 1;
const STRING: i32 = 8;
const FLOAT8E4M3FN: i32 = 17;
const FLOAT8E8M0: i32 = 24;
const INT4: i32 = 22;
const UINT2: i32 = 25;

fn tensor(elem_type: i32, dims: &[i64]) -> TensorProto {
    TensorProto { name: Some("t".into()), dims: dims.to_vec(), data_type: Some(elem_type), ..Default::default() }
}

fn decode(tp: &TensorProto) -> Result<Tensor, String> {
    read_tensor_proto(&tp.encode_to_vec()).map(|(_, t)| t).map_err(|e| e.to_string())
}

#[test]
fn sub_byte_raw_data_unpacks_low_bits_first_with_an_odd_count() {
    let t = decode(&TensorProto { raw_data: Some(vec![0x78, 0x3f, 0x05]), ..tensor(INT4, &[5]) }).unwrap();
    assert_eq!(t.dtype().to_string(), "i4");
    assert_eq!(t.to_i64_vec(), vec![-8, 7, -1, 3, 5]);
    let t = decode(&TensorProto { raw_data: Some(vec![0xe4, 0x07]), ..tensor(UINT2, &[2, 3]) }).unwrap();
    assert_eq!(t.shape(), &[2, 3]);
    assert_eq!(t.to_i64_vec(), vec![0, 1, 2, 3, 3, 1]);
    // A missing byte is a size error naming the packed size.
    let err = decode(&TensorProto { raw_data: Some(vec![0x78, 0x3f]), ..tensor(INT4, &[5]) }).unwrap_err();
    assert!(err.contains("(3 bytes of i4)") && err.contains("raw_data holds 2 bytes"), "{err}");
}

#[test]
fn low_bit_int32_data_holds_one_packed_byte_per_entry() {
    let t = decode(&TensorProto { int32_data: vec![120, 63, 5], ..tensor(INT4, &[5]) }).unwrap();
    assert_eq!(t.to_i64_vec(), vec![-8, 7, -1, 3, 5]);
    let t = decode(&TensorProto { int32_data: vec![126, 170, 126], ..tensor(FLOAT8E4M3FN, &[3]) }).unwrap();
    assert_eq!(t.data(), &TensorData::LowBit(LowBitType::F8E4M3FN, vec![0x7e, 0xaa, 0x7e]));
    assert_eq!(t.to_f64_vec(), vec![448.0, -0.3125, 448.0]);
    let err = decode(&TensorProto { int32_data: vec![120, 63], ..tensor(INT4, &[5]) }).unwrap_err();
    assert!(err.contains("int32_data holds 2 values"), "{err}");
}

#[test]
fn string_tensors_decode_from_string_data() {
    let tp = TensorProto { string_data: vec![b"kiln".to_vec(), "π".as_bytes().to_vec()], ..tensor(STRING, &[2]) };
    assert_eq!(decode(&tp).unwrap().data(), &TensorData::Str(vec!["kiln".into(), "π".into()]));
    let err = decode(&TensorProto { string_data: vec![vec![0xff]], ..tensor(STRING, &[1]) }).unwrap_err();
    assert!(err.contains("non-UTF-8 string (element 0)"), "{err}");
    let err = decode(&TensorProto { string_data: vec![], ..tensor(STRING, &[1]) }).unwrap_err();
    assert!(err.contains("string_data holds 0"), "{err}");
}

fn value_info(name: &str, elem_type: i32, dims: &[i64]) -> ValueInfoProto {
    let dim =
        dims.iter().map(|&n| Dimension { value: Some(dimension::Value::DimValue(n)), ..Default::default() }).collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn one_node_model(node: NodeProto, inputs: Vec<ValueInfoProto>, output: ValueInfoProto) -> ModelProto {
    ModelProto {
        ir_version: Some(11),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(25) }],
        graph: Some(GraphProto { node: vec![node], input: inputs, output: vec![output], ..Default::default() }),
        ..Default::default()
    }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    }
}

fn attr_str(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(s.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn cast_model(to: i32, attrs: Vec<AttributeProto>) -> ModelProto {
    let node = NodeProto {
        op_type: Some("Cast".into()),
        input: vec!["x".into()],
        output: vec!["y".into()],
        attribute: [vec![attr_int("to", i64::from(to))], attrs].concat(),
        ..Default::default()
    };
    one_node_model(node, vec![value_info("x", FLOAT, &[2])], value_info("y", to, &[2]))
}

fn import_graph(m: &ModelProto) -> kiln_ir::Graph {
    import_bytes(&m.encode_to_vec(), None, "test", &ImportOptions::default()).unwrap().model.graph
}

fn the_cast(g: &kiln_ir::Graph) -> Op {
    g.nodes().map(|(_, n)| n.op.clone()).find(|op| matches!(op, Op::Cast { .. })).expect("a cast node")
}

#[test]
fn cast_attributes_reach_the_ir_and_round_trip_through_the_text() {
    // Defaults leave the IR cast as it always printed.
    let g = import_graph(&cast_model(FLOAT8E4M3FN, vec![attr_int("saturate", 1)]));
    assert_eq!(the_cast(&g), Op::cast(kiln_ir::DType::LowBit(LowBitType::F8E4M3FN)));
    let text = kiln_ir::text::print(&g);
    assert!(text.contains("cast(%0) {to = f8e4m3fn} : f8e4m3fn[2]"), "{text}");

    let g = import_graph(&cast_model(FLOAT8E8M0, vec![attr_int("saturate", 0), attr_str("round_mode", "nearest")]));
    let op = the_cast(&g);
    assert_eq!(
        op,
        Op::Cast {
            to: kiln_ir::DType::LowBit(LowBitType::F8E8M0),
            saturate: Some(false),
            round_mode: Some(kiln_ir::E8m0Rounding::Nearest),
        }
    );
    let text = kiln_ir::text::print(&g);
    assert!(text.contains("saturate = false") && text.contains("round_mode = nearest"), "{text}");
    let parsed = kiln_ir::text::parse(&text).unwrap();
    assert_eq!(kiln_ir::text::print(&parsed), text);
    assert_eq!(the_cast(&parsed), op);

    let bad = cast_model(FLOAT8E8M0, vec![attr_str("round_mode", "sideways")]);
    let err = import_bytes(&bad.encode_to_vec(), None, "test", &ImportOptions::default()).unwrap_err().to_string();
    assert!(err.contains("round_mode `sideways` is not one of up, down, nearest"), "{err}");
}

#[test]
fn string_equal_imports_and_compares() {
    let node = NodeProto {
        op_type: Some("Equal".into()),
        input: vec!["x".into(), "y".into()],
        output: vec!["z".into()],
        ..Default::default()
    };
    let m = one_node_model(
        node,
        vec![value_info("x", STRING, &[3]), value_info("y", STRING, &[1])],
        value_info("z", 9, &[3]),
    );
    let g = import_graph(&m);
    let equal = g.nodes().map(|(_, n)| n.op.clone()).next().unwrap();
    let x = Tensor::new(vec![3], TensorData::Str(vec!["a".into(), "b".into(), "a".into()])).unwrap();
    let y = Tensor::new(vec![1], TensorData::Str(vec!["a".into()])).unwrap();
    let z = kiln_ir::eval::eval_generic(&equal, &[&x, &y]).unwrap().unwrap();
    assert_eq!(z[0].data(), &TensorData::Bool(vec![true, false, true]));
}
