//! ggml tensor types as GGUF files number them: which ones kiln imports, their block sizes, and the
//! names of the ones it does not, so an error can say what the file contains.

use std::fmt;

/// A tensor element type kiln can read from a GGUF file. Variants keep ggml's names (`Q4_K`), which is
/// how users and llama.cpp's tools spell them.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    F64,
    I8,
    I16,
    I32,
    I64,
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4_K,
    Q6_K,
}

/// Names of every ggml type id, supported or not (ids 4, 5 and 31-33, 36-38 were retired upstream).
const NAMES: &[(u32, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (6, "Q5_0"),
    (7, "Q5_1"),
    (8, "Q8_0"),
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (12, "Q4_K"),
    (13, "Q5_K"),
    (14, "Q6_K"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (30, "BF16"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
];

impl GgmlType {
    /// Every type kiln imports, for messages.
    pub const SUPPORTED: [GgmlType; 14] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::F64,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];

    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            14 => GgmlType::Q6_K,
            24 => GgmlType::I8,
            25 => GgmlType::I16,
            26 => GgmlType::I32,
            27 => GgmlType::I64,
            28 => GgmlType::F64,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q6_K => 14,
            GgmlType::I8 => 24,
            GgmlType::I16 => 25,
            GgmlType::I32 => 26,
            GgmlType::I64 => 27,
            GgmlType::F64 => 28,
            GgmlType::BF16 => 30,
        }
    }

    /// The upstream name of any type id (`None` for ids ggml never assigned).
    pub fn name_of_id(id: u32) -> Option<&'static str> {
        NAMES.iter().find(|(i, _)| *i == id).map(|(_, n)| *n)
    }

    pub fn name(self) -> &'static str {
        Self::name_of_id(self.id()).expect("every supported type has a name")
    }

    /// Elements per block (1 for plain types).
    pub fn block_len(self) -> usize {
        match self {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0 => 32,
            GgmlType::Q4_K | GgmlType::Q6_K => 256,
            _ => 1,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::I8 => 1,
            GgmlType::F16 | GgmlType::BF16 | GgmlType::I16 => 2,
            GgmlType::F32 | GgmlType::I32 => 4,
            GgmlType::F64 | GgmlType::I64 => 8,
            // f16 scale + 16 bytes of nibbles
            GgmlType::Q4_0 => 18,
            // f16 scale + f16 minimum + 16 bytes of nibbles
            GgmlType::Q4_1 => 20,
            // f16 scale + 4 bytes of fifth bits + 16 bytes of nibbles
            GgmlType::Q5_0 => 22,
            // f16 scale + 32 signed bytes
            GgmlType::Q8_0 => 34,
            // f16 scale + f16 minimum scale + 12 bytes of 6-bit sub-scales/minimums + 128 bytes of nibbles
            GgmlType::Q4_K => 144,
            // 128 bytes of low nibbles + 64 bytes of high bit pairs + 16 i8 sub-scales + f16 scale
            GgmlType::Q6_K => 210,
        }
    }

    /// Bytes of a row of `row_len` elements; `None` when `row_len` is not a whole number of blocks.
    pub fn row_bytes(self, row_len: usize) -> Option<usize> {
        row_len.is_multiple_of(self.block_len()).then(|| row_len / self.block_len() * self.block_bytes())
    }

    pub fn is_quantized(self) -> bool {
        self.block_len() > 1
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// "F32, F16, ..." for error messages.
pub fn supported_list() -> String {
    GgmlType::SUPPORTED.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_agree() {
        for t in GgmlType::SUPPORTED {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert!(!t.name().is_empty());
        }
        assert_eq!(GgmlType::name_of_id(13), Some("Q5_K"));
        assert_eq!(GgmlType::from_id(13), None);
        assert_eq!(GgmlType::name_of_id(4), None);
        assert_eq!(GgmlType::Q4_K.row_bytes(512), Some(288));
        assert_eq!(GgmlType::Q4_1.row_bytes(48), None);
    }
}
