//! The KV cache the executor owns: per attention `layer`, the keys and values of every token seen so far.
//!
//! Slot `j` of a layer holds the token at position `j` (attention relies on it: a past key's position is
//! its slot index). Each layer stores, per batch row, keys `[len, kv_heads, head_dim]` and values
//! `[len, kv_heads, v_dim]`, contiguous so that appending a step is a copy at the end.

use std::collections::BTreeMap;

use crate::RuntimeError;

/// Keys and values of one attention layer.
#[derive(Clone, Debug)]
pub struct LayerCache {
    batch: usize,
    kv_heads: usize,
    head_dim: usize,
    v_dim: usize,
    len: usize,
    /// Per batch row, `[len, kv_heads, head_dim]`.
    keys: Vec<Vec<f32>>,
    /// Per batch row, `[len, kv_heads, v_dim]`.
    values: Vec<Vec<f32>>,
}

impl LayerCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys of batch row `b`, `[len, kv_heads, head_dim]`.
    pub fn keys(&self, b: usize) -> &[f32] {
        &self.keys[b]
    }

    /// Values of batch row `b`, `[len, kv_heads, v_dim]`.
    pub fn values(&self, b: usize) -> &[f32] {
        &self.values[b]
    }

    /// Appends `s` new tokens: `k[batch, s, kv_heads, head_dim]`, `v[batch, s, kv_heads, v_dim]`.
    pub fn append(&mut self, k: &[f32], v: &[f32], s: usize) {
        let (kr, vr) = (s * self.kv_heads * self.head_dim, s * self.kv_heads * self.v_dim);
        debug_assert_eq!((k.len(), v.len()), (self.batch * kr, self.batch * vr));
        for b in 0..self.batch {
            self.keys[b].extend_from_slice(&k[b * kr..(b + 1) * kr]);
            self.values[b].extend_from_slice(&v[b * vr..(b + 1) * vr]);
        }
        self.len += s;
    }

    fn truncate(&mut self, len: usize) {
        if len < self.len {
            for b in 0..self.batch {
                self.keys[b].truncate(len * self.kv_heads * self.head_dim);
                self.values[b].truncate(len * self.kv_heads * self.v_dim);
            }
            self.len = len;
        }
    }

    fn compact(&mut self, keep: &[usize]) {
        let (kw, vw) = (self.kv_heads * self.head_dim, self.kv_heads * self.v_dim);
        for b in 0..self.batch {
            self.keys[b] = keep.iter().flat_map(|&j| self.keys[b][j * kw..(j + 1) * kw].iter().copied()).collect();
            self.values[b] = keep.iter().flat_map(|&j| self.values[b][j * vw..(j + 1) * vw].iter().copied()).collect();
        }
        self.len = keep.len();
    }
}

/// The caches of all layers. Layers are created on first use with the geometry of their first k/v.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: BTreeMap<u32, LayerCache>,
}

impl KvCache {
    /// The number of cached tokens: the longest layer's length (after a complete run every layer holds
    /// the same number of tokens).
    pub fn len(&self) -> usize {
        self.layers.values().map(LayerCache::len).max().unwrap_or(0)
    }

    /// Drops every cached token and layer.
    pub fn reset(&mut self) {
        self.layers.clear();
    }

    /// Keeps the first `len` tokens of every layer.
    pub fn truncate(&mut self, len: usize) -> Result<(), RuntimeError> {
        let have = self.len();
        if len > have {
            return Err(RuntimeError::KvCache {
                message: format!("cannot truncate to {len} tokens: the cache holds {have}"),
            });
        }
        for layer in self.layers.values_mut() {
            layer.truncate(len);
        }
        Ok(())
    }

    /// Keeps exactly the slots `keep`, in that order, in every layer: slot `keep[i]` becomes slot `i`.
    pub fn compact(&mut self, keep: &[usize]) -> Result<(), RuntimeError> {
        let len = self.len();
        let mut seen = vec![false; len];
        for &j in keep {
            if j >= len {
                return Err(RuntimeError::KvCache {
                    message: format!("cannot keep slot {j}: the cache holds {len} tokens"),
                });
            }
            for (&id, layer) in &self.layers {
                if j >= layer.len() {
                    return Err(RuntimeError::KvCache {
                        message: format!("cannot keep slot {j}: layer {id} holds {} tokens", layer.len()),
                    });
                }
            }
            if std::mem::replace(&mut seen[j], true) {
                return Err(RuntimeError::KvCache {
                    message: format!("slot {j} is listed twice in the slots to keep"),
                });
            }
        }
        for layer in self.layers.values_mut() {
            layer.compact(keep);
        }
        Ok(())
    }

    /// The cache of `layer`, created empty on first use; its geometry must match every later use.
    pub fn layer_mut(
        &mut self,
        layer: u32,
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
        v_dim: usize,
    ) -> Result<&mut LayerCache, String> {
        // An absent or empty cache (after a reset or a truncation to 0) takes the geometry of this use.
        if self.layers.get(&layer).is_none_or(LayerCache::is_empty) {
            let empty = || vec![Vec::new(); batch];
            let fresh = LayerCache { batch, kv_heads, head_dim, v_dim, len: 0, keys: empty(), values: empty() };
            self.layers.insert(layer, fresh);
        }
        let entry = self.layers.get_mut(&layer).expect("inserted above when absent");
        let have = (entry.batch, entry.kv_heads, entry.head_dim, entry.v_dim);
        if have != (batch, kv_heads, head_dim, v_dim) {
            return Err(format!(
                "the KV cache of layer {layer} holds (batch, kv_heads, head_dim, v_dim) = {have:?} but this call \
                 has {:?}",
                (batch, kv_heads, head_dim, v_dim)
            ));
        }
        Ok(entry)
    }

    /// Every layer's length, to undo the appends of a run that failed part way.
    pub fn lengths(&self) -> BTreeMap<u32, usize> {
        self.layers.iter().map(|(&id, l)| (id, l.len())).collect()
    }

    /// Restores the lengths recorded by [`KvCache::lengths`], dropping layers created since.
    pub fn restore_lengths(&mut self, lengths: &BTreeMap<u32, usize>) {
        self.layers.retain(|id, _| lengths.contains_key(id));
        for (id, layer) in &mut self.layers {
            layer.truncate(lengths[id]);
        }
    }
}
