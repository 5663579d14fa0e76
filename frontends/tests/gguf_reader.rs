//! The GGUF container and block formats: metadata of every value type, tensor infos and shapes, every
//! supported block format against gguf-py's dequantization, and an error (never a panic) for each kind of
//! malformed file.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{GgufBuilder, V};
use kiln_frontends::FrontendError;
use kiln_frontends::gguf::arch::Fixup;
use kiln_frontends::gguf::{GgmlType, GgufError, GgufFile, MetaValue, MetadataLookup, blocks, import};
use kiln_ir::DType;
use kiln_ir::weights::StoredWeight;

fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::parse(Arc::new(bytes))
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf").join(name)
}

#[test]
fn metadata_of_every_value_type_reads_back() {
    let mut b = GgufBuilder::default();
    b.kv("u8", V::U8(200))
        .kv("i8", V::I8(-5))
        .kv("u16", V::U16(60000))
        .kv("i16", V::I16(-30000))
        .kv("u32", V::U32(4_000_000_000))
        .kv("i32", V::I32(-2_000_000_000))
        .kv("f32", V::F32(1e-5))
        .kv("bool", V::Bool(true))
        .kv("str", V::s("héllo"))
        .kv("u64", V::U64(u64::MAX))
        .kv("i64", V::I64(i64::MIN))
        .kv("f64", V::F64(-2.5))
        .kv("nested", V::Arr(9, vec![V::Arr(4, vec![V::U32(1), V::U32(2)]), V::Arr(4, vec![])]))
        .kv("general.alignment", V::U32(64));
    b.alignment = 64;
    b.f32_tensor("a", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    b.f32_tensor("b", &[5], &[7.0; 5]);
    let f = parse(b.build()).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 64);
    assert_eq!(f.data_offset % 64, 0);
    assert_eq!(f.value("u8"), Some(&MetaValue::U8(200)));
    assert_eq!(f.value("i8"), Some(&MetaValue::I8(-5)));
    assert_eq!(f.value("u16"), Some(&MetaValue::U16(60000)));
    assert_eq!(f.value("i16"), Some(&MetaValue::I16(-30000)));
    assert_eq!(f.get_u64("u32").unwrap(), Some(4_000_000_000));
    assert_eq!(f.value("i32"), Some(&MetaValue::I32(-2_000_000_000)));
    assert_eq!(f.get_f64("f32").unwrap(), Some(1e-5), "an f32 reads as its shortest decimal");
    assert_eq!(f.get_bool("bool").unwrap(), Some(true));
    assert_eq!(f.get_str("str").unwrap(), Some("héllo"));
    assert_eq!(f.get_u64("u64").unwrap(), Some(u64::MAX));
    assert_eq!(f.value("i64"), Some(&MetaValue::I64(i64::MIN)));
    assert_eq!(f.get_f64("f64").unwrap(), Some(-2.5));
    let nested = f.get_array("nested").unwrap().unwrap();
    assert_eq!(nested[0].as_array().unwrap(), &[MetaValue::U32(1), MetaValue::U32(2)]);
    assert!(nested[1].as_array().unwrap().is_empty());
    // Typed lookups name the key when the type is wrong or the value unusable.
    let e = f.get_str("u8").unwrap_err().to_string();
    assert!(e.contains("`u8`") && e.contains("a string"), "{e}");
    assert!(f.get_u64("i8").unwrap_err().to_string().contains("negative"));
    assert!(f.require_u64("absent").unwrap_err().to_string().contains("`absent` is missing"));

    let a = f.tensor("a").unwrap();
    assert_eq!(a.ggml_dims, vec![3, 2]);
    assert_eq!(a.shape(), vec![2, 3]);
    assert_eq!(a.start % 64, 0);
    let (ty, payload) = import::import_tensor(&f, a, Fixup::default()).unwrap();
    assert_eq!(ty.to_string(), "f32[2, 3]");
    let w = StoredWeight { ty, payload };
    assert_eq!(w.to_tensor().to_f32_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(f.tensors().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn version_2_reads_too() {
    let mut b = GgufBuilder { version: 2, ..Default::default() };
    b.kv("k", V::U32(1));
    b.f32_tensor("t", &[4], &[1.0, 2.0, 3.0, 4.0]);
    let f = parse(b.build()).unwrap();
    assert_eq!(f.version, 2);
    assert_eq!(f.tensor("t").unwrap().shape(), vec![4]);
}

/// Reference values from gguf-py (see fixtures/gguf/make_blocks.py): kiln's decoding of every block
/// format must agree with it, and Q4_0/Q4_1 imported as kiln q4g32/q4g32z must give the same numbers.
#[test]
fn block_formats_match_gguf_py() {
    let f = GgufFile::open(&fixture("blocks.gguf")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("blocks.json")).unwrap()).unwrap();
    let cols = expected["cols"].as_u64().unwrap() as usize;
    let mut seen = Vec::new();
    for info in f.tensors() {
        let want: Vec<f32> =
            expected["values"][&info.name].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(info.row_len(), cols);
        let bytes = f.tensor_bytes(info);
        let row_bytes = info.ty.row_bytes(cols).unwrap();
        let mut got = vec![0f32; cols];
        for r in 0..info.rows() {
            blocks::dequantize_row(info.ty, &bytes[r * row_bytes..(r + 1) * row_bytes], &mut got);
            for (c, (g, w)) in got.iter().zip(&want[r * cols..]).enumerate() {
                assert!((g - w).abs() <= 1e-6 * w.abs().max(1e-3), "{} [{r}, {c}]: kiln {g}, gguf-py {w}", info.name);
            }
        }
        let (ty, payload) = import::import_tensor(&f, info, Fixup::default()).unwrap();
        let expected_dtype = match info.ty {
            GgmlType::Q4_0 => DType::Q4G { group_size: 32, zero_points: false },
            GgmlType::Q4_1 => DType::Q4G { group_size: 32, zero_points: true },
            GgmlType::F16 => DType::F16,
            _ => DType::F32,
        };
        assert_eq!(ty.dtype, expected_dtype, "{}", info.name);
        let w = StoredWeight { ty, payload };
        for r in 0..info.rows() {
            w.read_row_f32(r, &mut got);
            for (c, (g, w)) in got.iter().zip(&want[r * cols..]).enumerate() {
                // q4g32z computes (q - z) * d instead of q * d + m: a few ulps apart.
                assert!((g - w).abs() <= 2e-6 * w.abs().max(0.05), "imported {} [{r}, {c}]: {g} vs {w}", info.name);
            }
        }
        seen.push(info.ty);
    }
    for t in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K] {
        assert!(seen.contains(&t), "fixture lacks {t}");
    }
}

fn open_err(bytes: Vec<u8>, name: &str) -> String {
    let path = GgufBuilder::default().write(name);
    std::fs::write(&path, bytes).unwrap();
    let e = GgufFile::open(&path).unwrap_err();
    assert!(matches!(e, FrontendError::Gguf { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(name), "the message names the file: {msg}");
    msg
}

fn valid() -> GgufBuilder {
    let mut b = GgufBuilder::default();
    b.kv("general.architecture", V::s("llama"));
    b.kv("general.name", V::s("x"));
    b.f32_tensor("w", &[2, 8], &[0.5; 16]);
    b
}

#[test]
fn malformed_files_are_errors_that_say_what_is_wrong() {
    let good = valid().build();

    let mut bad = good.clone();
    bad[..4].copy_from_slice(b"GGML");
    let m = open_err(bad, "bad_magic.gguf");
    assert!(m.contains("not a GGUF file") && m.contains("magic"), "{m}");

    let mut v1 = valid();
    v1.version = 1;
    let m = open_err(v1.build(), "v1.gguf");
    assert!(m.contains("version 1 is not supported"), "{m}");
    let mut be = good.clone();
    be[4..8].copy_from_slice(&3u32.to_be_bytes());
    let m = open_err(be, "big_endian.gguf");
    assert!(m.contains("big-endian"), "{m}");

    let m = open_err(good[..14].to_vec(), "truncated_header.gguf");
    assert!(m.contains("truncated") && m.contains("tensor count"), "{m}");

    // Cut inside the second metadata entry's key.
    let cut = 24 + (8 + "general.architecture".len()) + 4 + 8 + 5 + 8 + 3;
    let m = open_err(good[..cut].to_vec(), "truncated_metadata.gguf");
    assert!(m.contains("truncated") && m.contains("metadata entry 1"), "{m}");

    // Cut inside the tensor info (after its name).
    let info_start = good.windows(9).position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0, b'w']).unwrap();
    let m = open_err(good[..info_start + 12].to_vec(), "truncated_tensor_info.gguf");
    assert!(m.contains("truncated") && m.contains("tensor `w`"), "{m}");

    // Tensor data cut short.
    let m = open_err(good[..good.len() - 4].to_vec(), "truncated_data.gguf");
    assert!(m.contains("tensor `w` needs bytes"), "{m}");

    let mut far = valid();
    far.tensors[0].ggml_dims = vec![8, 1 << 40];
    let m = open_err(far.build(), "outside.gguf");
    assert!(m.contains("tensor `w` needs bytes") && m.contains("which has only"), "{m}");

    let mut q5k = valid();
    q5k.tensors[0].type_id = 13;
    let m = open_err(q5k.build(), "q5k.gguf");
    assert!(m.contains("tensor `w`") && m.contains("type id 13 (Q5_K)") && m.contains("supported: F32"), "{m}");
    let mut unknown = valid();
    unknown.tensors[0].type_id = 99;
    let m = open_err(unknown.build(), "type99.gguf");
    assert!(m.contains("type id 99 (unknown)"), "{m}");

    let mut huge = good.clone();
    huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    let m = open_err(huge, "huge_count.gguf");
    assert!(m.contains("metadata count claims"), "{m}");

    let mut big_array = valid();
    big_array.kv("arr", V::Arr(4, vec![V::U32(1)]));
    let mut bytes = big_array.build();
    let at = bytes.windows(3).position(|w| w == b"arr").unwrap() + 3 + 4 + 4;
    bytes[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let m = open_err(bytes, "huge_array.gguf");
    assert!(m.contains("array `arr` claims 1152921504606846976 entries"), "{m}");

    let mut dup = valid();
    dup.kv.push(("general.name".into(), V::s("y")));
    assert!(open_err(dup.build(), "dup.gguf").contains("`general.name` appears twice"));

    let mut misaligned = valid();
    misaligned.kv("general.alignment", V::U32(24));
    assert!(open_err(misaligned.build(), "align.gguf").contains("power of two"));

    let mut partial = valid();
    partial.raw_tensor("w", &[2, 8], 2, vec![0; 36]);
    assert!(open_err(partial.build(), "partial.gguf").contains("whole number of 32-element blocks"));

    let mut deep = valid();
    let mut v = V::Arr(4, vec![]);
    for _ in 0..20 {
        v = V::Arr(9, vec![v]);
    }
    deep.kv("deep", v);
    assert!(open_err(deep.build(), "deep.gguf").contains("nests arrays deeper"));
}

#[test]
fn missing_files_are_io_errors() {
    let e = GgufFile::open(Path::new("/nonexistent/model.gguf")).unwrap_err();
    assert!(matches!(e, FrontendError::Io { .. }) && e.to_string().contains("/nonexistent/model.gguf"), "{e}");
}
