//! Shared test helpers: seeded random data, error metrics against f64 references, one-op graphs, and a
//! tiny llama-style decoder with random weights.
#![allow(dead_code)]

use kiln_ir::{DType, Dim, Graph, Op, RopeScaling, RopeStyle, Shape, Tensor, TensorType, ValueId, WeightStore};
use kiln_runtime::{CpuExecutor, RuntimeError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` values uniform in `[-scale, scale)`, reproducible from `seed`.
pub fn random_vec(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

pub fn random_tensor(seed: u64, shape: &[usize], scale: f32) -> Tensor {
    Tensor::f32(shape.to_vec(), random_vec(seed, shape.iter().product(), scale)).unwrap()
}

/// Relative error `max |a - e| / max |e|` (the max norm of the difference over that of the reference).
pub fn rel_err(actual: &[f32], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "result and reference differ in length");
    let diff = actual.iter().zip(expected).map(|(&a, &e)| (a as f64 - e).abs()).fold(0.0, f64::max);
    let scale = expected.iter().map(|e| e.abs()).fold(0.0, f64::max);
    if scale == 0.0 { diff } else { diff / scale }
}

#[track_caller]
pub fn assert_close(actual: &[f32], expected: &[f64], tol: f64, what: &str) {
    assert!(expected.iter().any(|&e| e != 0.0), "{what}: the reference is all zeros, which tests nothing");
    let e = rel_err(actual, expected);
    assert!(e <= tol, "{what}: relative error {e:e} exceeds {tol:e}");
}

/// An operand of a one-op graph: a graph input (fed at run time) or a stored weight.
pub enum Operand {
    Input(Tensor),
    Weight(&'static str),
}

/// Builds a graph of one op whose result has type `out`, runs it once, returns the result.
pub fn run_one(op: Op, operands: Vec<Operand>, weights: WeightStore, out: TensorType) -> Result<Tensor, RuntimeError> {
    let mut g = Graph::new("one_op");
    let mut feeds = Vec::new();
    let mut ids = Vec::new();
    for operand in &operands {
        match operand {
            Operand::Input(t) => {
                ids.push(g.add_input(t.ty()));
                feeds.push(t.clone());
            }
            Operand::Weight(name) => {
                let ty = weights.get(name).unwrap().ty.clone();
                ids.push(g.add_node(Op::Weight { name: name.to_string() }, vec![], vec![ty])[0]);
            }
        }
    }
    let r = g.add_node(op, ids, vec![out])[0];
    g.set_outputs(vec![r]);
    let mut exec = CpuExecutor::new(g, weights)?;
    Ok(exec.run(&feeds)?.remove(0))
}

pub fn f32_type(dims: &[usize]) -> TensorType {
    TensorType::of(DType::F32, &dims.iter().map(|&d| d as u64).collect::<Vec<_>>())
}

/// A type with some symbolic dims: `Err(name)` entries are symbols, `Err("?")` unknown dims.
pub fn sym_type(dtype: DType, dims: &[Result<u64, &str>]) -> TensorType {
    TensorType::new(
        dtype,
        Shape(
            dims.iter()
                .map(|d| match d {
                    Ok(n) => Dim::Static(*n),
                    Err("?") => Dim::Unknown,
                    Err(s) => Dim::sym(s),
                })
                .collect(),
        ),
    )
}

/// Shape of the tiny decoder.
#[derive(Clone, Copy, Debug)]
pub struct TinyConfig {
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub theta: f64,
    pub eps: f32,
}

pub const TINY: TinyConfig = TinyConfig {
    vocab: 48,
    hidden: 32,
    heads: 4,
    kv_heads: 2,
    head_dim: 8,
    intermediate: 64,
    layers: 2,
    theta: 10000.0,
    eps: 1e-5,
};

/// Random weights for the tiny decoder, reproducible from `seed`.
pub fn tiny_weights(c: &TinyConfig, seed: u64) -> WeightStore {
    let mut store = WeightStore::new();
    let mut n = seed * 1000;
    let mut add = |name: String, shape: &[usize], scale: f32| {
        n += 1;
        store.insert_tensor(name, &random_tensor(n, shape, scale)).unwrap();
    };
    let inv = |k: usize| 1.0 / (k as f32).sqrt();
    let (h, q, kv, i) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim, c.intermediate);
    add("embed".into(), &[c.vocab, h], 1.0);
    for l in 0..c.layers {
        add(format!("l{l}.attn_norm"), &[h], 0.5);
        add(format!("l{l}.wq"), &[q, h], inv(h));
        add(format!("l{l}.wk"), &[kv, h], inv(h));
        add(format!("l{l}.wv"), &[kv, h], inv(h));
        add(format!("l{l}.wo"), &[h, q], inv(q));
        add(format!("l{l}.mlp_norm"), &[h], 0.5);
        add(format!("l{l}.wg"), &[i, h], inv(h));
        add(format!("l{l}.wu"), &[i, h], inv(h));
        add(format!("l{l}.wd"), &[h, i], inv(i));
    }
    add("final_norm".into(), &[h], 0.5);
    add("lm_head".into(), &[c.vocab, h], 2.0 * inv(h));
    store
}

/// The tiny llama-style decoder graph (decoder-graph contract: ids, positions -> logits). With
/// `use_cache`, attention ops carry their layer index and use the executor's KV cache; without, each
/// run attends over exactly the tokens it is given.
pub fn tiny_decoder(c: &TinyConfig, weights: &WeightStore, use_cache: bool) -> Graph {
    build_tiny_decoder(c, weights, use_cache, false)
}

/// The tiny decoder with the optional third input `tree_mask: bool[seq, seq]` passed to every attention
/// op (as the frontends build decoders), so that it can verify token trees; it always uses the cache.
pub fn tiny_tree_decoder(c: &TinyConfig, weights: &WeightStore) -> Graph {
    build_tiny_decoder(c, weights, true, true)
}

fn build_tiny_decoder(c: &TinyConfig, weights: &WeightStore, use_cache: bool, with_mask: bool) -> Graph {
    let mut g = Graph::new("tiny_llama");
    let seq = || Err("seq");
    let ids = g.add_input(sym_type(DType::I64, &[Ok(1), seq()]));
    let positions = g.add_input(sym_type(DType::I64, &[Ok(1), seq()]));
    let mask = with_mask.then(|| g.add_input(sym_type(DType::Bool, &[seq(), seq()])));
    let act = |dims: &[usize]| {
        let mut d = vec![Ok(1), seq()];
        d.extend(dims.iter().map(|&n| Ok(n as u64)));
        sym_type(DType::F32, &d)
    };
    let weight = |g: &mut Graph, name: String| -> ValueId {
        let ty = weights.get(&name).unwrap().ty.clone();
        g.add_node(Op::Weight { name }, vec![], vec![ty])[0]
    };
    let one = |g: &mut Graph, op: Op, inputs: Vec<ValueId>, ty: TensorType| g.add_node(op, inputs, vec![ty])[0];
    let shape_const = |g: &mut Graph, dims: &[i64]| {
        let t = Tensor::i64(vec![dims.len()], dims.to_vec()).unwrap();
        let ty = t.ty();
        g.add_node(Op::Constant { value: t }, vec![], vec![ty])[0]
    };
    let (h, hd) = (c.hidden, c.head_dim);
    let table = weight(&mut g, "embed".into());
    let mut x = one(&mut g, Op::Embedding {}, vec![table, ids], act(&[h]));
    let heads_shape = shape_const(&mut g, &[0, 0, c.heads as i64, hd as i64]);
    let kv_shape = shape_const(&mut g, &[0, 0, c.kv_heads as i64, hd as i64]);
    let flat_shape = shape_const(&mut g, &[0, 0, (c.heads * hd) as i64]);
    let rope = Op::Rope { style: RopeStyle::Half, theta: c.theta, rotary_dim: hd as u32, scaling: RopeScaling::None };
    for l in 0..c.layers {
        let w = weight(&mut g, format!("l{l}.attn_norm"));
        let hn = one(&mut g, Op::RmsNorm { eps: c.eps, offset: 0.0 }, vec![x, w], act(&[h]));
        let proj = |g: &mut Graph, name: &str, input: ValueId, out: usize| {
            let w = weight(g, format!("l{l}.{name}"));
            one(g, Op::Linear {}, vec![input, w], act(&[out]))
        };
        let q = proj(&mut g, "wq", hn, c.heads * hd);
        let k = proj(&mut g, "wk", hn, c.kv_heads * hd);
        let v = proj(&mut g, "wv", hn, c.kv_heads * hd);
        let q = one(&mut g, Op::Reshape { allowzero: false }, vec![q, heads_shape], act(&[c.heads, hd]));
        let k = one(&mut g, Op::Reshape { allowzero: false }, vec![k, kv_shape], act(&[c.kv_heads, hd]));
        let v = one(&mut g, Op::Reshape { allowzero: false }, vec![v, kv_shape], act(&[c.kv_heads, hd]));
        let q = one(&mut g, rope.clone(), vec![q, positions], act(&[c.heads, hd]));
        let k = one(&mut g, rope.clone(), vec![k, positions], act(&[c.kv_heads, hd]));
        let attn = Op::Attention {
            layer: use_cache.then_some(l as u32),
            scale: 1.0 / (hd as f32).sqrt(),
            causal: true,
            window: None,
            sinks: 0,
            softcap: None,
        };
        let mut operands = vec![q, k, v, positions];
        operands.extend(mask);
        let a = one(&mut g, attn, operands, act(&[c.heads, hd]));
        let a = one(&mut g, Op::Reshape { allowzero: false }, vec![a, flat_shape], act(&[c.heads * hd]));
        let o = proj(&mut g, "wo", a, h);
        x = one(&mut g, Op::Binary(kiln_ir::BinaryOp::Add), vec![x, o], act(&[h]));
        let w = weight(&mut g, format!("l{l}.mlp_norm"));
        let hn = one(&mut g, Op::RmsNorm { eps: c.eps, offset: 0.0 }, vec![x, w], act(&[h]));
        let gate = proj(&mut g, "wg", hn, c.intermediate);
        let up = proj(&mut g, "wu", hn, c.intermediate);
        let s = one(&mut g, Op::Swiglu {}, vec![gate, up], act(&[c.intermediate]));
        let d = proj(&mut g, "wd", s, h);
        x = one(&mut g, Op::Binary(kiln_ir::BinaryOp::Add), vec![x, d], act(&[h]));
    }
    let w = weight(&mut g, "final_norm".into());
    let xn = one(&mut g, Op::RmsNorm { eps: c.eps, offset: 0.0 }, vec![x, w], act(&[h]));
    let lm = weight(&mut g, "lm_head".into());
    let logits = one(&mut g, Op::Logits { softcap: None }, vec![xn, lm], act(&[c.vocab]));
    g.set_outputs(vec![logits]);
    g
}

/// An executor for the tiny decoder with weights from `seed`.
pub fn tiny_executor(seed: u64, use_cache: bool) -> CpuExecutor {
    let weights = tiny_weights(&TINY, seed);
    let g = tiny_decoder(&TINY, &weights, use_cache);
    CpuExecutor::new(g, weights).unwrap()
}

/// `ids` and `positions` inputs for a step of the decoder.
pub fn decoder_inputs(ids: &[u32], first_position: i64) -> [Tensor; 2] {
    let n = ids.len();
    [
        Tensor::i64(vec![1, n], ids.iter().map(|&t| t as i64).collect()).unwrap(),
        Tensor::i64(vec![1, n], (first_position..first_position + n as i64).collect()).unwrap(),
    ]
}
