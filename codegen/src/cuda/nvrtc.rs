//! Ahead-of-time compilation of a module with NVRTC (loaded at run time through cudarc): PTX for the
//! oldest architecture kiln supports, and a cubin for each requested `sm_XX`.
//!
//! NVRTC comes from a CUDA installation or from the PyPI wheels `nvidia-cuda-nvrtc==13.0.*` (their
//! `nvidia/cu13/lib` on `LD_LIBRARY_PATH`); the kernels include no CUDA header, so no include path is
//! needed. Keep NVRTC at 13.0: PTX from a newer NVRTC may not load on a CUDA 13.0 driver.

use std::ffi::{CStr, CString, c_char};

use cudarc::nvrtc::{result, sys};
use kiln_ir::{CompiledKernel, KernelTarget};

use super::CudaSource;

/// The architecture the PTX is compiled for: the oldest kiln supports (Ampere), so that the driver of
/// any newer GPU can compile it.
pub const PTX_ARCH: u32 = 80;

/// The `sm_XX` cubin targets kiln knows how to build (NVRTC 13.0 dropped everything before sm_75).
pub const CUBIN_ARCHS: [u32; 6] = [80, 86, 87, 89, 90, 100];

/// The architectures CI compiles every kernel for: datacenter Ampere, Jetson Orin and Hopper.
pub const CUBIN_ARCHS_CHECKED_IN_CI: [u32; 3] = [80, 87, 90];

#[derive(Debug, thiserror::Error)]
pub enum NvrtcError {
    #[error(
        "NVRTC (libnvrtc.so) was not found: install the CUDA toolkit, or `pip install nvidia-cuda-nvrtc==13.0.88` \
         and put its nvidia/cu13/lib directory on LD_LIBRARY_PATH"
    )]
    Missing,
    #[error("cuda:sm_{0} is not a target kiln builds; known: {known}", known = known_targets())]
    UnknownTarget(u32),
    #[error("NVRTC failed to compile module `{module}` for {target}: {log}")]
    Compile { module: String, target: String, log: String },
    #[error("NVRTC call failed ({what}): {code:?}")]
    Call { what: &'static str, code: sys::nvrtcResult },
}

fn known_targets() -> String {
    CUBIN_ARCHS.iter().map(|sm| format!("cuda:sm_{sm}")).collect::<Vec<_>>().join(", ")
}

/// Whether libnvrtc can be loaded (cudarc panics on first use when it cannot, so check first).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its known names.
    unsafe { sys::is_culib_present() }
}

/// What one compilation produces.
#[derive(Clone, Copy)]
enum Output {
    Ptx,
    Cubin,
}

/// Compiles `source` into PTX and a cubin for each of `sms`, in that order.
pub fn compile_module(source: &CudaSource, sms: &[u32]) -> Result<Vec<CompiledKernel>, NvrtcError> {
    if !nvrtc_available() {
        return Err(NvrtcError::Missing);
    }
    if let Some(&sm) = sms.iter().find(|sm| !CUBIN_ARCHS.contains(sm)) {
        return Err(NvrtcError::UnknownTarget(sm));
    }
    let targets: Vec<(KernelTarget, String, Output)> =
        std::iter::once((KernelTarget::Ptx, format!("compute_{PTX_ARCH}"), Output::Ptx))
            .chain(sms.iter().map(|&sm| (KernelTarget::Cubin { sm }, format!("sm_{sm}"), Output::Cubin)))
            .collect();
    // NVRTC programs are independent, and a whole module takes tens of seconds per target: each target
    // compiles on a thread of its own.
    let compiled: Vec<Result<Vec<u8>, NvrtcError>> = std::thread::scope(|scope| {
        let threads: Vec<_> =
            targets.iter().map(|(_, arch, output)| scope.spawn(move || compile(source, arch, *output))).collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    targets
        .into_iter()
        .zip(compiled)
        .map(|((target, _, _), bytes)| Ok(CompiledKernel { module: source.module.clone(), target, bytes: bytes? }))
        .collect()
}

fn compile(source: &CudaSource, arch: &str, output: Output) -> Result<Vec<u8>, NvrtcError> {
    let call = |what: &'static str| move |code: result::NvrtcError| NvrtcError::Call { what, code: code.0 };
    let code = CString::new(source.code.as_str()).map_err(|_| NvrtcError::Compile {
        module: source.module.clone(),
        target: arch.to_string(),
        log: "the source contains a NUL byte".to_string(),
    })?;
    let name = CString::new(format!("{}.cu", source.module)).expect("module names have no NUL");
    let prog = result::create_program(&code, Some(&name)).map_err(call("nvrtcCreateProgram"))?;
    let options = [format!("--gpu-architecture={arch}"), "--std=c++17".to_string(), "-default-device".to_string()];
    // SAFETY: `prog` was created above and is destroyed exactly once, below.
    let compiled = unsafe { result::compile_program(prog, &options) };
    let outcome = match compiled {
        Err(_) => {
            // SAFETY: `prog` is live; the log is NUL-terminated.
            let log = unsafe { result::get_program_log(prog) }
                .map(|raw| unsafe { CStr::from_ptr(raw.as_ptr()) }.to_string_lossy().into_owned())
                .unwrap_or_else(|e| format!("(no log: {e:?})"));
            Err(NvrtcError::Compile { module: source.module.clone(), target: arch.to_string(), log })
        }
        Ok(()) => match output {
            // SAFETY: `prog` compiled successfully.
            Output::Ptx => unsafe { result::get_ptx(prog) }
                .map(|chars| chars.into_iter().map(|c: c_char| c as u8).collect())
                .map_err(call("nvrtcGetPTX")),
            Output::Cubin => unsafe { cubin(prog) },
        },
    };
    // SAFETY: `prog` is live and not used after this.
    unsafe { result::destroy_program(prog) }.map_err(call("nvrtcDestroyProgram"))?;
    outcome
}

/// # Safety
/// `prog` must be a live program that compiled successfully for a real (`sm_XX`) architecture.
unsafe fn cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>, NvrtcError> {
    let mut size = 0usize;
    let r = unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) };
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(NvrtcError::Call { what: "nvrtcGetCUBINSize", code: r });
    }
    let mut bytes = vec![0u8; size];
    let r = unsafe { sys::nvrtcGetCUBIN(prog, bytes.as_mut_ptr().cast()) };
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(NvrtcError::Call { what: "nvrtcGetCUBIN", code: r });
    }
    Ok(bytes)
}
