//! `embedding`, `rms_norm` and `layer_norm` against f64 references written out here.

mod common;

use common::{Operand, assert_close, f32_type, random_tensor, random_vec, run_one};
use half::{bf16, f16};
use kiln_ir::{DType, Op, Tensor, TensorData, TensorType, WeightStore};
use kiln_runtime::RuntimeError;

const V: usize = 10;
const H: usize = 32;

fn ids() -> Tensor {
    Tensor::i64(vec![2, 3], vec![0, 9, 4, 4, 1, 7]).unwrap()
}

/// The embedding of `ids()` must be the table rows as the reference reads them.
fn check_embedding(store: WeightStore, table: &[f64], out_dtype: DType) {
    let ids = ids();
    let y = run_one(
        Op::Embedding {},
        vec![Operand::Weight("table"), Operand::Input(ids.clone())],
        store,
        TensorType::of(out_dtype, &[2, 3, H as u64]),
    )
    .unwrap();
    assert_eq!(y.dtype(), out_dtype);
    let expected: Vec<f64> =
        ids.to_i64_vec().iter().flat_map(|&id| table[id as usize * H..(id as usize + 1) * H].to_vec()).collect();
    assert_close(&y.to_f32_vec(), &expected, 1e-7, &format!("embedding {out_dtype}"));
}

#[test]
fn embedding_reads_rows_of_every_table_dtype() {
    let w = random_vec(1, V * H, 1.0);
    let mut store = WeightStore::new();
    store.insert_tensor("table", &Tensor::f32(vec![V, H], w.clone()).unwrap()).unwrap();
    check_embedding(store, &w.iter().map(|&x| x as f64).collect::<Vec<_>>(), DType::F32);

    let h: Vec<f16> = w.iter().map(|&x| f16::from_f32(x)).collect();
    let mut store = WeightStore::new();
    store.insert_tensor("table", &Tensor::new(vec![V, H], TensorData::F16(h.clone())).unwrap()).unwrap();
    check_embedding(store, &h.iter().map(|x| x.to_f64()).collect::<Vec<_>>(), DType::F16);

    let b: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
    let mut store = WeightStore::new();
    store.insert_tensor("table", &Tensor::new(vec![V, H], TensorData::BF16(b.clone())).unwrap()).unwrap();
    check_embedding(store, &b.iter().map(|x| x.to_f64()).collect::<Vec<_>>(), DType::BF16);

    // q8c: q · scale[row], dequantized here from the raw buffers.
    let q = kiln_ir::quant::quantize(DType::Q8C, V, H, &w).unwrap();
    let table: Vec<f64> = (0..V * H)
        .map(|i| q.data[i] as i8 as f64 * f32::from_le_bytes(q.scales[4 * (i / H)..][..4].try_into().unwrap()) as f64)
        .collect();
    let mut store = WeightStore::new();
    store.insert_quantized("table", DType::Q8C, V, H, &w).unwrap();
    check_embedding(store, &table, DType::F32);

    // q4g16 without zero points: (nibble - 8) · scale[group].
    let dtype = DType::Q4G { group_size: 16, zero_points: false };
    let q = kiln_ir::quant::quantize(dtype, V, H, &w).unwrap();
    let table: Vec<f64> = (0..V * H)
        .map(|i| {
            let nibble = if i.is_multiple_of(2) { q.data[i / 2] & 0xf } else { q.data[i / 2] >> 4 } as f64;
            (nibble - 8.0) * f32::from_le_bytes(q.scales[4 * (i / 16)..][..4].try_into().unwrap()) as f64
        })
        .collect();
    let mut store = WeightStore::new();
    store.insert_quantized("table", dtype, V, H, &w).unwrap();
    check_embedding(store, &table, DType::F32);
}

#[test]
fn embedding_rejects_ids_out_of_range() {
    for bad in [10i64, -1] {
        let mut store = WeightStore::new();
        store.insert_tensor("table", &random_tensor(1, &[V, H], 1.0)).unwrap();
        let ids = Tensor::i64(vec![1, 2], vec![3, bad]).unwrap();
        let e =
            run_one(Op::Embedding {}, vec![Operand::Weight("table"), Operand::Input(ids)], store, f32_type(&[1, 2, H]))
                .unwrap_err();
        assert!(matches!(&e, RuntimeError::Op { message, .. } if message.contains(&format!("id {bad}"))), "{e}");
    }
}

fn reference_rms_norm(x: &[f32], w: &[f32], eps: f64, offset: f64) -> Vec<f64> {
    let mut out = Vec::new();
    for row in x.chunks(w.len()) {
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w.len() as f64;
        let r = 1.0 / (ms + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(&v, &wi)| v as f64 * r * (wi as f64 + offset)));
    }
    out
}

#[test]
fn rms_norm_matches_reference_with_offsets_0_and_1() {
    let x = random_tensor(2, &[2, 5, H], 3.0);
    let w = random_vec(3, H, 1.0);
    for offset in [0.0f32, 1.0] {
        let mut store = WeightStore::new();
        store.insert_tensor("w", &Tensor::f32(vec![H], w.clone()).unwrap()).unwrap();
        let y = run_one(
            Op::RmsNorm { eps: 1e-6, offset },
            vec![Operand::Input(x.clone()), Operand::Weight("w")],
            store,
            f32_type(&[2, 5, H]),
        )
        .unwrap();
        let expected = reference_rms_norm(&x.to_f32_vec(), &w, 1e-6, offset as f64);
        assert_close(&y.to_f32_vec(), &expected, 1e-5, &format!("rms_norm offset {offset}"));
    }
}

#[test]
fn rms_norm_eps_matters_for_small_inputs() {
    let x = random_tensor(4, &[3, H], 1e-3);
    let w = random_vec(5, H, 1.0);
    let mut store = WeightStore::new();
    store.insert_tensor("w", &Tensor::f32(vec![H], w.clone()).unwrap()).unwrap();
    let y = run_one(
        Op::RmsNorm { eps: 1e-5, offset: 0.0 },
        vec![Operand::Input(x.clone()), Operand::Weight("w")],
        store,
        f32_type(&[3, H]),
    )
    .unwrap();
    assert_close(&y.to_f32_vec(), &reference_rms_norm(&x.to_f32_vec(), &w, 1e-5, 0.0), 1e-5, "rms_norm eps");
}

fn reference_layer_norm(x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f64) -> Vec<f64> {
    let n = w.len();
    let mut out = Vec::new();
    for row in x.chunks(n) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        for i in 0..n {
            out.push((row[i] as f64 - mean) / (var + eps).sqrt() * w[i] as f64 + b.map_or(0.0, |b| b[i] as f64));
        }
    }
    out
}

#[test]
fn layer_norm_matches_reference_with_and_without_bias() {
    let x = random_tensor(6, &[3, 4, H], 2.0);
    let w = random_vec(7, H, 1.0);
    let b = random_vec(8, H, 1.0);
    for with_bias in [false, true] {
        let mut store = WeightStore::new();
        store.insert_tensor("w", &Tensor::f32(vec![H], w.clone()).unwrap()).unwrap();
        let mut operands = vec![Operand::Input(x.clone()), Operand::Weight("w")];
        if with_bias {
            store.insert_tensor("b", &Tensor::f32(vec![H], b.clone()).unwrap()).unwrap();
            operands.push(Operand::Weight("b"));
        }
        let y = run_one(Op::LayerNorm { axis: -1, eps: 1e-5 }, operands, store, f32_type(&[3, 4, H])).unwrap();
        let expected = reference_layer_norm(&x.to_f32_vec(), &w, with_bias.then_some(b.as_slice()), 1e-5);
        assert_close(&y.to_f32_vec(), &expected, 1e-5, &format!("layer_norm bias={with_bias}"));
    }
}

#[test]
fn layer_norm_over_several_trailing_axes() {
    let x = random_tensor(9, &[3, 4, 8], 2.0);
    let w = random_vec(10, 32, 1.0);
    let b = random_vec(11, 32, 1.0);
    let mut store = WeightStore::new();
    store.insert_tensor("w", &Tensor::f32(vec![4, 8], w.clone()).unwrap()).unwrap();
    store.insert_tensor("b", &Tensor::f32(vec![4, 8], b.clone()).unwrap()).unwrap();
    let y = run_one(
        Op::LayerNorm { axis: 1, eps: 1e-5 },
        vec![Operand::Input(x.clone()), Operand::Weight("w"), Operand::Weight("b")],
        store,
        f32_type(&[3, 4, 8]),
    )
    .unwrap();
    let expected = reference_layer_norm(&x.to_f32_vec(), &w, Some(&b), 1e-5);
    assert_close(&y.to_f32_vec(), &expected, 1e-5, "layer_norm axis 1");
}
