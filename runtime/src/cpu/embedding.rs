//! `embedding`: rows of a `[V, H]` table picked by integer ids, read in the table's stored dtype.

use super::value::MatrixRows;

/// `embedding(table[V, H], ids[...]) -> [..., H]` in f32; ids outside `0..V` are errors.
pub fn embedding(
    table: &MatrixRows<'_>,
    table_shape: &[usize],
    ids: &[i64],
    ids_shape: &[usize],
) -> Result<(Vec<f32>, Vec<usize>), String> {
    let &[vocab, hidden] = table_shape else {
        return Err(format!("the table must be a matrix [V, H], but has shape {table_shape:?}"));
    };
    let mut out = vec![0.0f32; ids.len() * hidden];
    if hidden > 0 {
        for (&id, row) in ids.iter().zip(out.chunks_mut(hidden)) {
            let r = usize::try_from(id)
                .ok()
                .filter(|&r| r < vocab)
                .ok_or_else(|| format!("id {id} is outside the table's {vocab} rows"))?;
            table.read_row(r, row);
        }
    } else if let Some(&id) = ids.iter().find(|&&id| id < 0 || id as u64 >= vocab as u64) {
        return Err(format!("id {id} is outside the table's {vocab} rows"));
    }
    let mut shape = ids_shape.to_vec();
    shape.push(hidden);
    Ok((out, shape))
}
