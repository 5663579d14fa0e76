//! What can be wrong with a GGUF file. Every variant says which part of the file is at fault, so the
//! message (prefixed with the path by [`crate::FrontendError::Gguf`]) tells the user what to do.

/// A problem with a GGUF file's contents.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file: it starts with bytes {found:02x?}, not the magic `GGUF`")]
    BadMagic { found: Vec<u8> },
    #[error("GGUF version {0} is not supported (kiln reads versions 2 and 3){hint}", hint = big_endian_hint(*.0))]
    UnsupportedVersion(u32),
    #[error("the file is truncated: reading {what} at byte {offset} needs {needed} bytes but the file has {len}")]
    Truncated { what: String, offset: u64, needed: u64, len: u64 },
    #[error("{what} claims {count} entries, more than the {remaining} bytes left in the file can hold")]
    CountTooLarge { what: String, count: u64, remaining: u64 },
    #[error("metadata value `{key}` has type id {type_id}, which is not a GGUF value type")]
    BadValueType { key: String, type_id: u32 },
    #[error("metadata value `{key}` nests arrays deeper than {max} levels")]
    TooDeep { key: String, max: usize },
    #[error("{what} is not valid UTF-8")]
    BadUtf8 { what: String },
    #[error("metadata key `{0}` appears twice")]
    DuplicateKey(String),
    #[error("tensor `{0}` appears twice")]
    DuplicateTensor(String),
    #[error("`general.alignment` is {0}; it must be a power of two")]
    BadAlignment(u64),
    #[error("tensor `{name}` has {n_dims} dimensions; GGUF allows at most 4")]
    TooManyDims { name: String, n_dims: u32 },
    #[error("tensor `{name}` has type id {type_id} ({type_name}), which kiln cannot import (supported: {supported})")]
    UnsupportedTensorType { name: String, type_id: u32, type_name: String, supported: String },
    #[error("tensor `{name}` has shape {dims:?} (innermost first), whose size overflows")]
    ShapeOverflow { name: String, dims: Vec<u64> },
    #[error(
        "tensor `{name}` of type {ty} has rows of {row_len} elements, not a whole number of {block}-element blocks"
    )]
    PartialBlock { name: String, ty: String, row_len: u64, block: usize },
    #[error("tensor `{name}` starts at data offset {offset}, which is not a multiple of the alignment {alignment}")]
    MisalignedTensor { name: String, offset: u64, alignment: u64 },
    #[error("tensor `{name}` needs bytes {start}..{end} of the file, which has only {len} bytes")]
    TensorOutOfFile { name: String, start: u64, end: u64, len: u64 },
    #[error("required metadata key `{0}` is missing")]
    MissingKey(String),
    #[error("metadata key `{key}` should be {expected}, but it is {found}")]
    WrongValueType { key: String, expected: String, found: String },
    #[error("metadata key `{key}` has the value {value}, which is not usable: {reason}")]
    BadValue { key: String, value: String, reason: String },
    #[error("architecture `{found}` is not supported (supported: {supported})")]
    UnknownArchitecture { found: String, supported: String },
    #[error("required tensor `{0}` is missing")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {found:?} but the metadata implies {expected:?}")]
    TensorShape { name: String, found: Vec<u64>, expected: Vec<u64> },
    #[error("tensor `{name}` is not used by the {arch} architecture (kiln does not know what it is for)")]
    UnknownTensor { name: String, arch: String },
    #[error("cannot rebuild the tokenizer from `tokenizer.ggml.*`: {0}")]
    Tokenizer(String),
    #[error("weight `{name}`: {message}")]
    Weight { name: String, message: String },
}

fn big_endian_hint(version: u32) -> &'static str {
    if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
        "; this looks like a big-endian GGUF file, which kiln does not read"
    } else {
        ""
    }
}
