//! Type inference of the model-level ops: result types on valid inputs and the messages for invalid ones.

mod common;

use common::{fails, ok, ty};
use kiln_ir::infer::{infer_types, weight_type};
use kiln_ir::{DType, GeluApprox, Op, RopeScaling, RopeStyle, Tensor, WeightStore};

fn rms() -> Op {
    Op::RmsNorm { eps: 1e-5, offset: 0.0 }
}

fn attn(layer: Option<u32>) -> Op {
    Op::Attention { layer, scale: 0.125, causal: true, window: None, sinks: 0, softcap: None }
}

fn rope(rotary_dim: u32) -> Op {
    Op::Rope { style: RopeStyle::Half, theta: 10000.0, rotary_dim, scaling: RopeScaling::None }
}

#[test]
fn weight_type_is_not_inferable_but_readable_from_a_store() {
    let op = Op::Weight { name: "embed.weight".into() };
    let e = infer_types(&op, &[], &[]).unwrap_err().message;
    assert!(e.starts_with("weight: the type of weight `embed.weight` is the stored tensor's type"), "{e}");
    let mut store = WeightStore::new();
    store.insert_tensor("embed.weight", &Tensor::f32(vec![2, 3], vec![0.0; 6]).unwrap()).unwrap();
    assert_eq!(weight_type(&store, "embed.weight").unwrap(), ty("f32[2, 3]"));
    let e = weight_type(&store, "nope").unwrap_err().message;
    assert!(e.contains("no weight named `nope`"), "{e}");
}

#[test]
fn constant_type_is_its_tensor_type() {
    let op = Op::Constant { value: Tensor::i64(vec![4], vec![0, 0, 4, 4]).unwrap() };
    assert_eq!(ok(&op, &[]), "i64[4]");
    let op = Op::Constant { value: Tensor::scalar_f32(1.5) };
    assert_eq!(ok(&op, &[]), "f32[]");
    fails(&op, &["f32[]"], "constant takes 0 inputs but was given 1");
}

#[test]
fn embedding() {
    let op = Op::Embedding {};
    assert_eq!(ok(&op, &["f32[32, 16]", "i64[1, seq]"]), "f32[1, seq, 16]");
    assert_eq!(ok(&op, &["bf16[32, 16]", "i32[?]"]), "bf16[?, 16]");
    // Quantized tables give f32.
    assert_eq!(ok(&op, &["q4g32[32, 64]", "i64[2, 3]"]), "f32[2, 3, 64]");
    assert_eq!(ok(&op, &["q8c[32, 64]", "i64[]"]), "f32[64]");
    fails(&op, &["f32[32, 16]", "f32[1, seq]"], "embedding: ids must be an integer tensor, but it is f32[1, seq]");
    fails(&op, &["f32[32]", "i64[1]"], "embedding: the table must be [vocab, hidden] (rank 2), but it is f32[32]");
    fails(&op, &["i64[32, 16]", "i64[1]"], "the table must be a float or quantized [vocab, hidden] matrix");
    fails(&op, &["f32[32, 16]"], "embedding takes 2 inputs but was given 1");
}

#[test]
fn rms_norm() {
    assert_eq!(ok(&rms(), &["f32[b, s, 576]", "f32[576]"]), "f32[b, s, 576]");
    assert_eq!(ok(&rms(), &["bf16[b, s, 576]", "f32[?]"]), "bf16[b, s, 576]");
    assert_eq!(ok(&rms(), &["f32[4, h]", "f32[h]"]), "f32[4, h]");
    fails(
        &rms(),
        &["f32[b, s, 576]", "f32[512]"],
        "rms_norm: weight has 512 elements but the normalised dim of x is 576",
    );
    fails(&rms(), &["f32[4, h]", "f32[g]"], "weight has g elements but the normalised dim of x is h");
    fails(&rms(), &["i64[4, 8]", "f32[8]"], "rms_norm: x must be a float tensor, but it is i64[4, 8]");
    fails(&rms(), &["f32[]", "f32[8]"], "x must have rank 1 or more");
    fails(&rms(), &["f32[4, 8]", "f32[1, 8]"], "weight must be a vector [hidden] (rank 1), but it is f32[1, 8]");
    fails(&Op::RmsNorm { eps: -1.0, offset: 0.0 }, &["f32[8]", "f32[8]"], "eps must be a finite non-negative number");
    fails(&Op::RmsNorm { eps: 1e-6, offset: f32::NAN }, &["f32[8]", "f32[8]"], "offset must be finite");
}

#[test]
fn layer_norm() {
    let ln = |axis| Op::LayerNorm { axis, eps: 1e-5 };
    assert_eq!(ok(&ln(-1), &["f32[2, s, 8]", "f32[8]", "f32[8]"]), "f32[2, s, 8]");
    assert_eq!(ok(&ln(1), &["f16[2, s, 8]", "f16[s, 8]"]), "f16[2, s, 8]");
    assert_eq!(ok(&ln(-2), &["f32[2, 3, 8]", "f32[?, 8]"]), "f32[2, 3, 8]");
    fails(
        &ln(-1),
        &["f32[2, 8]", "f32[4]"],
        "layer_norm: weight has shape [4] but the normalised dims of x (axis -1 to the end) are [8]",
    );
    fails(
        &ln(1),
        &["f32[2, 3, 8]", "f32[8]"],
        "weight has shape [8] but the normalised dims of x (axis 1 to the end) are [3, 8]",
    );
    fails(&ln(-1), &["f32[2, 8]", "f32[8]", "f32[7]"], "bias has shape [7]");
    fails(&ln(2), &["f32[2, 8]", "f32[8]"], "layer_norm: axis 2 is out of range for rank 2 (valid: -2..=1)");
    fails(&ln(-1), &["i32[2, 8]", "f32[8]"], "x must be a float tensor");
    fails(&ln(-1), &["f32[2, 8]", "f32[8]", "f32[8]", "f32[8]"], "layer_norm takes 2 to 3 inputs but was given 4");
}

#[test]
fn linear() {
    let op = Op::Linear {};
    assert_eq!(ok(&op, &["f32[b, s, 64]", "f32[128, 64]"]), "f32[b, s, 128]");
    assert_eq!(ok(&op, &["bf16[s, 64]", "q4g32z[128, 64]", "f32[128]"]), "bf16[s, 128]");
    assert_eq!(ok(&op, &["f32[64]", "q8c[n, 64]"]), "f32[n]");
    assert_eq!(ok(&op, &["f32[3, ?]", "f32[n, k]"]), "f32[3, n]");
    fails(
        &op,
        &["f32[b, 64]", "f32[128, 32]"],
        "linear: x's last dim is 64 but the weight [128, 32] has 32 input features",
    );
    fails(
        &op,
        &["f32[b, 64]", "f32[128, 64]", "f32[64]"],
        "bias has 64 elements but the weight [128, 64] has 128 outputs",
    );
    fails(&op, &["f32[b, 64]", "i8[128, 64]"], "weight must be a float or quantized [out, in] matrix");
    fails(&op, &["f32[b, 64]", "f32[2, 128, 64]"], "weight must be [out, in] (rank 2)");
    fails(&op, &["q8c[4, 64]", "f32[128, 64]"], "linear: input 0 has quantized type q8c[4, 64]");
    fails(&op, &["i64[4, 64]", "f32[128, 64]"], "x must be a float tensor");
}

#[test]
fn rope_types_and_attribute_checks() {
    assert_eq!(ok(&rope(64), &["f32[1, s, 8, 64]", "i64[1, s]"]), "f32[1, s, 8, 64]");
    assert_eq!(ok(&rope(32), &["bf16[b, s, 8, 64]", "i32[b, s]"]), "bf16[b, s, 8, 64]");
    assert_eq!(ok(&rope(32), &["f32[b, s, 8, d]", "i64[?, ?]"]), "f32[b, s, 8, d]");
    fails(&rope(96), &["f32[1, s, 8, 64]", "i64[1, s]"], "rope: rotary_dim 96 exceeds the head_dim 64 of x");
    fails(&rope(33), &["f32[1, s, 8, 64]", "i64[1, s]"], "rotary_dim must be a positive even number, not 33");
    fails(&rope(0), &["f32[1, s, 8, 64]", "i64[1, s]"], "rotary_dim must be a positive even number, not 0");
    fails(&rope(64), &["f32[1, s, 512]", "i64[1, s]"], "x must be [batch, seq, heads, head_dim] (rank 4)");
    fails(&rope(64), &["f32[1, s, 8, 64]", "f32[1, s]"], "positions must be an integer tensor");
    fails(
        &rope(64),
        &["f32[1, s, 8, 64]", "i64[1, t]"],
        "positions [1, t] disagree with x [1, s, 8, 64] in the seq dim",
    );
    fails(&rope(64), &["f32[2, s, 8, 64]", "i64[3, s]"], "in the batch dim");
    fails(&rope(64), &["f32[1, s, 8, 64]", "i64[s]"], "positions must be [batch, seq] (rank 2)");
    let bad_theta = Op::Rope { style: RopeStyle::Half, theta: 0.0, rotary_dim: 64, scaling: RopeScaling::None };
    fails(&bad_theta, &["f32[1, s, 8, 64]", "i64[1, s]"], "theta must be a positive finite number, not 0");
    let llama3 = |lo, hi| Op::Rope {
        style: RopeStyle::Interleaved,
        theta: 500000.0,
        rotary_dim: 64,
        scaling: RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: lo,
            high_freq_factor: hi,
            original_max_position: 8192,
        },
    };
    assert_eq!(ok(&llama3(1.0, 4.0), &["f32[1, s, 8, 64]", "i64[1, s]"]), "f32[1, s, 8, 64]");
    fails(&llama3(4.0, 1.0), &["f32[1, s, 8, 64]", "i64[1, s]"], "needs high_freq_factor > low_freq_factor");
    let yarn = Op::Rope {
        style: RopeStyle::Half,
        theta: 1e6,
        rotary_dim: 64,
        scaling: RopeScaling::Yarn {
            factor: 4.0,
            original_max_position: 0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: 1.1,
        },
    };
    fails(&yarn, &["f32[1, s, 8, 64]", "i64[1, s]"], "yarn scaling needs a positive original_max_position");
    let linear =
        Op::Rope { style: RopeStyle::Half, theta: 1e4, rotary_dim: 8, scaling: RopeScaling::Linear { factor: -2.0 } };
    fails(&linear, &["f32[1, s, 8, 64]", "i64[1, s]"], "the linear scaling factor must be a positive finite number");
}

#[test]
fn attention_shapes() {
    // GQA with a KV cache: k/v hold the new keys only.
    assert_eq!(
        ok(&attn(Some(0)), &["f32[1, s, 8, 64]", "f32[1, s, 2, 64]", "f32[1, s, 2, 32]", "i64[1, s]"]),
        "f32[1, s, 8, 32]"
    );
    // Without a cache k/v may hold more keys than there are queries.
    assert_eq!(
        ok(&attn(None), &["bf16[b, 4, 9, 16]", "bf16[b, 10, 3, 16]", "bf16[b, 10, 3, 16]", "i32[b, 4]"]),
        "bf16[b, 4, 9, 16]"
    );
    // Tree mask [s, s]; unknown dims merge into the result.
    assert_eq!(
        ok(&attn(Some(1)), &["f32[?, 5, 4, 8]", "f32[1, 5, 4, 8]", "f32[1, ?, 4, 8]", "i64[1, 5]", "bool[5, 5]"]),
        "f32[1, 5, 4, 8]"
    );
}

#[test]
fn attention_errors() {
    let q = "f32[1, 4, 9, 16]";
    let kv = "f32[1, 4, 4, 16]";
    fails(&attn(Some(0)), &[q, kv, kv, "i64[1, 4]"], "attention: 9 heads are not a multiple of 4 kv_heads");
    fails(
        &attn(Some(0)),
        &["f32[1, 4, 8, 16]", "f32[1, 6, 4, 16]", "f32[1, 6, 4, 16]", "i64[1, 4]"],
        "with layer = 0, k and v hold only the new keys (the cache holds the past), so their seq 6 must equal q's seq 4",
    );
    fails(
        &attn(None),
        &["f32[1, 4, 8, 16]", "f32[1, 3, 4, 16]", "f32[1, 3, 4, 16]", "i64[1, 4]"],
        "need at least 4 keys but hold 3",
    );
    let ok_kv = "f32[1, 4, 4, 16]";
    fails(
        &attn(None),
        &["f32[1, 4, 8, 16]", "f32[1, 4, 4, 8]", ok_kv, "i64[1, 4]"],
        "k's head_dim 8 differs from q's head_dim 16",
    );
    fails(&attn(None), &["f32[1, 4, 8, 16]", ok_kv, "f32[1, 5, 4, 16]", "i64[1, 4]"], "v holds 5 keys but k holds 4");
    fails(&attn(None), &["f32[1, 4, 8, 16]", ok_kv, "f32[1, 4, 2, 16]", "i64[1, 4]"], "v has 2 kv_heads but k has 4");
    fails(&attn(None), &["f32[2, 4, 8, 16]", ok_kv, ok_kv, "i64[2, 4]"], "k has batch 1 but q has batch 2");
    fails(
        &attn(None),
        &["f32[1, 4, 8, 16]", "f16[1, 4, 4, 16]", ok_kv, "i64[1, 4]"],
        "k is f16 but q is f32; q, k and v must share one dtype",
    );
    fails(&attn(None), &["f32[1, 4, 8, 16]", ok_kv, ok_kv, "f32[1, 4]"], "positions must be an integer tensor");
    fails(&attn(None), &["f32[1, 4, 8, 16]", ok_kv, ok_kv, "i64[1, 3]"], "positions [1, 3] disagree with q's seq 4");
    fails(
        &attn(None),
        &["f32[1, 4, 8, 16]", ok_kv, ok_kv, "i64[1, 4]", "f32[4, 4]"],
        "tree_mask must be a bool tensor",
    );
    fails(
        &attn(None),
        &["f32[1, 4, 8, 16]", ok_kv, ok_kv, "i64[1, 4]", "bool[4, 3]"],
        "tree_mask is [4, 3] but q's seq is 4; it must be [4, 4]",
    );
    fails(
        &attn(None),
        &["f32[1, 4, 8, 128]", "f32[1, 4, 512]", ok_kv, "i64[1, 4]"],
        "k must be [batch, kv_seq, kv_heads, head_dim] (rank 4)",
    );
    let windowed = Op::Attention { layer: None, scale: 0.125, causal: true, window: Some(0), sinks: 0, softcap: None };
    fails(&windowed, &["f32[1, 4, 8, 16]", ok_kv, ok_kv, "i64[1, 4]"], "window must be positive when set");
    let capped =
        Op::Attention { layer: None, scale: 0.125, causal: true, window: Some(8), sinks: 2, softcap: Some(-1.0) };
    fails(&capped, &["f32[1, 4, 8, 16]", ok_kv, ok_kv, "i64[1, 4]"], "softcap must be a positive finite number");
    let scaled =
        Op::Attention { layer: None, scale: f32::INFINITY, causal: false, window: None, sinks: 0, softcap: None };
    fails(&scaled, &["f32[1, 4, 8, 16]", ok_kv, ok_kv, "i64[1, 4]"], "scale must be a positive finite number");
    fails(&attn(None), &["f32[1, 4, 8, 16]", ok_kv, ok_kv], "attention takes 4 to 5 inputs but was given 3");
}

#[test]
fn activations() {
    for op in [Op::Silu {}, Op::Gelu { approximate: GeluApprox::Tanh }, Op::Gelu { approximate: GeluApprox::None }] {
        assert_eq!(ok(&op, &["bf16[b, s, 1536]"]), "bf16[b, s, 1536]");
        fails(&op, &["i32[4]"], &format!("{}: x must be a float tensor, but it is i32[4]", op.name()));
    }
    let sw = Op::Swiglu {};
    assert_eq!(ok(&sw, &["f32[b, s, 64]", "f32[b, ?, 64]"]), "f32[b, s, 64]");
    assert_eq!(ok(&sw, &["f32[?, s]", "f32[2, ?]"]), "f32[2, s]");
    fails(
        &sw,
        &["f32[b, s, 64]", "f32[b, s, 32]"],
        "swiglu: gate [b, s, 64] and up [b, s, 32] must have the same shape (no broadcasting)",
    );
    fails(&sw, &["f32[4, 64]", "f32[64]"], "must have the same shape");
    fails(&sw, &["f32[64]", "f16[64]"], "gate is f32[64] but up is f16[64]; they must share one dtype");
}

#[test]
fn softmax() {
    assert_eq!(ok(&Op::Softmax { axis: -1 }, &["f32[b, 8, s, s]"]), "f32[b, 8, s, s]");
    assert_eq!(ok(&Op::Softmax { axis: 0 }, &["f16[3]"]), "f16[3]");
    fails(&Op::Softmax { axis: 1 }, &["f32[3]"], "softmax: axis 1 is out of range for rank 1 (valid: -1..=0)");
    fails(&Op::Softmax { axis: -1 }, &["f32[]"], "axis -1 is out of range: the tensor has rank 0");
    fails(&Op::Softmax { axis: -1 }, &["i64[3]"], "x must be a float tensor");
}

#[test]
fn logits() {
    let op = Op::Logits { softcap: None };
    assert_eq!(ok(&op, &["bf16[b, s, 64]", "bf16[32000, 64]"]), "f32[b, s, 32000]");
    assert_eq!(ok(&op, &["f32[64]", "q4g32[v, 64]"]), "f32[v]");
    fails(
        &op,
        &["f32[b, 64]", "f32[32000, 32]"],
        "logits: x's last dim is 64 but the weight [32000, 32] has hidden size 32",
    );
    fails(&op, &["f32[b, 64]", "f32[64]"], "weight must be [vocab, hidden] (rank 2)");
    fails(
        &Op::Logits { softcap: Some(0.0) },
        &["f32[64]", "f32[8, 64]"],
        "softcap must be a positive finite number, not 0",
    );
}

#[test]
fn quantized_values_only_feed_weight_inputs() {
    fails(
        &Op::Silu {},
        &["q8c[4, 32]"],
        "silu: input 0 has quantized type q8c[4, 32]; quantized values may only be the weight",
    );
    fails(&Op::Embedding {}, &["f32[4, 32]", "q8c[4, 32]"], "input 1 has quantized type");
    fails(&Op::cast(DType::Q8C), &["f32[4, 32]"], "cannot cast to quantized dtype q8c");
}
