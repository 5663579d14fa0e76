//! GGUF metadata values: the thirteen value types of the format, and typed accessors that turn a missing
//! key or a value of the wrong type into an error naming the key.

use std::fmt;

use super::GgufError;

/// The type ids GGUF assigns to metadata values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<ValueType> {
        Some(match id {
            0 => ValueType::U8,
            1 => ValueType::I8,
            2 => ValueType::U16,
            3 => ValueType::I16,
            4 => ValueType::U32,
            5 => ValueType::I32,
            6 => ValueType::F32,
            7 => ValueType::Bool,
            8 => ValueType::String,
            9 => ValueType::Array,
            10 => ValueType::U64,
            11 => ValueType::I64,
            12 => ValueType::F64,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    /// The fewest bytes one value of this type occupies in the file (a string's length field, an array's
    /// element type and count), used to refuse counts the remaining bytes cannot hold before allocating.
    pub fn min_encoded_len(self) -> u64 {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::String => 8,
            ValueType::Array => 12,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::Array => "array",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        }
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Elements all of type `elem` (nested arrays are allowed by the format).
    Array {
        elem: ValueType,
        items: Vec<MetaValue>,
    },
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    pub fn value_type(&self) -> ValueType {
        match self {
            MetaValue::U8(_) => ValueType::U8,
            MetaValue::I8(_) => ValueType::I8,
            MetaValue::U16(_) => ValueType::U16,
            MetaValue::I16(_) => ValueType::I16,
            MetaValue::U32(_) => ValueType::U32,
            MetaValue::I32(_) => ValueType::I32,
            MetaValue::F32(_) => ValueType::F32,
            MetaValue::Bool(_) => ValueType::Bool,
            MetaValue::String(_) => ValueType::String,
            MetaValue::Array { .. } => ValueType::Array,
            MetaValue::U64(_) => ValueType::U64,
            MetaValue::I64(_) => ValueType::I64,
            MetaValue::F64(_) => ValueType::F64,
        }
    }

    /// The value as an integer, whatever its integer width (converters differ in the widths they write).
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as a float; integers convert too. An f32 becomes the f64 of its shortest decimal form,
    /// which is the number the converter was given (`1e-5`, not `9.999999747378752e-6`).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.to_string().parse().unwrap_or(v.into())),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array { items, .. } => Some(items),
            _ => None,
        }
    }

    /// A short description for error messages: the type, and the value when it is small.
    pub fn describe(&self) -> String {
        match self {
            MetaValue::Array { elem, items } => format!("an array of {} {}", items.len(), elem.name()),
            MetaValue::String(s) if s.len() > 40 => format!("a string of {} bytes", s.len()),
            other => format!("{} {other}", other.value_type().name()),
        }
    }
}

impl fmt::Display for MetaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::U8(v) => write!(f, "{v}"),
            MetaValue::I8(v) => write!(f, "{v}"),
            MetaValue::U16(v) => write!(f, "{v}"),
            MetaValue::I16(v) => write!(f, "{v}"),
            MetaValue::U32(v) => write!(f, "{v}"),
            MetaValue::I32(v) => write!(f, "{v}"),
            MetaValue::F32(v) => write!(f, "{v}"),
            MetaValue::Bool(v) => write!(f, "{v}"),
            MetaValue::String(s) => write!(f, "{s:?}"),
            MetaValue::Array { elem, items } => write!(f, "[{} x {}]", items.len(), elem.name()),
            MetaValue::U64(v) => write!(f, "{v}"),
            MetaValue::I64(v) => write!(f, "{v}"),
            MetaValue::F64(v) => write!(f, "{v}"),
        }
    }
}

/// Typed lookups of metadata by key, each failing with an error that names the key.
pub trait MetadataLookup {
    fn value(&self, key: &str) -> Option<&MetaValue>;

    fn require(&self, key: &str) -> Result<&MetaValue, GgufError> {
        self.value(key).ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    fn wrong(&self, key: &str, expected: &str, found: &MetaValue) -> GgufError {
        GgufError::WrongValueType { key: key.to_string(), expected: expected.to_string(), found: found.describe() }
    }

    /// A non-negative integer.
    fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        let Some(v) = self.value(key) else { return Ok(None) };
        match v.as_i128() {
            Some(i) => u64::try_from(i).map(Some).map_err(|_| GgufError::BadValue {
                key: key.to_string(),
                value: v.to_string(),
                reason: "it must not be negative".into(),
            }),
            None => Err(self.wrong(key, "an integer", v)),
        }
    }

    fn require_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get_u64(key)?.ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    /// A non-negative integer that fits a token id.
    fn get_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        let Some(v) = self.get_u64(key)? else { return Ok(None) };
        u32::try_from(v).map(Some).map_err(|_| GgufError::BadValue {
            key: key.to_string(),
            value: v.to_string(),
            reason: "it does not fit in 32 bits".into(),
        })
    }

    fn get_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        let Some(v) = self.value(key) else { return Ok(None) };
        v.as_f64().map(Some).ok_or_else(|| self.wrong(key, "a number", v))
    }

    fn require_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get_f64(key)?.ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        let Some(v) = self.value(key) else { return Ok(None) };
        v.as_str().map(Some).ok_or_else(|| self.wrong(key, "a string", v))
    }

    fn require_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get_str(key)?.ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        let Some(v) = self.value(key) else { return Ok(None) };
        v.as_bool().map(Some).ok_or_else(|| self.wrong(key, "a bool", v))
    }

    fn get_array(&self, key: &str) -> Result<Option<&[MetaValue]>, GgufError> {
        let Some(v) = self.value(key) else { return Ok(None) };
        v.as_array().map(Some).ok_or_else(|| self.wrong(key, "an array", v))
    }

    /// An array of strings.
    fn get_strings(&self, key: &str) -> Result<Option<Vec<&str>>, GgufError> {
        let Some(items) = self.get_array(key)? else { return Ok(None) };
        let v = self.value(key).expect("present");
        items
            .iter()
            .map(|i| i.as_str().ok_or_else(|| self.wrong(key, "an array of strings", v)))
            .collect::<Result<_, _>>()
            .map(Some)
    }
}
