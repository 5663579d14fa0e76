// rms_norm and layer_norm over the last H elements of each row, optionally fused with the residual add
// that precedes them in a pre-norm decoder (`sum = a + b` is written out for the residual stream, and the
// norm of `sum` computed from registers). One block per row; the block reductions have a fixed order, so a
// row's result does not depend on how many rows the launch has. Scales and biases are f32 (the runtime
// widens these small vectors when it uploads them).

// Values a thread keeps in registers between the two passes: 16 x KILN_NORM_THREADS covers rows of up to
// 4096 elements, so that a row's loads are all in flight at once (a fused norm's latency delays its linear).
#define KILN_NORM_KEEP 16
// A thread's kept elements come in runs of KILN_NORM_RUN neighbours: element KILN_NORM_RUN * (t + c *
// KILN_NORM_THREADS) + e for thread t, run c and e < KILN_NORM_RUN. A row whose runs are whole and aligned is then
// read with one vector load per run and array (16 bytes of f32), 12 loads a thread for a norm with a residual
// instead of 48; others read the same elements one by one, so the order of the sums, and the bits, depend on H
// alone. Llama-1B shape on an H200: +1.35% with the constant stride below (the stride alone +0.35%;
// bench/gpu-decode.md).
#define KILN_NORM_RUN 4

// KILN_NORM_RUN neighbouring values of a row as floats, with one load (p is aligned to the run).
template <typename X> __device__ __forceinline__ void load_run(const X* p, float* f) {
    static_assert(KILN_NORM_RUN == 4, "load_run reads four values");
    if constexpr (sizeof(X) == 4) {
        const float4 v = *(const float4*)p;
        f[0] = to_f32(v.x); f[1] = to_f32(v.y); f[2] = to_f32(v.z); f[3] = to_f32(v.w);
    } else {
        const uint2 v = *(const uint2*)p;
        const u32 words[2] = {v.x, v.y};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            X h;
            h.bits = (u16)(words[e >> 1] >> (16 * (e & 1)));
            f[e] = to_f32(h);
        }
    }
}

// Stores KILN_NORM_RUN values, each exactly representable in X, with one store (p is aligned to the run).
template <typename X> __device__ __forceinline__ void store_run(X* p, const float* f) {
    static_assert(KILN_NORM_RUN == 4, "store_run writes four values");
    if constexpr (sizeof(X) == 4) {
        *(float4*)p = make_float4(f[0], f[1], f[2], f[3]);
    } else {
        *(uint2*)p = make_uint2(pack_half2<X>(f[0], f[1]), pack_half2<X>(f[2], f[3]));
    }
}

// The rms_norm of one row, as every kernel that computes one does it (the norm kernels below, and the linear
// kernels' prologue when the norm is fused in front of them, linear.cu): the element order of each thread's
// sum of squares and the block reduction depend on blockDim.x, so callers run it with KILN_NORM_THREADS
// threads, and a row then gives the same bits whichever kernel normalises it. With a residual,
// `sum = a + b` is rounded to X first (the residual stream), written to `sum_out` when that is not null, and
// normalised; `emit(i, y)` receives the normalised value of element i in f32, before rounding to the output.
// `loads_issued()` runs in each thread after its own loads of the row (and its stores of the sum), before the
// block reduction's barriers (the pipelined linear kernels wait there for their copy of w to shared memory,
// see stage_norm_weights in linear.cu).
// W_WITH_ROW: w is read from memory together with the row, the kept part into registers, so that its round trip
// is the row's; otherwise w is read where it is used, after the reduction (a copy in shared memory that
// `loads_issued` waits for). The values, and so the bits, are the same. Under a decode step's load a round trip
// to the L2 takes a microsecond or more: with w read with the row, the ring GEMV's blocks on the Llama-1B shape
// (H200) finished gate/up 0.8 us sooner and the step ran 2.0% faster (bench/gpu-decode.md).
#define KILN_NORM_THREADS 256
template <bool W_WITH_ROW, typename X, typename Emit, typename LoadsIssued>
__device__ __forceinline__ void rms_norm_row_with(const X* x, const X* residual, X* sum_out, const float* w, int H,
                                                  float eps, float offset, float* scratch, Emit emit,
                                                  LoadsIssued loads_issued) {
    // The stride between a thread's elements is a constant: the addresses are then one base and immediate
    // offsets, and the tail's trip count needs no division. Instructions between the wait and the first load
    // delay a fused norm's linear (a block's eight warps share the multiprocessor with another block's).
    constexpr int step = KILN_NORM_THREADS;
    if (blockDim.x != KILN_NORM_THREADS) __trap();  // a caller's bug: elements would be skipped or doubled
    float kept[KILN_NORM_KEEP];
    float kept_w[W_WITH_ROW ? KILN_NORM_KEEP : 1];
    float ss = 0.0f;
    // Element i of the row: x + residual rounded to X (written out once), or x.
    auto value = [&](int i, bool write) {
        float v = to_f32(x[i]);
        if (residual) {
            const X rounded = from_f32<X>(v + to_f32(residual[i]));
            if (write && sum_out) sum_out[i] = rounded;
            v = to_f32(rounded);
        }
        return v;
    };
    // The first KILN_NORM_KEEP * KILN_NORM_THREADS elements stay in registers (constant indices); a longer row
    // computes the rest again. Every load of the kept part is issued before any store of the sum: the
    // compiler cannot tell that sum_out does not alias x, so a store in between would make each later load
    // wait for it, one round trip to L2 per element (the same values either way).
    float other[KILN_NORM_KEEP];
    constexpr int R = KILN_NORM_RUN, RUNS = KILN_NORM_KEEP / KILN_NORM_RUN;
    // Vector loads where every run is whole; otherwise the same elements one by one. Whole runs are aligned:
    // the runtime aligns every buffer and weight to 256 bytes (plan.rs, ALIGN) and rows are H elements apart.
    const bool whole = H % R == 0;
    // Element e of the thread's kept run c.
    auto at = [&](int c, int e) { return R * ((int)threadIdx.x + c * step) + e; };
#pragma unroll
    for (int c = 0; c < RUNS; ++c) {
        if (whole) {
#pragma unroll
            for (int e = 0; e < R; ++e) kept[R * c + e] = other[R * c + e] = 0.0f;
            if constexpr (W_WITH_ROW) {
#pragma unroll
                for (int e = 0; e < R; ++e) kept_w[R * c + e] = 0.0f;
            }
            if (at(c, 0) < H) {
                load_run(x + at(c, 0), kept + R * c);
                if (residual) load_run(residual + at(c, 0), other + R * c);
                if constexpr (W_WITH_ROW) load_run(w + at(c, 0), kept_w + R * c);
            }
        } else {
#pragma unroll
            for (int e = 0; e < R; ++e) {
                const int i = at(c, e);
                kept[R * c + e] = i < H ? to_f32(x[i]) : 0.0f;
                other[R * c + e] = (residual && i < H) ? to_f32(residual[i]) : 0.0f;
                if constexpr (W_WITH_ROW) kept_w[R * c + e] = i < H ? w[i] : 0.0f;
            }
        }
    }
#pragma unroll
    for (int c = 0; c < RUNS; ++c) {
        if (whole) {
            // A run past the row's end holds zeros, whose sum is zero and whose squares leave ss as it is: only
            // the store needs the bound, one for the run, and the sum is stored with one vector store. Branches
            // per element here had the ring GEMV's blocks run some 200 instructions more before their first
            // column; without them the Llama-1B shape on an H200 ran 1.3% faster (bench/gpu-decode.md).
            if (residual) {
#pragma unroll
                for (int e = 0; e < R; ++e) kept[R * c + e] = to_f32(from_f32<X>(kept[R * c + e] + other[R * c + e]));
                if (sum_out && at(c, 0) < H) store_run(sum_out + at(c, 0), kept + R * c);
            }
#pragma unroll
            for (int e = 0; e < R; ++e) ss = fmaf(kept[R * c + e], kept[R * c + e], ss);
        } else {
#pragma unroll
            for (int e = 0; e < R; ++e) {
                const int i = at(c, e);
                float& v = kept[R * c + e];
                if (residual && i < H) {
                    const X rounded = from_f32<X>(v + other[R * c + e]);
                    if (sum_out) sum_out[i] = rounded;
                    v = to_f32(rounded);
                }
                if (i < H) ss = fmaf(v, v, ss);
            }
        }
    }
#pragma unroll 4
    for (int i = threadIdx.x + KILN_NORM_KEEP * step; i < H; i += step) {
        const float v = value(i, true);
        ss = fmaf(v, v, ss);
    }
    loads_issued();
    const float mean_sq = block_sum<KILN_NORM_THREADS / 32>(ss, scratch) / (float)H;
    const float r = 1.0f / sqrtf(mean_sq + eps);
#pragma unroll
    for (int c = 0; c < RUNS; ++c) {
#pragma unroll
        for (int e = 0; e < R; ++e) {
            const int i = at(c, e);
            if (i < H) {
                float wi;
                if constexpr (W_WITH_ROW) wi = kept_w[R * c + e];
                else wi = w[i];
                emit(i, kept[R * c + e] * r * (wi + offset));
            }
        }
    }
#pragma unroll 4
    for (int i = threadIdx.x + KILN_NORM_KEEP * step; i < H; i += step) emit(i, value(i, false) * r * (w[i] + offset));
}

template <typename X, typename Y>
__device__ __forceinline__ void rms_norm_row(const X* x, const X* residual, X* sum_out, const float* w, Y* out,
                                             int H, float eps, float offset) {
    __shared__ float scratch[32];
    const i64 base = (i64)blockIdx.x * H;
    rms_norm_row_with<true, X>(x + base, residual ? residual + base : residual, sum_out ? sum_out + base : sum_out, w, H,
                         eps, offset, scratch, [&](int i, float y) { out[base + i] = from_f32<Y>(y); }, [] {});
}

template <typename X, typename Y>
__device__ __forceinline__ void layer_norm_row(const X* x, const X* residual, X* sum_out, const float* w,
                                               const float* b, Y* out, int H, float eps) {
    __shared__ float scratch[32];
    const i64 base = (i64)blockIdx.x * H;
    float s = 0.0f;
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        float v = to_f32(x[base + i]);
        if (residual) {
            v = v + to_f32(residual[base + i]);
            sum_out[base + i] = from_f32<X>(v);
            v = to_f32(sum_out[base + i]);
        }
        s += v;
    }
    const float mean = block_sum(s, scratch) / (float)H;
    float sq = 0.0f;
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        const float d = (residual ? to_f32(sum_out[base + i]) : to_f32(x[base + i])) - mean;
        sq = fmaf(d, d, sq);
    }
    const float var = block_sum(sq, scratch) / (float)H;
    const float r = 1.0f / sqrtf(var + eps);
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        const float v = residual ? to_f32(sum_out[base + i]) : to_f32(x[base + i]);
        float y = (v - mean) * r * w[i];
        if (b) y += b[i];
        out[base + i] = from_f32<Y>(y);
    }
}

#define KILN_NORMS(XN, XT)                                                                                     \
    extern "C" __global__ void kiln_rms_norm_x##XN(const XT* x, const float* w, XT* out, int H, float eps,      \
                                                   float offset) { KILN_PDL_ENTRY();                           \
        rms_norm_row<XT, XT>(x, (const XT*)0, (XT*)0, w, out, H, eps, offset);                                 \
    }                                                                                                          \
    extern "C" __global__ void kiln_add_rms_norm_x##XN(const XT* a, const XT* b, XT* sum, const float* w,       \
                                                       XT* out, int H, float eps, float offset) { KILN_PDL_ENTRY(); \
        rms_norm_row<XT, XT>(a, b, sum, w, out, H, eps, offset);                                               \
    }                                                                                                          \
    extern "C" __global__ void kiln_layer_norm_x##XN(const XT* x, const float* w, const float* b, XT* out,     \
                                                     int H, float eps) { KILN_PDL_ENTRY();                     \
        layer_norm_row<XT, XT>(x, (const XT*)0, (XT*)0, w, b, out, H, eps);                                    \
    }                                                                                                          \
    extern "C" __global__ void kiln_add_layer_norm_x##XN(const XT* a, const XT* bb, XT* sum, const float* w,    \
                                                         const float* b, XT* out, int H, float eps) { KILN_PDL_ENTRY(); \
        layer_norm_row<XT, XT>(a, bb, sum, w, b, out, H, eps);                                                 \
    }
KILN_FOR_FLOAT_TYPES(KILN_NORMS)

// softmax over the last axis (N elements per row), one block per row, max-subtracted, f32 arithmetic.
template <typename X>
__device__ __forceinline__ void softmax_row(const X* x, X* out, int N) {
    __shared__ float scratch[32];
    const i64 base = (i64)blockIdx.x * N;
    float m = -__int_as_float(0x7f800000);
    for (int i = threadIdx.x; i < N; i += blockDim.x) m = fmaxf(m, to_f32(x[base + i]));
    m = block_max(m, scratch);
    float s = 0.0f;
    for (int i = threadIdx.x; i < N; i += blockDim.x) s += expf(to_f32(x[base + i]) - m);
    s = block_sum(s, scratch);
    for (int i = threadIdx.x; i < N; i += blockDim.x) out[base + i] = from_f32<X>(expf(to_f32(x[base + i]) - m) / s);
}
#define KILN_SOFTMAX(XN, XT)                                                                     \
    extern "C" __global__ void kiln_softmax_x##XN(const XT* x, XT* out, int N) { KILN_PDL_ENTRY(); softmax_row<XT>(x, out, N); }
KILN_FOR_FLOAT_TYPES(KILN_SOFTMAX)
