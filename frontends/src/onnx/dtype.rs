//! ONNX element types (`TensorProto.DataType`) and their kiln dtypes.

use kiln_ir::{DType, LowBitType};

use super::OnnxError;
use super::proto::tensor_proto::DataType;

/// The kiln dtype of ONNX element type `code`; `what` names the tensor or value in the error.
pub fn dtype_of(code: i32, what: &str) -> Result<DType, OnnxError> {
    let unsupported = |name: &str| OnnxError::UnsupportedDType { what: what.to_string(), dtype: name.to_string() };
    let Ok(dt) = DataType::try_from(code) else {
        return Err(unsupported(&format!("with unknown code {code}")));
    };
    Ok(match dt {
        DataType::Float => DType::F32,
        DataType::Float16 => DType::F16,
        DataType::Bfloat16 => DType::BF16,
        DataType::Double => DType::F64,
        DataType::Int8 => DType::I8,
        DataType::Int16 => DType::I16,
        DataType::Int32 => DType::I32,
        DataType::Int64 => DType::I64,
        DataType::Uint8 => DType::U8,
        DataType::Uint16 => DType::U16,
        DataType::Uint32 => DType::U32,
        DataType::Uint64 => DType::U64,
        DataType::Bool => DType::Bool,
        DataType::String => DType::Str,
        DataType::Float8e4m3fn => DType::LowBit(LowBitType::F8E4M3FN),
        DataType::Float8e4m3fnuz => DType::LowBit(LowBitType::F8E4M3FNUZ),
        DataType::Float8e5m2 => DType::LowBit(LowBitType::F8E5M2),
        DataType::Float8e5m2fnuz => DType::LowBit(LowBitType::F8E5M2FNUZ),
        DataType::Float8e8m0 => DType::LowBit(LowBitType::F8E8M0),
        DataType::Float4e2m1 => DType::LowBit(LowBitType::F4E2M1),
        DataType::Int4 => DType::LowBit(LowBitType::I4),
        DataType::Uint4 => DType::LowBit(LowBitType::U4),
        DataType::Int2 => DType::LowBit(LowBitType::I2),
        DataType::Uint2 => DType::LowBit(LowBitType::U2),
        DataType::Undefined => return Err(unsupported("UNDEFINED (0)")),
        other => return Err(unsupported(other.as_str_name())),
    })
}

/// The ONNX element type code of a kiln dtype.
pub fn code_of(dtype: DType) -> i32 {
    (match dtype {
        DType::F32 => DataType::Float,
        DType::F16 => DataType::Float16,
        DType::BF16 => DataType::Bfloat16,
        DType::F64 => DataType::Double,
        DType::I8 => DataType::Int8,
        DType::I16 => DataType::Int16,
        DType::I32 => DataType::Int32,
        DType::I64 => DataType::Int64,
        DType::U8 => DataType::Uint8,
        DType::U16 => DataType::Uint16,
        DType::U32 => DataType::Uint32,
        DType::U64 => DataType::Uint64,
        DType::Bool => DataType::Bool,
        DType::Str => DataType::String,
        DType::LowBit(t) => match t {
            LowBitType::F8E4M3FN => DataType::Float8e4m3fn,
            LowBitType::F8E4M3FNUZ => DataType::Float8e4m3fnuz,
            LowBitType::F8E5M2 => DataType::Float8e5m2,
            LowBitType::F8E5M2FNUZ => DataType::Float8e5m2fnuz,
            LowBitType::F8E8M0 => DataType::Float8e8m0,
            LowBitType::F4E2M1 => DataType::Float4e2m1,
            LowBitType::I4 => DataType::Int4,
            LowBitType::U4 => DataType::Uint4,
            LowBitType::I2 => DataType::Int2,
            LowBitType::U2 => DataType::Uint2,
        },
        DType::Q8C | DType::Q4G { .. } => DataType::Undefined,
    }) as i32
}
