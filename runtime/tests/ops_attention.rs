//! `attention` against an f64 reference that follows `Op::Attention`'s documented visibility rules:
//! MHA/GQA/MQA, causal and non-causal, sliding windows with sinks, tree masks, softcap, the no-cache
//! mode with past keys, and the KV-cache mode over several calls (which must equal one no-cache call
//! over the whole sequence), including `truncate_kv` and `compact_kv`.

mod common;

use common::{Operand, assert_close, f32_type, random_tensor, run_one};
use kiln_ir::{DType, Graph, Op, Tensor, TensorData, WeightStore};
use kiln_runtime::{CpuExecutor, RuntimeError};

#[derive(Clone, Copy, Debug)]
struct Params {
    scale: f32,
    causal: bool,
    window: Option<u32>,
    sinks: u32,
    softcap: Option<f32>,
}

const DEFAULT: Params = Params { scale: 0.35, causal: true, window: None, sinks: 0, softcap: None };

fn op(layer: Option<u32>, p: Params) -> Op {
    Op::Attention { layer, scale: p.scale, causal: p.causal, window: p.window, sinks: p.sinks, softcap: p.softcap }
}

/// The reference: for batch row `b`, keys `0..past` sit at their index and the last `s` at their
/// queries' positions.
fn reference(q: &Tensor, k: &Tensor, v: &Tensor, positions: &[i64], mask: Option<&[bool]>, p: Params) -> Vec<f64> {
    let [b, s, h, d] = q.shape().try_into().unwrap();
    let [_, t, kvh, _] = k.shape().try_into().unwrap();
    let dv = v.shape()[3];
    let (q, k, v) = (q.to_f64_vec(), k.to_f64_vec(), v.to_f64_vec());
    let past = t - s;
    let mut out = vec![0.0; b * s * h * dv];
    for bi in 0..b {
        for i in 0..s {
            let qp = positions[bi * s + i];
            for hi in 0..h {
                let kv_head = hi / (h / kvh);
                let mut scores = Vec::new();
                for j in 0..t {
                    let kp = if j < past { j as i64 } else { positions[bi * s + j - past] };
                    let mut visible = if j < past {
                        !p.causal || kp <= qp
                    } else if let Some(m) = mask {
                        m[i * s + (j - past)]
                    } else {
                        !p.causal || j - past <= i
                    };
                    if let Some(w) = p.window
                        && (qp - kp).abs() >= w as i64
                        && kp >= p.sinks as i64
                    {
                        visible = false;
                    }
                    if visible {
                        let mut score = 0.0;
                        for di in 0..d {
                            score += q[((bi * s + i) * h + hi) * d + di] * k[((bi * t + j) * kvh + kv_head) * d + di];
                        }
                        score *= p.scale as f64;
                        if let Some(cap) = p.softcap {
                            score = cap as f64 * (score / cap as f64).tanh();
                        }
                        scores.push((j, score));
                    }
                }
                let max = scores.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = scores.iter().map(|x| (x.1 - max).exp()).sum();
                for (j, score) in scores {
                    let w = (score - max).exp() / total;
                    for e in 0..dv {
                        out[((bi * s + i) * h + hi) * dv + e] += w * v[((bi * t + j) * kvh + kv_head) * dv + e];
                    }
                }
            }
        }
    }
    out
}

fn no_cache(q: &Tensor, k: &Tensor, v: &Tensor, positions: &[i64], mask: Option<&Tensor>, p: Params) -> Tensor {
    let [b, s, h, _] = q.shape().try_into().unwrap();
    let dv = v.shape()[3];
    let mut operands = vec![
        Operand::Input(q.clone()),
        Operand::Input(k.clone()),
        Operand::Input(v.clone()),
        Operand::Input(Tensor::i64(vec![b, s], positions.to_vec()).unwrap()),
    ];
    if let Some(m) = mask {
        operands.push(Operand::Input(m.clone()));
    }
    run_one(op(None, p), operands, WeightStore::new(), f32_type(&[b, s, h, dv])).unwrap()
}

fn mask_tensor(bits: &[bool], s: usize) -> Tensor {
    Tensor::new(vec![s, s], TensorData::Bool(bits.to_vec())).unwrap()
}

/// Random q/k/v for `b` rows, `s` queries, `t` keys.
#[allow(clippy::too_many_arguments)]
fn qkv(seed: u64, b: usize, s: usize, t: usize, h: usize, kvh: usize, d: usize, dv: usize) -> (Tensor, Tensor, Tensor) {
    (
        random_tensor(seed, &[b, s, h, d], 1.0),
        random_tensor(seed + 1, &[b, t, kvh, d], 1.0),
        random_tensor(seed + 2, &[b, t, kvh, dv], 1.0),
    )
}

fn check(name: &str, b: usize, s: usize, t: usize, heads: (usize, usize), positions: &[i64], p: Params) {
    let (q, k, v) = qkv(10, b, s, t, heads.0, heads.1, 8, 6);
    let y = no_cache(&q, &k, &v, positions, None, p);
    assert_eq!(y.shape(), &[b, s, heads.0, 6]);
    assert_close(&y.to_f32_vec(), &reference(&q, &k, &v, positions, None, p), 1e-5, name);
}

#[test]
fn mha_gqa_and_mqa() {
    let pos: Vec<i64> = (0..5).chain(0..5).collect();
    check("mha", 2, 5, 5, (4, 4), &pos, DEFAULT);
    check("gqa", 2, 5, 5, (4, 2), &pos, DEFAULT);
    check("mqa", 2, 5, 5, (4, 1), &pos, DEFAULT);
}

#[test]
fn non_causal_sees_every_key() {
    let pos: Vec<i64> = (0..5).collect();
    check("non-causal", 1, 5, 5, (2, 1), &pos, Params { causal: false, ..DEFAULT });
}

#[test]
fn past_keys_in_no_cache_mode() {
    // 5 past keys at positions 0..5, then 3 new tokens at 5, 6, 7.
    check("past", 1, 3, 8, (4, 2), &[5, 6, 7], DEFAULT);
}

#[test]
fn sliding_window_with_and_without_sinks() {
    let pos: Vec<i64> = (0..9).collect();
    check("window", 1, 9, 9, (4, 2), &pos, Params { window: Some(3), ..DEFAULT });
    check("window+sinks", 1, 9, 9, (4, 2), &pos, Params { window: Some(3), sinks: 2, ..DEFAULT });
    check("window+sinks past", 1, 2, 9, (2, 2), &[7, 8], Params { window: Some(4), sinks: 1, ..DEFAULT });
}

#[test]
fn softcap_bounds_the_scores() {
    let pos: Vec<i64> = (0..6).collect();
    check("softcap", 1, 6, 6, (4, 2), &pos, Params { scale: 3.0, softcap: Some(2.0), ..DEFAULT });
}

/// Values that are one-hot per key make the output the attention weights, so which keys a query sees
/// can be read off directly and compared with a hand-written pattern.
fn visible_keys(t: usize, s: usize, positions: &[i64], mask: Option<&Tensor>, p: Params) -> Vec<Vec<usize>> {
    let q = random_tensor(3, &[1, s, 1, 4], 1.0);
    let k = random_tensor(4, &[1, t, 1, 4], 1.0);
    let mut one_hot = vec![0.0; t * t];
    for j in 0..t {
        one_hot[j * t + j] = 1.0;
    }
    let v = Tensor::f32(vec![1, t, 1, t], one_hot).unwrap();
    let y = no_cache(&q, &k, &v, positions, mask, p).to_f32_vec();
    y.chunks(t).map(|w| (0..t).filter(|&j| w[j] > 0.0).collect()).collect()
}

#[test]
fn window_and_sink_visibility_pattern() {
    let pos: Vec<i64> = (0..6).collect();
    let seen = visible_keys(6, 6, &pos, None, Params { window: Some(2), sinks: 1, ..DEFAULT });
    let expected: Vec<Vec<usize>> =
        vec![vec![0], vec![0, 1], vec![0, 1, 2], vec![0, 2, 3], vec![0, 3, 4], vec![0, 4, 5]];
    assert_eq!(seen, expected);
}

#[test]
fn tree_mask_visibility_and_values() {
    // Past: 3 tokens (positions 0..3). Tree: slot 0 at position 3; slots 1 and 2 are two candidates at
    // position 4, both children of slot 0; slot 3 at position 5 is a child of slot 2.
    let bits = [
        true, false, false, false, //
        true, true, false, false, //
        true, false, true, false, //
        true, false, true, true,
    ];
    let mask = mask_tensor(&bits, 4);
    let positions = [3, 4, 4, 5];
    let seen = visible_keys(7, 4, &positions, Some(&mask), DEFAULT);
    assert_eq!(seen, vec![vec![0, 1, 2, 3], vec![0, 1, 2, 3, 4], vec![0, 1, 2, 3, 5], vec![0, 1, 2, 3, 5, 6]]);

    let (q, k, v) = qkv(20, 1, 4, 7, 4, 2, 8, 8);
    let y = no_cache(&q, &k, &v, &positions, Some(&mask), DEFAULT);
    assert_close(&y.to_f32_vec(), &reference(&q, &k, &v, &positions, Some(&bits), DEFAULT), 1e-5, "tree mask");
}

/// A graph of one cached attention op (layer 0) over inputs q, k, v, positions, with batch `b`.
fn cached_executor_batch(b: u64, h: usize, kvh: usize, d: usize, p: Params) -> CpuExecutor {
    let mut g = Graph::new("cached_attention");
    let sym = |dims: &[Result<u64, &str>]| common::sym_type(DType::F32, dims);
    let q = g.add_input(sym(&[Ok(b), Err("s"), Ok(h as u64), Ok(d as u64)]));
    let k = g.add_input(sym(&[Ok(b), Err("s"), Ok(kvh as u64), Ok(d as u64)]));
    let v = g.add_input(sym(&[Ok(b), Err("s"), Ok(kvh as u64), Ok(d as u64)]));
    let pos = g.add_input(common::sym_type(DType::I64, &[Ok(b), Err("s")]));
    let out = g.add_node(op(Some(0), p), vec![q, k, v, pos], vec![sym(&[Ok(b), Err("s"), Ok(h as u64), Ok(d as u64)])]);
    g.set_outputs(out);
    CpuExecutor::new(g, WeightStore::new()).unwrap()
}

fn cached_executor(h: usize, kvh: usize, d: usize, p: Params) -> CpuExecutor {
    cached_executor_batch(1, h, kvh, d, p)
}

/// Rows `from..to` of a `[1, t, ...]` tensor.
fn rows(t: &Tensor, from: usize, to: usize) -> Tensor {
    let w: usize = t.shape()[2..].iter().product();
    let mut shape = t.shape().to_vec();
    shape[1] = to - from;
    Tensor::f32(shape, t.to_f32_vec()[from * w..to * w].to_vec()).unwrap()
}

fn cached_step(exec: &mut CpuExecutor, q: &Tensor, k: &Tensor, v: &Tensor, from: usize, to: usize) -> Vec<f32> {
    let pos = Tensor::i64(vec![1, to - from], (from as i64..to as i64).collect()).unwrap();
    exec.run(&[rows(q, from, to), rows(k, from, to), rows(v, from, to), pos]).unwrap().remove(0).to_f32_vec()
}

#[test]
fn cache_mode_over_several_calls_equals_one_call_over_the_sequence() {
    for p in [DEFAULT, Params { window: Some(4), sinks: 1, softcap: Some(3.0), ..DEFAULT }] {
        let (h, kvh, d, t) = (4, 2, 8, 9);
        let (q, k, v) = qkv(30, 1, t, t, h, kvh, d, d);
        let positions: Vec<i64> = (0..t as i64).collect();
        let full = no_cache(&q, &k, &v, &positions, None, p).to_f32_vec();
        let expected = reference(&q, &k, &v, &positions, None, p);
        assert_close(&full, &expected, 1e-5, "no-cache over the whole sequence");

        let mut exec = cached_executor(h, kvh, d, p);
        let mut got = Vec::new();
        for (from, to) in [(0, 5), (5, 6), (6, 7), (7, 9)] {
            got.extend(cached_step(&mut exec, &q, &k, &v, from, to));
            assert_eq!(exec.kv_len(), to);
        }
        assert_close(&got, &expected, 1e-5, &format!("prefill + decode steps {p:?}"));
        let diff = got.iter().zip(&full).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-5 * full.iter().fold(0.0f32, |m, x| m.max(x.abs())), "cache vs no cache: {diff}");
    }
}

/// Columns `from..to` of dim 1 of a `[b, t, ...]` tensor.
fn cols(t: &Tensor, from: usize, to: usize) -> Tensor {
    let w: usize = t.shape()[2..].iter().product();
    let (b, n) = (t.shape()[0], t.shape()[1]);
    let v = t.to_f32_vec();
    let data = (0..b).flat_map(|bi| v[(bi * n + from) * w..(bi * n + to) * w].to_vec()).collect();
    let mut shape = t.shape().to_vec();
    shape[1] = to - from;
    Tensor::f32(shape, data).unwrap()
}

#[test]
fn cache_mode_keeps_batch_rows_apart() {
    let (b, h, kvh, d, t) = (2, 4, 2, 8, 6);
    let (q, k, v) = qkv(35, b, t, t, h, kvh, d, d);
    let positions: Vec<i64> = (0..b).flat_map(|_| 0..t as i64).collect();
    let expected = reference(&q, &k, &v, &positions, None, DEFAULT);
    let mut exec = cached_executor_batch(b as u64, h, kvh, d, DEFAULT);
    let mut got = vec![Vec::new(); b];
    for (from, to) in [(0, 4), (4, 5), (5, 6)] {
        let pos: Vec<i64> = (0..b).flat_map(|_| from as i64..to as i64).collect();
        let pos = Tensor::i64(vec![b, to - from], pos).unwrap();
        let out = exec.run(&[cols(&q, from, to), cols(&k, from, to), cols(&v, from, to), pos]).unwrap();
        let out = out[0].to_f32_vec();
        for (bi, rows) in out.chunks(out.len() / b).enumerate() {
            got[bi].extend_from_slice(rows);
        }
    }
    assert_close(&got.concat(), &expected, 1e-5, "batch 2 through the cache");
}

#[test]
fn truncate_and_reset_roll_the_cache_back() {
    let (h, kvh, d) = (2, 1, 4);
    let (q, k, v) = qkv(40, 1, 6, 6, h, kvh, d, d);
    let mut exec = cached_executor(h, kvh, d, DEFAULT);
    cached_step(&mut exec, &q, &k, &v, 0, 4);
    // A rejected speculative token at slot 4 ...
    let (q2, k2, v2) = qkv(50, 1, 1, 1, h, kvh, d, d);
    let pos = Tensor::i64(vec![1, 1], vec![4]).unwrap();
    exec.run(&[q2, k2, v2, pos]).unwrap();
    assert_eq!(exec.kv_len(), 5);
    // ... is rolled back, and the real continuation matches the uninterrupted computation.
    exec.truncate_kv(4).unwrap();
    let got = cached_step(&mut exec, &q, &k, &v, 4, 6);
    let positions: Vec<i64> = (0..6).collect();
    let expected = reference(&q, &k, &v, &positions, None, DEFAULT);
    assert_close(&got, &expected[4 * h * d..], 1e-5, "after truncate");

    assert!(matches!(exec.truncate_kv(7), Err(RuntimeError::KvCache { .. })));
    exec.reset();
    assert!(matches!(exec.compact_kv(&[0]), Err(RuntimeError::KvCache { .. })), "compacting an empty cache");
    exec.compact_kv(&[]).unwrap();
    assert_eq!(exec.kv_len(), 0);
    let got = cached_step(&mut exec, &q, &k, &v, 0, 2);
    assert_close(&got, &expected[..2 * h * d], 1e-5, "after reset");
}

/// A graph of one cached attention op (layer 0) that also takes a tree mask `bool[s, s]`.
fn masked_cached_executor(h: usize, kvh: usize, d: usize) -> CpuExecutor {
    let mut g = Graph::new("tree_attention");
    let sym = |dims: &[Result<u64, &str>]| common::sym_type(DType::F32, dims);
    let q = g.add_input(sym(&[Ok(1), Err("s"), Ok(h as u64), Ok(d as u64)]));
    let k = g.add_input(sym(&[Ok(1), Err("s"), Ok(kvh as u64), Ok(d as u64)]));
    let v = g.add_input(sym(&[Ok(1), Err("s"), Ok(kvh as u64), Ok(d as u64)]));
    let pos = g.add_input(common::sym_type(DType::I64, &[Ok(1), Err("s")]));
    let mask = g.add_input(common::sym_type(DType::Bool, &[Err("s"), Err("s")]));
    let out_ty = sym(&[Ok(1), Err("s"), Ok(h as u64), Ok(d as u64)]);
    let out = g.add_node(op(Some(0), DEFAULT), vec![q, k, v, pos, mask], vec![out_ty]);
    g.set_outputs(out);
    CpuExecutor::new(g, WeightStore::new()).unwrap()
}

fn causal_bits(s: usize) -> Vec<bool> {
    (0..s * s).map(|x| x % s <= x / s).collect()
}

/// Concatenates `[1, t_i, ...]` tensors along dim 1.
fn cat(parts: &[&Tensor]) -> Tensor {
    let mut shape = parts[0].shape().to_vec();
    shape[1] = parts.iter().map(|t| t.shape()[1]).sum();
    Tensor::f32(shape, parts.iter().flat_map(|t| t.to_f32_vec()).collect()).unwrap()
}

#[test]
fn compact_keeps_the_accepted_path_of_a_tree() {
    let (h, kvh, d) = (4, 2, 8);
    let mut exec = masked_cached_executor(h, kvh, d);
    let run = |exec: &mut CpuExecutor, q: &Tensor, k: &Tensor, v: &Tensor, pos: &[i64], bits: &[bool]| {
        let s = pos.len();
        let pos_t = Tensor::i64(vec![1, s], pos.to_vec()).unwrap();
        let mask = mask_tensor(bits, s);
        exec.run(&[q.clone(), k.clone(), v.clone(), pos_t, mask]).unwrap().remove(0).to_f32_vec()
    };
    // Prefix of 4 tokens (slots 0..4).
    let (q, k, v) = qkv(60, 1, 4, 4, h, kvh, d, d);
    let got = run(&mut exec, &q, &k, &v, &[0, 1, 2, 3], &causal_bits(4));
    let expected = reference(&q, &k, &v, &[0, 1, 2, 3], None, DEFAULT);
    assert_close(&got, &expected, 1e-5, "prefix through a causal tree mask");
    // A tree in slots 4, 5, 6: two candidates at position 4, then a child of the second at position 5.
    let (tq, tk, tv) = qkv(70, 1, 3, 3, h, kvh, d, d);
    let tree = [true, false, false, false, true, false, false, true, true];
    let got = run(&mut exec, &tq, &tk, &tv, &[4, 4, 5], &tree);
    let expected = reference(&tq, &cat(&[&k, &tk]), &cat(&[&v, &tv]), &[4, 4, 5], Some(&tree), DEFAULT);
    assert_close(&got, &expected, 1e-5, "tree step");
    assert_eq!(exec.kv_len(), 7);

    // Accept the path through the second candidate: keep slots 0..4, 5, 6.
    exec.compact_kv(&[0, 1, 2, 3, 5, 6]).unwrap();
    assert_eq!(exec.kv_len(), 6);
    let (nq, nk, nv) = qkv(80, 1, 1, 1, h, kvh, d, d);
    let got = run(&mut exec, &nq, &nk, &nv, &[6], &[true]);
    let kept_k = cat(&[&k, &rows(&tk, 1, 3), &nk]);
    let kept_v = cat(&[&v, &rows(&tv, 1, 3), &nv]);
    let expected = reference(&nq, &kept_k, &kept_v, &[6], None, DEFAULT);
    assert_close(&got, &expected, 1e-5, "decode after compaction");

    assert!(matches!(exec.compact_kv(&[0, 9]), Err(RuntimeError::KvCache { .. })));
    assert!(matches!(exec.compact_kv(&[0, 0]), Err(RuntimeError::KvCache { .. })));
    assert_eq!(exec.kv_len(), 7, "a refused compaction changes nothing");
}

#[test]
fn bad_attention_operands_are_errors() {
    let (q, k, v) = qkv(90, 1, 3, 3, 3, 2, 4, 4);
    let pos = Tensor::i64(vec![1, 3], vec![0, 1, 2]).unwrap();
    let operands = vec![Operand::Input(q), Operand::Input(k), Operand::Input(v), Operand::Input(pos)];
    let e = run_one(op(None, DEFAULT), operands, WeightStore::new(), f32_type(&[1, 3, 3, 4])).unwrap_err();
    assert!(matches!(e, RuntimeError::Verify { .. }) && e.to_string().contains("multiple of 2 kv_heads"), "{e}");

    // Fewer keys than queries is only known at run time.
    let mut g = Graph::new("short_keys");
    let sym = |dims: &[Result<u64, &str>]| common::sym_type(DType::F32, dims);
    let q = g.add_input(sym(&[Ok(1), Err("s"), Ok(2), Ok(4)]));
    let k = g.add_input(sym(&[Ok(1), Err("t"), Ok(1), Ok(4)]));
    let v = g.add_input(sym(&[Ok(1), Err("t"), Ok(1), Ok(4)]));
    let pos = g.add_input(common::sym_type(DType::I64, &[Ok(1), Err("s")]));
    let out = g.add_node(op(None, DEFAULT), vec![q, k, v, pos], vec![sym(&[Ok(1), Err("s"), Ok(2), Ok(4)])]);
    g.set_outputs(out);
    let mut exec = CpuExecutor::new(g, WeightStore::new()).unwrap();
    let (q, k, v) = qkv(92, 1, 3, 2, 2, 1, 4, 4);
    let e = exec.run(&[q, k, v, Tensor::i64(vec![1, 3], vec![0, 1, 2]).unwrap()]).unwrap_err();
    assert!(matches!(&e, RuntimeError::Op { message, .. } if message.contains("fewer than the 3 new tokens")), "{e}");

    let mut exec = cached_executor(2, 1, 4, DEFAULT);
    let (q, k, v) = qkv(91, 1, 2, 2, 2, 1, 4, 4);
    let pos = Tensor::i64(vec![1, 2], vec![0, 1]).unwrap();
    exec.run(&[q.clone(), k.clone(), v.clone(), pos.clone()]).unwrap();
    // A mismatch in a later input leaves the cache untouched.
    let bad_pos = Tensor::i64(vec![1, 3], vec![0, 1, 2]).unwrap();
    assert!(matches!(exec.run(&[q, k, v, bad_pos]), Err(RuntimeError::SymbolConflict { .. })));
    assert_eq!(exec.kv_len(), 2);
}
