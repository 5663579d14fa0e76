//! kiln-ir: the intermediate representation every other kiln crate speaks.
//!
//! Types ([`DType`], [`Shape`], [`TensorType`]), the SSA [`Graph`] of [`Op`]s, constants ([`Tensor`]),
//! the [`WeightStore`] that `weight` ops name, the text form ([`text`]), type inference ([`infer`]),
//! the [`verify`]er, reference evaluation of generic ops ([`eval`]), and the `.kiln` [`artifact`] schema. It depends on no other kiln crate.

pub mod artifact;
pub mod attr;
pub mod dtype;
pub mod eval;
pub mod fusion;
pub mod graph;
pub mod infer;
pub mod lowbit;
pub mod model;
pub mod op;
pub mod quant;
pub mod shape;
pub mod tensor;
pub mod text;
pub mod verify;
pub mod weights;

pub use artifact::{CompiledKernel, KernelTarget};
pub use attr::{Attr, GeluApprox, RopeScaling, RopeStyle};
pub use dtype::DType;
pub use graph::{Graph, Node, NodeId, ValueData, ValueDef, ValueId};
pub use lowbit::{E8m0Rounding, LowBitCast, LowBitType};
pub use model::{Model, ModelMeta};
pub use op::{
    BinaryOp, CompareOp, NearestRounding, Op, PadMode, PoolKind, ReduceKind, ResizeCoord, ResizeMode, ScatterReduction,
    UnaryOp,
};
pub use shape::{Dim, Shape, TensorType};
pub use tensor::{Tensor, TensorData};
pub use verify::{VerifyError, VerifyErrors, verify};
pub use weights::{StoredWeight, WeightBytes, WeightPayload, WeightStore};
