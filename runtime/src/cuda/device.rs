//! The GPU context: finding a driver and a device, picking the kernel image for it, loading functions.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, sys};
use cudarc::nvrtc::Ptx;
use kiln_ir::{CompiledKernel, KernelTarget};

use crate::RuntimeError;

pub(crate) fn cuda_error(what: impl std::fmt::Display) -> impl FnOnce(cudarc::driver::DriverError) -> RuntimeError {
    move |e| RuntimeError::Cuda { message: format!("{what}: {e}") }
}

/// A device with the model's kernel module loaded.
pub(crate) struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub module: Arc<CudaModule>,
    pub functions: HashMap<String, CudaFunction>,
    /// `sm_XX` of the device.
    pub sm: u32,
    pub name: String,
    /// Which image was loaded.
    pub loaded: KernelTarget,
}

impl Device {
    /// Opens GPU `ordinal` and loads the best of `images` for it: the cubin of its architecture, else the PTX.
    pub fn open(ordinal: usize, images: &[CompiledKernel]) -> Result<Device, RuntimeError> {
        // Checked before the driver, so the fix is named the same on a machine without a GPU.
        if images.is_empty() {
            return Err(RuntimeError::Cuda {
                message: "the model has no CUDA kernels; compile it with `--target cuda:sm_XX` (or run it from \
                          its source model, which compiles them in memory)"
                    .to_string(),
            });
        }
        let ctx = open_context(ordinal)?;
        // The executor orders everything on one stream itself; cudarc's per-buffer events are not needed.
        // SAFETY: no buffers exist yet, and all later work is issued on the one stream.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(cuda_error("cannot read the compute capability"))?;
        let sm = (major * 10 + minor) as u32;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".to_string());
        let cubin = images.iter().find(|k| k.target == KernelTarget::Cubin { sm });
        let image = cubin.or_else(|| images.iter().find(|k| k.target == KernelTarget::Ptx)).ok_or_else(|| {
            let have: Vec<String> = images.iter().map(|k| k.target.to_string()).collect();
            RuntimeError::Cuda {
                message: format!(
                    "{name} is sm_{sm}, and the model's kernels are built for {} with no PTX to fall back on; \
                     recompile with `--target cuda:sm_{sm}`",
                    have.join(", ")
                ),
            }
        })?;
        let mut bytes = image.bytes.clone();
        if image.target == KernelTarget::Ptx && bytes.last() != Some(&0) {
            bytes.push(0); // the driver reads PTX as a C string
        }
        let module = ctx
            .load_module(Ptx::from_binary(bytes))
            .map_err(cuda_error(format!("{name} (sm_{sm}) cannot load the {} kernel image", image.target)))?;
        // A stream of its own: the legacy default stream cannot be captured into a CUDA graph.
        let stream = ctx.new_stream().map_err(cuda_error("creating a CUDA stream"))?;
        Ok(Device { ctx, stream, module, functions: HashMap::new(), sm, name, loaded: image.target })
    }

    /// Copies `dst.len()` elements from device address `src` after the stream's work, and waits for it.
    /// (The stream is non-blocking, so the legacy synchronous copies would not wait for its kernels.)
    ///
    /// # Safety
    /// `src` must point at `dst.len()` readable elements of `T` on this device.
    pub unsafe fn read_back<T>(&self, dst: &mut [T], src: u64, what: &str) -> Result<(), RuntimeError> {
        // SAFETY: the caller vouches for `src`; the copy is ordered on the stream, which we then wait for.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }
            .map_err(cuda_error(what))?;
        self.stream.synchronize().map_err(cuda_error(what))
    }

    /// The kernel `name` of the module (loaded once).
    pub fn function(&mut self, name: &str) -> Result<CudaFunction, RuntimeError> {
        if let Some(f) = self.functions.get(name) {
            return Ok(f.clone());
        }
        let f = self.module.load_function(name).map_err(|e| RuntimeError::Cuda {
            message: format!(
                "the kernel image has no kernel `{name}` ({e}); it was built by a different kiln version or for \
                 another graph, so recompile the artifact"
            ),
        })?;
        self.functions.insert(name.to_string(), f.clone());
        Ok(f)
    }
}

/// A context on GPU `ordinal`, or an error saying what is missing (the driver, the GPU) and the way out.
fn open_context(ordinal: usize) -> Result<Arc<CudaContext>, RuntimeError> {
    // SAFETY: only tries to dlopen the driver library by its known names.
    if !unsafe { sys::is_culib_present() } {
        return Err(RuntimeError::Cuda {
            message:
                "no CUDA driver (libcuda.so) on this machine; install the NVIDIA driver or run with `--device cpu`"
                    .to_string(),
        });
    }
    let count = CudaContext::device_count().map_err(cuda_error("cannot count the GPUs"))?;
    if count <= 0 || ordinal >= count as usize {
        return Err(RuntimeError::Cuda {
            message: format!("no GPU {ordinal} (the driver sees {count}); run with `--device cpu`"),
        });
    }
    CudaContext::new(ordinal).map_err(cuda_error("cannot create a CUDA context"))
}

/// The `sm_XX` of GPU `ordinal`, for compiling kernels for the GPU at hand.
pub fn device_sm(ordinal: usize) -> Result<u32, RuntimeError> {
    let ctx = open_context(ordinal)?;
    let (major, minor) = ctx.compute_capability().map_err(cuda_error("cannot read the compute capability"))?;
    Ok((major * 10 + minor) as u32)
}
