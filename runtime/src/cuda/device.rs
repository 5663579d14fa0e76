//! The GPU context: finding a driver and a device, picking the kernel image for it, loading functions.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr, DriverError, LaunchConfig, result, sys,
};
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
    /// Kernels are launched as programmatic dependent launches (see [`Device::launch`]).
    pub pdl: bool,
    /// The loaded image can ask the L2 for bulk prefetches (`cp.async.bulk.prefetch`, sm_90 and newer).
    pub bulk_prefetch: bool,
    /// The memory's nominal bandwidth in bytes a second (double data rate x bus width), when the driver reports
    /// the memory clock and bus width.
    pub memory_bandwidth: Option<f64>,
    /// Kernel launches so far (the launch trace labels a step's launches by counting them).
    pub launches: std::cell::Cell<u64>,
}

/// The arguments of one kernel launch: the addresses of values that live as long as the builder (the driver
/// reads them during the launch call).
#[derive(Default)]
pub(crate) struct KernelArgs<'a> {
    addresses: Vec<*mut std::ffi::c_void>,
    _values: std::marker::PhantomData<&'a ()>,
}

impl<'a> KernelArgs<'a> {
    pub fn arg<T: DeviceRepr>(&mut self, value: &'a T) -> &mut Self {
        self.addresses.push(value as *const T as *mut std::ffi::c_void);
        self
    }
}

/// Bytes a second the device memory moves at its nominal clock (two transfers a clock over the bus), or None
/// where the driver does not report the clock or the bus width.
fn nominal_memory_bandwidth(ctx: &CudaContext) -> Option<f64> {
    use sys::CUdevice_attribute::{CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE};
    let clock_khz = ctx.attribute(CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE).ok().filter(|&c| c > 0)?;
    let bus_bits = ctx.attribute(CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH).ok().filter(|&b| b > 0)?;
    Some(2.0 * clock_khz as f64 * 1e3 * bus_bits as f64 / 8.0)
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
        // Programmatic dependent launch needs sm_90 and kernels compiled for it (their KILN_PDL_ENTRY waits
        // for the previous kernel; compiled for an older architecture it is empty).
        let image_sm = match image.target {
            KernelTarget::Cubin { sm } => Some(sm),
            KernelTarget::Ptx => ptx_target_sm(&image.bytes),
        };
        // Graph capture of programmatic launches needs a CUDA 12.3 driver.
        let mut driver = 0;
        // SAFETY: writes one int.
        let driver_ok = unsafe { sys::cuDriverGetVersion(&mut driver) }.result().is_ok() && driver >= 12030;
        let bulk_prefetch = sm >= 90 && image_sm.is_some_and(|s| s >= 90);
        let memory_bandwidth = nominal_memory_bandwidth(&ctx);
        let pdl = sm >= 90
            && driver_ok
            && image_sm.is_some_and(|s| s >= 90)
            && !matches!(std::env::var("KILN_CUDA_PDL").as_deref(), Ok("0"));
        Ok(Device {
            ctx,
            stream,
            module,
            functions: HashMap::new(),
            sm,
            name,
            loaded: image.target,
            pdl,
            bulk_prefetch,
            memory_bandwidth,
            launches: std::cell::Cell::new(0),
        })
    }

    /// Launches `f` on the stream. With [`Device::pdl`] the launch is a programmatic dependent one: the kernel
    /// may start while the previous kernel on the stream finishes, and waits for it in its `KILN_PDL_ENTRY`
    /// before touching what that kernel writes (common.cuh). Captured into a CUDA graph, the dependency
    /// becomes a programmatic edge.
    ///
    /// # Safety
    /// `args` must match the kernel's parameters, and every address the kernel dereferences must be valid
    /// for the launch's extent.
    pub unsafe fn launch(
        &self,
        f: &CudaFunction,
        cfg: LaunchConfig,
        args: &mut KernelArgs<'_>,
    ) -> Result<(), DriverError> {
        self.ctx.bind_to_thread()?;
        self.launches.set(self.launches.get() + 1);
        if !self.pdl {
            // SAFETY: as for this function.
            return unsafe {
                cudarc::driver::result::launch_kernel(
                    f.cu_function(),
                    cfg.grid_dim,
                    cfg.block_dim,
                    cfg.shared_mem_bytes,
                    self.stream.cu_stream(),
                    &mut args.addresses,
                )
            };
        }
        let mut value: sys::CUlaunchAttributeValue = unsafe { std::mem::zeroed() };
        value.programmaticStreamSerializationAllowed = 1;
        let mut attribute = sys::CUlaunchAttribute {
            id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
            pad: [0; 4],
            value,
        };
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: &mut attribute,
            numAttrs: 1,
        };
        // SAFETY: the configuration and attribute outlive the call; the caller vouches for the arguments.
        unsafe { sys::cuLaunchKernelEx(&config, f.cu_function(), args.addresses.as_mut_ptr(), std::ptr::null_mut()) }
            .result()
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

/// The `sm_XX` a PTX image was generated for (its `.target` directive), if it says.
fn ptx_target_sm(ptx: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(ptx.get(..ptx.len().min(4096))?).ok()?;
    let rest = text.split(".target sm_").nth(1)?;
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
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

/// Page-locked host slots that a greedy run's per-step readbacks (the error flag and the chosen token, two
/// i32) are copied into without waiting, each slot with an event to wait on: the host reads step k's slot
/// while later steps are already queued (a copy into pageable memory would wait for the stream).
pub(crate) struct ReadbackRing {
    ctx: Arc<CudaContext>,
    host: *mut [i32; 2],
    events: Vec<cudarc::driver::CudaEvent>,
}

// SAFETY: the slots are owned by the ring and touched only through `&mut self` (queue) or after their
// copy's event (wait); nothing else holds the pointer.
unsafe impl Send for ReadbackRing {}

impl ReadbackRing {
    pub fn new(device: &Device, slots: usize) -> Result<ReadbackRing, RuntimeError> {
        let what = "allocating page-locked readback slots";
        let flags = Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING);
        let events = (0..slots).map(|_| device.ctx.new_event(flags)).collect::<Result<Vec<_>, _>>();
        let events = events.map_err(cuda_error(what))?;
        device.ctx.bind_to_thread().map_err(cuda_error(what))?;
        // SAFETY: a plain page-locked allocation of `slots` pairs, freed in Drop.
        let host =
            unsafe { result::malloc_host(slots * std::mem::size_of::<[i32; 2]>(), 0) }.map_err(cuda_error(what))?;
        let host: *mut [i32; 2] = host.cast();
        // SAFETY: `slots` pairs were just allocated; zeroed, a slot read before any copy is defined.
        unsafe { std::ptr::write_bytes(host, 0, slots) };
        Ok(ReadbackRing { ctx: device.ctx.clone(), host, events })
    }

    pub fn slots(&self) -> usize {
        self.events.len()
    }

    /// Queues the copy of the two i32 at device address `src` into `slot`, after the stream's work so far.
    ///
    /// # Safety
    /// `src` must point at two readable i32 on `device`, and `slot`'s previous copy must have been waited for.
    pub unsafe fn queue(&mut self, device: &Device, slot: usize, src: u64) -> Result<(), RuntimeError> {
        assert!(slot < self.slots(), "readback slot {slot} of {}", self.slots());
        // SAFETY: the slot lies inside the allocation and no copy into it is pending (the caller's promise).
        let dst = unsafe { std::slice::from_raw_parts_mut(self.host.add(slot).cast::<i32>(), 2) };
        // SAFETY: as above; the caller vouches for `src`.
        unsafe { result::memcpy_dtoh_async(dst, src, device.stream.cu_stream()) }
            .map_err(cuda_error("reading back a step's token"))?;
        self.events[slot].record(&device.stream).map_err(cuda_error("reading back a step's token"))
    }

    /// Waits for `slot`'s copy and returns the flag and the token (zeros if nothing was copied into it).
    pub fn wait(&self, slot: usize) -> Result<[i32; 2], RuntimeError> {
        self.events[slot].synchronize().map_err(cuda_error("running a decode step"))?;
        // SAFETY: `slot` is in range (the event lookup above checked it), initialised in `new`, and the
        // copy into it, if any, has completed.
        Ok(unsafe { *self.host.add(slot) })
    }
}

impl Drop for ReadbackRing {
    fn drop(&mut self) {
        for event in &self.events {
            let _ = event.synchronize();
        }
        let _ = self.ctx.bind_to_thread();
        // SAFETY: allocated by malloc_host in `new`; no copy into it is pending after the events.
        let _ = unsafe { result::free_host(self.host.cast()) };
    }
}
