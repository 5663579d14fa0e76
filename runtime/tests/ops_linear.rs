//! `linear` and `logits` against f64 references, for every weight storage dtype (quantized weights are
//! dequantized in the reference with the formulas of `kiln_ir::quant`), on the GEMM path (several
//! rows of x) and the GEMV path (one row).

mod common;

use common::{Operand, assert_close, f32_type, random_tensor, random_vec, run_one};
use half::{bf16, f16};
use kiln_ir::{DType, Graph, Op, Tensor, TensorData, TensorType, WeightBytes, WeightPayload, WeightStore};
use kiln_runtime::{CpuExecutor, RuntimeError};

const N: usize = 70;
const K: usize = 64;

/// Stores `w` (row-major `[N, K]`) as `dtype` under "w" and returns the stored values as the f64
/// matrix the reference multiplies with.
fn store_weight(store: &mut WeightStore, dtype: DType, w: &[f32]) -> Vec<f64> {
    match dtype {
        DType::F32 => {
            store.insert_tensor("w", &Tensor::f32(vec![N, K], w.to_vec()).unwrap()).unwrap();
            w.iter().map(|&x| x as f64).collect()
        }
        DType::F16 => {
            let v: Vec<f16> = w.iter().map(|&x| f16::from_f32(x)).collect();
            store.insert_tensor("w", &Tensor::new(vec![N, K], TensorData::F16(v.clone())).unwrap()).unwrap();
            v.iter().map(|x| x.to_f64()).collect()
        }
        DType::BF16 => {
            let v: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
            store.insert_tensor("w", &Tensor::new(vec![N, K], TensorData::BF16(v.clone())).unwrap()).unwrap();
            v.iter().map(|x| x.to_f64()).collect()
        }
        q => {
            let b = kiln_ir::quant::quantize(q, N, K, w).unwrap();
            let reference = dequantize_f64(q, &b.data, &b.scales, b.zeros.as_deref());
            let payload = WeightPayload::Quantized {
                data: WeightBytes::from_vec(b.data),
                scales: WeightBytes::from_vec(b.scales),
                zeros: b.zeros.map(WeightBytes::from_vec),
            };
            store.insert("w", TensorType::of(q, &[N as u64, K as u64]), payload).unwrap();
            reference
        }
    }
}

/// The documented dequantization: q8c `q · scale[row]`; q4g `(nibble - zero) · scale[group]` with the
/// even column in the low nibble and zero 8 unless zero points are stored.
fn dequantize_f64(dtype: DType, data: &[u8], scales: &[u8], zeros: Option<&[u8]>) -> Vec<f64> {
    let f32_at = |b: &[u8], i: usize| f32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap()) as f64;
    let mut out = vec![0.0; N * K];
    for n in 0..N {
        for k in 0..K {
            let i = n * K + k;
            out[i] = match dtype {
                DType::Q8C => data[i] as i8 as f64 * f32_at(scales, n),
                DType::Q4G { group_size, .. } => {
                    let byte = data[i / 2];
                    let nibble = if i.is_multiple_of(2) { byte & 0x0f } else { byte >> 4 } as f64;
                    let group = i / group_size as usize;
                    let zero = zeros.map_or(8.0, |z| f32_at(z, group));
                    (nibble - zero) * f32_at(scales, group)
                }
                other => panic!("not quantized: {other}"),
            };
        }
    }
    out
}

fn reference_matmul(x: &[f32], w: &[f64], bias: Option<&[f32]>) -> Vec<f64> {
    let m = x.len() / K;
    let mut out = vec![0.0; m * N];
    for r in 0..m {
        for n in 0..N {
            let mut acc = bias.map_or(0.0, |b| b[n] as f64);
            for k in 0..K {
                acc += x[r * K + k] as f64 * w[n * K + k];
            }
            out[r * N + n] = acc;
        }
    }
    out
}

const DTYPES: [DType; 7] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8C,
    DType::Q4G { group_size: 32, zero_points: false },
    DType::Q4G { group_size: 16, zero_points: true },
    DType::Q4G { group_size: 64, zero_points: true },
];

fn check_linear(dtype: DType, x_shape: &[usize], with_bias: bool) {
    let w = random_vec(1, N * K, 0.5);
    let mut store = WeightStore::new();
    let wref = store_weight(&mut store, dtype, &w);
    let x = random_tensor(2, x_shape, 1.0);
    let bias = random_vec(3, N, 0.5);
    let mut operands = vec![Operand::Input(x.clone()), Operand::Weight("w")];
    if with_bias {
        store.insert_tensor("b", &Tensor::f32(vec![N], bias.clone()).unwrap()).unwrap();
        operands.push(Operand::Weight("b"));
    }
    let mut out_shape = x_shape.to_vec();
    *out_shape.last_mut().unwrap() = N;
    let y = run_one(Op::Linear {}, operands, store, f32_type(&out_shape)).unwrap();
    assert_eq!(y.shape(), out_shape.as_slice());
    let expected = reference_matmul(&x.to_f32_vec(), &wref, with_bias.then_some(bias.as_slice()));
    assert_close(&y.to_f32_vec(), &expected, 1e-5, &format!("linear {dtype} x{x_shape:?} bias={with_bias}"));
}

#[test]
fn linear_matches_reference_for_every_weight_dtype_on_the_gemm_path() {
    for dtype in DTYPES {
        check_linear(dtype, &[2, 3, K], false);
        check_linear(dtype, &[5, K], true);
    }
}

#[test]
fn linear_matches_reference_for_every_weight_dtype_on_the_gemv_path() {
    for dtype in DTYPES {
        check_linear(dtype, &[1, 1, K], true);
        check_linear(dtype, &[K], false);
    }
}

#[test]
fn linear_keeps_a_half_precision_activation_dtype() {
    let w = random_vec(4, N * K, 0.5);
    let mut store = WeightStore::new();
    let wref = store_weight(&mut store, DType::BF16, &w);
    let xs: Vec<bf16> = random_vec(5, 3 * K, 1.0).into_iter().map(bf16::from_f32).collect();
    let x = Tensor::new(vec![3, K], TensorData::BF16(xs)).unwrap();
    let y = run_one(
        Op::Linear {},
        vec![Operand::Input(x.clone()), Operand::Weight("w")],
        store,
        TensorType::of(DType::BF16, &[3, N as u64]),
    )
    .unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    let expected = reference_matmul(&x.to_f32_vec(), &wref, None);
    // The result is rounded to bf16 (8 significant bits).
    assert_close(&y.to_f32_vec(), &expected, 1e-2, "bf16 linear");
}

#[test]
fn linear_rejects_mismatched_shapes() {
    let mut store = WeightStore::new();
    store_weight(&mut store, DType::F32, &random_vec(1, N * K, 0.5));
    let x = random_tensor(2, &[2, K + 1], 1.0);
    let e =
        run_one(Op::Linear {}, vec![Operand::Input(x.clone()), Operand::Weight("w")], store.clone(), f32_type(&[2, N]))
            .unwrap_err();
    assert!(matches!(&e, RuntimeError::Verify { .. }), "a static mismatch is the verifier's: {e}");

    // With an unknown input dim the mismatch shows only at run time.
    let mut g = Graph::new("unknown_k");
    let xv = g.add_input(common::sym_type(DType::F32, &[Ok(2), Err("?")]));
    let wv =
        g.add_node(Op::Weight { name: "w".into() }, vec![], vec![TensorType::of(DType::F32, &[N as u64, K as u64])]);
    let y = g.add_node(Op::Linear {}, vec![xv, wv[0]], vec![f32_type(&[2, N])]);
    g.set_outputs(y);
    let mut exec = CpuExecutor::new(g, store).unwrap();
    let e = exec.run(&[x]).unwrap_err();
    assert!(matches!(&e, RuntimeError::Op { message, .. } if message.contains("last dim is 65")), "{e}");
}

fn check_logits(dtype: DType, softcap: Option<f32>, rows: usize) {
    let w = random_vec(6, N * K, 1.0);
    let mut store = WeightStore::new();
    let wref = store_weight(&mut store, dtype, &w);
    let x = random_tensor(7, &[1, rows, K], 1.0);
    let y = run_one(
        Op::Logits { softcap },
        vec![Operand::Input(x.clone()), Operand::Weight("w")],
        store,
        f32_type(&[1, rows, N]),
    )
    .unwrap();
    let mut expected = reference_matmul(&x.to_f32_vec(), &wref, None);
    if let Some(cap) = softcap {
        let cap = cap as f64;
        for e in &mut expected {
            *e = cap * (*e / cap).tanh();
        }
    }
    assert_close(&y.to_f32_vec(), &expected, 1e-5, &format!("logits {dtype} softcap {softcap:?}"));
}

#[test]
fn logits_match_reference_with_and_without_softcap() {
    for dtype in [DType::F32, DType::BF16, DType::Q8C, DType::Q4G { group_size: 32, zero_points: true }] {
        check_logits(dtype, None, 4);
        check_logits(dtype, Some(3.0), 4);
        check_logits(dtype, Some(3.0), 1);
    }
}

#[test]
fn softcap_actually_caps() {
    let mut store = WeightStore::new();
    store.insert_tensor("w", &Tensor::f32(vec![2, 1], vec![100.0, -100.0]).unwrap()).unwrap();
    let x = Tensor::f32(vec![1, 1], vec![1.0]).unwrap();
    let y = run_one(
        Op::Logits { softcap: Some(30.0) },
        vec![Operand::Input(x), Operand::Weight("w")],
        store,
        f32_type(&[1, 2]),
    )
    .unwrap();
    let expected = [30.0 * (100.0f64 / 30.0).tanh(), -30.0 * (100.0f64 / 30.0).tanh()];
    assert_close(&y.to_f32_vec(), &expected, 1e-6, "capped logits");
}
