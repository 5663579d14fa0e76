//! Run-time shape checking: binds each symbolic dim to one size per run and checks the tensors that
//! come in (graph inputs) and the results every node produces against the types the graph declares.

use std::collections::HashMap;
use std::sync::Arc;

use kiln_ir::{DType, Dim, Tensor, TensorType};

use crate::RuntimeError;

/// The sizes symbolic dims took in this run, with where each was first bound (for error messages).
#[derive(Debug, Default)]
pub struct SymbolBindings {
    sizes: HashMap<Arc<str>, (usize, String)>,
}

impl SymbolBindings {
    /// Binds `symbol` to `size`, or checks it against an earlier binding.
    fn bind(&mut self, symbol: &Arc<str>, size: usize, where_: impl Fn() -> String) -> Result<(), RuntimeError> {
        match self.sizes.get(symbol) {
            Some((bound, bound_by)) if *bound != size => Err(RuntimeError::SymbolConflict {
                symbol: symbol.to_string(),
                bound: *bound,
                bound_by: bound_by.clone(),
                where_: where_(),
                actual: size,
            }),
            Some(_) => Ok(()),
            None => {
                self.sizes.insert(symbol.clone(), (size, where_()));
                Ok(())
            }
        }
    }
}

/// Checks graph input `index` against its declared type, binding the symbols it mentions.
pub fn check_input(
    index: usize,
    declared: &TensorType,
    t: &Tensor,
    bindings: &mut SymbolBindings,
) -> Result<(), RuntimeError> {
    if t.dtype() != declared.dtype {
        return Err(RuntimeError::InputDType {
            index,
            expected: declared.dtype,
            actual: t.dtype(),
            declared: declared.clone(),
        });
    }
    if t.shape().len() != declared.rank() {
        return Err(RuntimeError::InputRank {
            index,
            expected: declared.rank(),
            actual: t.shape().to_vec(),
            declared: declared.clone(),
        });
    }
    for (axis, (dim, &size)) in declared.shape.dims().iter().zip(t.shape()).enumerate() {
        match dim {
            Dim::Static(n) if *n != size as u64 => {
                return Err(RuntimeError::InputDim {
                    index,
                    axis,
                    expected: *n,
                    actual: size,
                    declared: declared.clone(),
                });
            }
            Dim::Sym(s) => bindings.bind(s, size, || format!("input {index} dim {axis}"))?,
            Dim::Static(_) | Dim::Unknown => {}
        }
    }
    Ok(())
}

/// Checks result `index` of a node against its declared type; `node` describes the node for messages
/// (called only when there is something to report).
pub fn check_result(
    node: &dyn Fn() -> String,
    index: usize,
    declared: &TensorType,
    dtype: DType,
    shape: &[usize],
    bindings: &mut SymbolBindings,
) -> Result<(), RuntimeError> {
    let mismatch = || RuntimeError::ResultType {
        node: node(),
        index,
        actual_dtype: dtype,
        actual_shape: shape.to_vec(),
        declared: declared.clone(),
    };
    if dtype != declared.dtype || shape.len() != declared.rank() {
        return Err(mismatch());
    }
    for (axis, (dim, &size)) in declared.shape.dims().iter().zip(shape).enumerate() {
        match dim {
            Dim::Static(n) if *n != size as u64 => return Err(mismatch()),
            Dim::Sym(s) => bindings.bind(s, size, || format!("{} (result {index} dim {axis})", node()))?,
            Dim::Static(_) | Dim::Unknown => {}
        }
    }
    Ok(())
}
