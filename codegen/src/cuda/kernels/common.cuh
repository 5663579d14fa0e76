// kiln CUDA kernels: shared definitions.
//
// The kernels are compiled by NVRTC without any CUDA header, so that compiling needs only libnvrtc (no
// toolkit include directory on the build machine): half-precision storage types are plain 16-bit structs
// converted with PTX `cvt` instructions (sm_80 and newer), and only NVRTC's built-in device functions are
// used. Activations may be f32, f16 or bf16 in memory; arithmetic is always f32 (f64 where the graph says).

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

struct bf16_t { u16 bits; };
struct f16_t { u16 bits; };

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(double x) { return (float)x; }
__device__ __forceinline__ float to_f32(bf16_t x) { return __uint_as_float(((u32)x.bits) << 16); }
__device__ __forceinline__ float to_f32(f16_t x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
}

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16_t from_f32<bf16_t>(float x) {
    bf16_t r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
    return r;
}
template <> __device__ __forceinline__ f16_t from_f32<f16_t>(float x) {
    f16_t r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
    return r;
}

// Loads and stores through untyped pointers (the fused elementwise kernels get `void*` operands).
template <typename T> __device__ __forceinline__ float ldf(const void* p, i64 i) { return to_f32(((const T*)p)[i]); }
template <typename T> __device__ __forceinline__ void stf(void* p, i64 i, float v) { ((T*)p)[i] = from_f32<T>(v); }
// Two values rounded to a 16-bit type H, packed into one word in memory order (a first, in the low half).
template <typename H> __device__ __forceinline__ u32 pack_half2(float a, float b) {
    return (u32)from_f32<H>(a).bits | ((u32)from_f32<H>(b).bits << 16);
}

// Unpacks 16 bytes of weights into floats: 4 f32 or 8 f16/bf16 values, in memory order.
template <typename W> struct Pack;
template <> struct Pack<float> {
    static const int N = 4;
    static __device__ __forceinline__ void unpack(uint4 v, float* f) {
        f[0] = __uint_as_float(v.x); f[1] = __uint_as_float(v.y);
        f[2] = __uint_as_float(v.z); f[3] = __uint_as_float(v.w);
    }
};
template <> struct Pack<bf16_t> {
    static const int N = 8;
    static __device__ __forceinline__ void unpack(uint4 v, float* f) {
        f[0] = __uint_as_float(v.x << 16); f[1] = __uint_as_float(v.x & 0xffff0000u);
        f[2] = __uint_as_float(v.y << 16); f[3] = __uint_as_float(v.y & 0xffff0000u);
        f[4] = __uint_as_float(v.z << 16); f[5] = __uint_as_float(v.z & 0xffff0000u);
        f[6] = __uint_as_float(v.w << 16); f[7] = __uint_as_float(v.w & 0xffff0000u);
    }
};
template <> struct Pack<f16_t> {
    static const int N = 8;
    static __device__ __forceinline__ void unpack(uint4 v, float* f) {
        u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            f16_t lo, hi;
            lo.bits = (u16)(w[i] & 0xffffu);
            hi.bits = (u16)(w[i] >> 16);
            f[2 * i] = to_f32(lo);
            f[2 * i + 1] = to_f32(hi);
        }
    }
};

// Sums a value over a warp with a fixed xor-butterfly: the order depends only on the lane, never on data
// or on how many rows a kernel handles, which the exactness of speculative verification relies on.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide sum/max in a fixed order (lanes, then warps in index order); every thread gets the result.
// `scratch` holds at least 32 floats; blockDim.x is a multiple of 32. WARPS: blockDim.x / 32 where the caller
// knows it at compile time (the same order and bits, without the loop over a runtime count: the fused norm's
// prologue runs it on the path to its linear's first column), 0 to read it from blockDim.x.
template <int WARPS = 0> __device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = WARPS > 0 ? WARPS : (int)(blockDim.x >> 5);
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < warps; ++w) total += scratch[w];
    return total;
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = -__int_as_float(0x7f800000);
    for (int w = 0; w < warps; ++w) m = fmaxf(m, scratch[w]);
    return m;
}

// Programmatic dependent launch (sm_90 and newer): the runtime launches each kernel of a step so that it may
// start while the previous one finishes. Every kernel therefore first waits for the previous kernel to
// complete (and its writes to be visible) before it reads or writes anything a kernel writes, and then lets
// the next kernel start early (its blocks take the multiprocessors this one frees, and wait there in turn).
// So before its wait a kernel may read what kernels two or more launches back wrote (they completed before
// the previous kernel's wait returned), except after a kernel that launches the next one first
// (KILN_PDL_ENTRY_LAUNCH_FIRST, the attention's merge): the kernel after that reads only weights and its
// arguments before its wait. Without PDL, or below sm_90, both are no-ops (the runtime launches PDL only for
// sm_90+ images).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define KILN_WAIT_PREVIOUS() asm volatile("griddepcontrol.wait;" ::: "memory")
#define KILN_LAUNCH_NEXT() asm volatile("griddepcontrol.launch_dependents;" ::: "memory")
#else
#define KILN_WAIT_PREVIOUS() ((void)0)
#define KILN_LAUNCH_NEXT() ((void)0)
#endif
// KILN_PDL_ENTRY_LAUNCH_FIRST lets the next kernel launch before this one waits: that kernel's blocks then
// become resident (and request their weights before their own wait) while this one's predecessor still runs.
// The next kernel's wait still waits for this kernel to complete, which comes after this kernel's wait, so the
// order of the writes is the same (see above for what the next kernel may read before its wait). Only for a
// kernel whose blocks are few and short (the attention's merge, which lets the o projection's blocks in beside
// the split kernel); elsewhere the next kernel's blocks take room the running kernel's blocks still need.
#ifdef KILN_TRACE
// The launch trace, a diagnostic build only (`KILN_CUDA_TRACE=1` defines KILN_TRACE when the module is
// compiled, and the runtime then points kiln_trace_records at a buffer): thread 0 of every block records when
// it entered, when its wait for the previous kernel returned, and when it exited (thread 0's exit: other warps
// may still be storing), in %globaltimer nanoseconds, with its grid's id and the name of the function the
// macro is in (the kernel, or the device function that is its body). The runtime groups the records by grid, which shows
// where a step's time goes inside a CUDA graph, where per-launch events cannot be placed. The record is claimed
// at entry with an atomic whose result is first used at the exit, and nothing read from memory decides
// whether to claim it, so that no round trip stands between a block's entry and its wait (a block dispatched
// after the previous kernel finished would otherwise pass its wait, and start its work, two trips late: the
// pointer's load and the atomic). Without a record buffer (a traced module run without KILN_CUDA_TRACE=1) the
// capacity is 0 and nothing is written.
struct KilnTraceRecord {
    u64 grid, entered, waited, exited;
    const char* name;
    u32 block, sm;
};
__device__ KilnTraceRecord* kiln_trace_records;
__device__ u32 kiln_trace_capacity;
__device__ u32 kiln_trace_count;
__device__ __forceinline__ u64 kiln_trace_now() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
__device__ __forceinline__ bool kiln_trace_thread() { return threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0; }
struct KilnTraceScope {
    u64 entered, waited;
    // Thread 0 only: the claimed record, and the buffer and its capacity (loaded at entry, used at the exit,
    // so that neither load's round trip delays the exit either).
    u32 index, capacity;
    KilnTraceRecord* records;
    const char* name;
    __device__ explicit KilnTraceScope(const char* kernel)
        : entered(0), waited(0), index(0), capacity(0), records(nullptr), name(kernel) {
        if (kiln_trace_thread()) {
            entered = kiln_trace_now();
            records = kiln_trace_records;
            capacity = kiln_trace_capacity;
            index = atomicAdd(&kiln_trace_count, 1u);
        }
    }
    __device__ void mark_waited() {
        if (kiln_trace_thread()) waited = kiln_trace_now();
    }
    __device__ ~KilnTraceScope() {
        if (!kiln_trace_thread()) return;
        const u64 exited = kiln_trace_now();
        if (index >= capacity) return;
        KilnTraceRecord* slot = records + index;
        u64 grid;
        u32 sm;
        asm volatile("mov.u64 %0, %%gridid;" : "=l"(grid));
        asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
        slot->exited = exited;
        slot->grid = grid;
        slot->entered = entered;
        slot->waited = waited;
        slot->name = name;
        slot->block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
        slot->sm = sm;
    }
};
// Not wrapped in a block: the scope object lives until the function it is in returns. So, in every build, the
// macro is used once per kernel, at the top level of the kernel's body or of the device function that is the
// rest of it (never under an `if` or in a loop).
#define KILN_PDL_ENTRY()                                  \
    KilnTraceScope kiln_trace_scope_(__PRETTY_FUNCTION__); \
    KILN_WAIT_PREVIOUS();                                 \
    kiln_trace_scope_.mark_waited();                      \
    KILN_LAUNCH_NEXT()
#define KILN_PDL_ENTRY_LAUNCH_FIRST()                     \
    KilnTraceScope kiln_trace_scope_(__PRETTY_FUNCTION__); \
    KILN_LAUNCH_NEXT();                                   \
    KILN_WAIT_PREVIOUS();                                 \
    kiln_trace_scope_.mark_waited()
#else
#define KILN_PDL_ENTRY()     \
    do {                     \
        KILN_WAIT_PREVIOUS(); \
        KILN_LAUNCH_NEXT();   \
    } while (0)
#define KILN_PDL_ENTRY_LAUNCH_FIRST() \
    do {                              \
        KILN_LAUNCH_NEXT();           \
        KILN_WAIT_PREVIOUS();         \
    } while (0)
#endif

// Device-side errors (an id outside the embedding table, ...) are recorded here and checked by the host
// after the step, since a kernel cannot return an error.
// The kernels' calling conventions and names, version 17 (kiln_ir::artifact::CUDA_KERNEL_ABI_MARKER, which says
// what changed; the runtime refuses modules without this marker).
extern "C" __global__ void kiln_kernel_abi_v17() {}

#define KILN_ERROR_EMBEDDING_ID 1
#define KILN_ERROR_LOGITS 2
__device__ __forceinline__ void report_error(int* flag, int code) { atomicCAS(flag, 0, code); }

// Instantiates `extern "C"` entry points with deterministic names for a kernel template over one dtype.
#define KILN_FOR_FLOAT_TYPES(M) M(f32, float) M(f16, f16_t) M(bf16, bf16_t)
