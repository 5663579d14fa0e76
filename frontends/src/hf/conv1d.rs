//! GPT-2's weight conventions brought to the decoder builder's: the `transformer.` name prefix (absent in
//! the original OpenAI-converted checkpoints) and the Conv1D layout.
//!
//! transformers' `Conv1D` stores its weight as `[in, out]`, while kiln's `linear` takes `[out, in]`. The
//! transpose is done once at import into an owned buffer of the same dtype: this is the one place the HF
//! frontend copies weights, costing one extra copy of every attention and MLP matrix of a GPT-2 model
//! (about 85M parameters for gpt2-small). Expressing it in the graph instead (a `transpose` or a
//! `matmul` against `[in, out]`) would make the executor materialise the matrix on every forward pass,
//! which costs far more; a quantized format cannot be transposed without requantizing, so quantized
//! Conv1D weights must arrive as `[out, in]` (GGUF stores them that way; see [`CONV1D_LAYOUT_KEY`]).

use kiln_ir::{Shape, TensorType, WeightBytes, WeightPayload, WeightStore};

use super::architectures::Family;
use super::config::Config;
use crate::FrontendError;

/// Config key saying how GPT-2 Conv1D weights are laid out: `"in_out"` (Hugging Face, the default) or
/// `"out_in"` (already `linear`'s layout, as GGUF stores them).
pub const CONV1D_LAYOUT_KEY: &str = "kiln_conv1d_layout";

const CONV1D_SUFFIXES: [&str; 4] =
    [".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"];

fn is_conv1d_weight(name: &str) -> bool {
    name.starts_with("transformer.h.") && CONV1D_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// For GPT-2, a store with `transformer.`-prefixed names and `[out, in]` Conv1D weights; other
/// architectures pass through unchanged.
pub fn normalize_gpt2_weights(
    cfg: &Config,
    family: Family,
    store: WeightStore,
    weights_file: &str,
) -> Result<WeightStore, FrontendError> {
    if family != Family::Gpt2 {
        return Ok(store);
    }
    let transpose = match cfg.opt_str(CONV1D_LAYOUT_KEY)? {
        None | Some("in_out") => true,
        Some("out_in") => false,
        Some(other) => {
            return Err(FrontendError::Unsupported {
                file: cfg.file.into(),
                what: format!("`{CONV1D_LAYOUT_KEY}`"),
                value: other.into(),
                supported: "in_out, out_in".into(),
            });
        }
    };
    let add_prefix = !store.contains("transformer.wte.weight") && store.contains("wte.weight");
    let bad = |message: String| FrontendError::BadWeights { path: weights_file.into(), message };
    let mut out = WeightStore::new();
    for (name, w) in store.iter() {
        let name =
            if add_prefix && !name.starts_with("lm_head.") { format!("transformer.{name}") } else { name.to_string() };
        let (ty, payload) = if transpose && is_conv1d_weight(&name) {
            let WeightPayload::Dense(bytes) = &w.payload else {
                return Err(bad(format!(
                    "Conv1D weight `{name}` is quantized ({}) in the [in, out] layout, which cannot be transposed \
                     without requantizing; quantized Conv1D weights must be stored [out, in] with \
                     `{CONV1D_LAYOUT_KEY}: \"out_in\"` in the config",
                    w.ty
                )));
            };
            let dims = w.ty.shape.as_static().expect("stored weights have static shapes");
            let [rows, cols] = dims[..] else {
                return Err(bad(format!("Conv1D weight `{name}` has type {}, not a matrix", w.ty)));
            };
            let elem = w.ty.dtype.size_of().expect("dense weights have a plain dtype");
            let t = transpose_bytes(bytes.as_slice(), rows, cols, elem);
            (
                TensorType::new(w.ty.dtype, Shape::of(&[cols as u64, rows as u64])),
                WeightPayload::Dense(WeightBytes::from_vec(t)),
            )
        } else {
            (w.ty.clone(), w.payload.clone())
        };
        out.insert(name, ty, payload).map_err(|e| bad(e.to_string()))?;
    }
    Ok(out)
}

/// The `[cols, rows]` transpose of a row-major `[rows, cols]` matrix of `elem`-byte elements.
fn transpose_bytes(src: &[u8], rows: usize, cols: usize, elem: usize) -> Vec<u8> {
    let mut dst = vec![0u8; src.len()];
    for r in 0..rows {
        for c in 0..cols {
            let from = (r * cols + c) * elem;
            let to = (c * rows + r) * elem;
            dst[to..to + elem].copy_from_slice(&src[from..from + elem]);
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_multi_byte_elements() {
        // [[1, 2, 3], [4, 5, 6]] of u16 -> [[1, 4], [2, 5], [3, 6]].
        let src: Vec<u8> = [1u16, 2, 3, 4, 5, 6].iter().flat_map(|x| x.to_le_bytes()).collect();
        let want: Vec<u8> = [1u16, 4, 2, 5, 3, 6].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(transpose_bytes(&src, 2, 3, 2), want);
    }
}
