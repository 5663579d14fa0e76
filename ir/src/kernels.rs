//! Compiled device code as it travels from the code generator, through the artifact, to the runtime.

use std::fmt;

/// What a compiled kernel image is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelTarget {
    /// PTX for the oldest supported architecture, compiled by the driver for whatever GPU runs it.
    Ptx,
    /// Machine code for one GPU architecture, `sm_<sm>` (for example 90 for Hopper, 87 for Jetson Orin).
    Cubin { sm: u32 },
}

impl fmt::Display for KernelTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelTarget::Ptx => write!(f, "ptx"),
            KernelTarget::Cubin { sm } => write!(f, "sm_{sm}"),
        }
    }
}

/// One compiled image of a kernel module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledKernel {
    /// The module's name (one module holds every kernel of a model).
    pub module: String,
    pub target: KernelTarget,
    /// PTX text (NUL-terminated) or cubin bytes.
    pub bytes: Vec<u8>,
}
