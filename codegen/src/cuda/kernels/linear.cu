// linear and logits: out[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]), optionally soft-capped, for the
// small row counts of decoding and speculative verification (GEMV / small-M GEMM).
//
// One launch may compute up to KILN_LINEAR_PARTS linears that read the same x (q, k and v; gate and up):
// their columns are numbered one after another, and a column's part says which weight, bias and output it
// uses. A decode step then streams all of them in one grid instead of three or two. A SwiGLU over gate and
// up can be folded behind them (LinearArgs.swiglu_out): then their columns alternate and the launch writes
// silu(gate) * up alone.
//
// One warp computes one output column `n` for every row. Lane l reads the 16-byte chunks l, l+32, l+64, ...
// of weight row n (so the warp streams the row with coalesced 16-byte loads, KILN_LINEAR_UNROLL chunks in
// flight per lane), multiplies each chunk into the partial sums of up to KILN_LINEAR_ROWS rows at once (one
// weight load serves every row; x is read with vector loads too), and the warp then adds the 32 partial sums
// with a fixed butterfly.
//
// Exactness: for a given row, the sequence of fused multiply-adds a lane performs, and the butterfly, depend
// only on K, not on how many rows the launch has, which group a row falls in, or which part a column is.
// So a row computed among others (verifying a token tree) is bit-identical to the same row computed alone
// (a decode step), fused or not.

#define KILN_LINEAR_ROWS 8
#define KILN_LINEAR_UNROLL 8
#define KILN_LINEAR_PARTS 3

struct LinearPart {
    const void* w;       // [n, K]
    const float* bias;   // [n] or null
    float* out;          // [M, n]
    int n;
};
struct LinearArgs {
    const void* x;  // [M, K]
    int M, N, K;    // N: the parts' columns together
    float softcap;  // 0: none
    int parts;
    int ksplit;     // warps per column (1..8), a function of K and the weight dtype
    LinearPart part[KILN_LINEAR_PARTS];
    int staged;     // 1: the block first copies x (M * K floats) to shared memory
    // An rms_norm fused in front (norm_w not null; with `staged`, or in the ring kernel, and KILN_NORM_THREADS
    // threads): the block stages x = rms_norm(norm_x (+ norm_residual)) instead of reading x, computed by
    // norm.cu's row function exactly as the norm kernel would; block 0 writes the residual sum to norm_sum (when
    // not null). The dynamic shared memory then holds K floats more, after x: the norm's weights
    // (stage_norm_weights; not in the ring kernel, whose threads keep their part in registers).
    const void* norm_x;
    const void* norm_residual;
    void* norm_sum;
    const float* norm_w;
    float norm_eps, norm_offset;
    // A SwiGLU folded behind (not null: parts 0 and 1 are gate and up of equal n): columns alternate gate n,
    // up n, so both land in one block, and the block writes swiglu_out[m, n] = silu(gate) * up instead of
    // either product, with the fused elementwise kernel's expression (see swiglu_value).
    float* swiglu_out;
};

// The columns per block of a launch with a folded SwiGLU are even (the runtime checks), so gate column n
// (even) and up column n (odd) are computed by neighbouring warps of one block, which meet in `pair`.
__device__ __forceinline__ float swiglu_value(float gate, float up) { return gate / (1.0f + expf(-gate)) * up; }

// A 16-byte chunk of weights, loaded with an evict-first L2 policy (sm_80+). A step reads each weight once,
// and the weights are most of the bytes that pass through the L2 (2.5 GB a token on the Llama-1B shape against
// 50 MB of L2), so under the default policy they push out everything else. Marked evict-first they leave in
// the L2 what the step reads again: the KV cache (read by every later step), the activations and the weights
// the attention prefetched for the linears after it. Llama-1B shape on an H100: +5.8% decode, 8B: +1.5%
// (bench/gpu-decode.md).
__device__ __forceinline__ uint4 load_weight_chunk(const uint4* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    u64 policy;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    uint4 v;
    asm("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p), "l"(policy));
    return v;
#else
    return __ldg(p);
#endif
}

// Loads V consecutive activations as floats with vector loads (the caller guarantees the alignment: rows
// start at multiples of V elements and buffers at 256 bytes).
template <typename X, int V> struct XLoad;
template <int V> struct XLoad<float, V> {
    static __device__ __forceinline__ void load(const float* p, float* f) {
#pragma unroll
        for (int i = 0; i < V / 4; ++i) {
            const float4 v = *(const float4*)(p + 4 * i);
            f[4 * i] = v.x; f[4 * i + 1] = v.y; f[4 * i + 2] = v.z; f[4 * i + 3] = v.w;
        }
    }
};
// Half-precision activations: 8 values are one 16-byte load, 4 values one 8-byte load.
template <typename H> struct HalfLoad {
    static __device__ __forceinline__ void load8(const H* p, float* f) { Pack<H>::unpack(*(const uint4*)p, f); }
    static __device__ __forceinline__ void load4(const H* p, float* f) {
        const uint2 v = *(const uint2*)p;
        float g[8];
        Pack<H>::unpack(make_uint4(v.x, v.y, 0, 0), g);
        f[0] = g[0]; f[1] = g[1]; f[2] = g[2]; f[3] = g[3];
    }
};
template <> struct XLoad<bf16_t, 8> {
    static __device__ __forceinline__ void load(const bf16_t* p, float* f) { HalfLoad<bf16_t>::load8(p, f); }
};
template <> struct XLoad<f16_t, 8> {
    static __device__ __forceinline__ void load(const f16_t* p, float* f) { HalfLoad<f16_t>::load8(p, f); }
};
template <> struct XLoad<bf16_t, 4> {
    static __device__ __forceinline__ void load(const bf16_t* p, float* f) { HalfLoad<bf16_t>::load4(p, f); }
};
template <> struct XLoad<f16_t, 4> {
    static __device__ __forceinline__ void load(const f16_t* p, float* f) { HalfLoad<f16_t>::load4(p, f); }
};

// XS: the type x is read as, X itself or float when the block staged it in shared memory. ROWS: the rows
// kept in registers at once (1 for the decode kernel, which then needs fewer registers and runs more warps);
// a row's arithmetic is the same for every ROWS.
//
// S warps (slices) share one column: the 32 * S lanes are one virtual warp, lane v of it reads chunks
// v, v + 32S, ...; each warp adds its lanes with the butterfly, and the column's first warp adds the S
// warp sums in slice order. S is a function of K alone (the runtime's `ksplit`), so every launch computes
// a column the same way. `valid` is false for a warp past the last column: it only keeps the barriers.
template <typename W, typename XS, int ROWS>
__device__ __forceinline__ void linear_column(const XS* __restrict__ x, const W* __restrict__ wrow,
                                              const float* __restrict__ bias, float* __restrict__ out, int M,
                                              int ldo, int K, float softcap, int n, int lane, int slice, int S,
                                              bool valid, float (*red)[KILN_LINEAR_ROWS], float* swiglu_out,
                                              float (*pair)[KILN_LINEAR_ROWS]) {
    const int V = Pack<W>::N;
    const bool vectorized = (K % V) == 0;
    const int vlane = slice * 32 + lane, vwidth = 32 * S;
    const int warp = threadIdx.x >> 5;
    for (int m0 = 0; m0 < M; m0 += ROWS) {
        const int rows = min(ROWS, M - m0);
        float acc[ROWS];
#pragma unroll
        for (int r = 0; r < ROWS; ++r) acc[r] = 0.0f;
        if (valid && vectorized) {
            const uint4* wv = (const uint4*)wrow;
            const int chunks = K / V;
            for (int c0 = vlane; c0 < chunks; c0 += vwidth * KILN_LINEAR_UNROLL) {
                uint4 raw[KILN_LINEAR_UNROLL];
#pragma unroll
                for (int u = 0; u < KILN_LINEAR_UNROLL; ++u) {
                    const int c = c0 + vwidth * u;
                    raw[u] = c < chunks ? load_weight_chunk(wv + c) : make_uint4(0, 0, 0, 0);
                }
#pragma unroll
                for (int u = 0; u < KILN_LINEAR_UNROLL; ++u) {
                    const int c = c0 + vwidth * u;
                    if (c >= chunks) break;
                    float wf[Pack<W>::N];
                    Pack<W>::unpack(raw[u], wf);
#pragma unroll
                    for (int r = 0; r < ROWS; ++r) {
                        if (r < rows) {
                            float xf[Pack<W>::N];
                            XLoad<XS, Pack<W>::N>::load(x + (i64)(m0 + r) * K + (i64)c * V, xf);
                            float s = acc[r];
#pragma unroll
                            for (int e = 0; e < Pack<W>::N; ++e) s = fmaf(wf[e], xf[e], s);
                            acc[r] = s;
                        }
                    }
                }
            }
        } else if (valid) {
            for (int k = vlane; k < K; k += vwidth) {
                const float wk = to_f32(wrow[k]);
#pragma unroll
                for (int r = 0; r < ROWS; ++r)
                    if (r < rows) acc[r] = fmaf(wk, to_f32(x[(i64)(m0 + r) * K + k]), acc[r]);
            }
        }
#pragma unroll
        for (int r = 0; r < ROWS; ++r)
            if (r < rows) acc[r] = warp_sum(acc[r]);
        if (S > 1) {
            if (lane == 0) {
#pragma unroll
                for (int r = 0; r < ROWS; ++r) red[warp][r] = acc[r];
            }
            __syncthreads();
            if (slice == 0) {
#pragma unroll
                for (int r = 0; r < ROWS; ++r) {
                    float v = red[warp][r];
                    for (int s = 1; s < S; ++s) v += red[warp + s][r];
                    acc[r] = v;
                }
            }
            __syncthreads();  // `red` is reused by the next row group or column
        }
        if (swiglu_out) {
            // Gate and up of column n meet in `pair` (softcap is 0 here: the runtime folds no logits).
            const int at = warp / S;
            if (valid && slice == 0 && lane == 0)
                for (int r = 0; r < rows; ++r) pair[at][r] = bias ? acc[r] + bias[n] : acc[r];
            __syncthreads();
            if (valid && slice == 0 && lane == 0 && (at & 1) == 0)
                for (int r = 0; r < rows; ++r) swiglu_out[(i64)(m0 + r) * ldo + n] = swiglu_value(pair[at][r], pair[at + 1][r]);
            __syncthreads();  // `pair` is reused by the next row group or column
        } else if (valid && slice == 0 && lane == 0) {
            for (int r = 0; r < rows; ++r) {
                float v = acc[r];
                if (bias) v += bias[n];
                if (softcap > 0.0f) v = softcap * tanhf(v / softcap);
                out[(i64)(m0 + r) * ldo + n] = v;
            }
        }
    }
}

// The part (weight, bias, output) a column of the launch belongs to, and its index `n` within the part.
__device__ __forceinline__ LinearPart column_part(const LinearArgs& a, int column, int& n) {
    // With a folded SwiGLU, launch column c is gate (c even) or up (c odd) column c / 2. Only the kernels that
    // write the product may be given one: the runtime never passes swiglu_out to kiln_gemv_* (see linear_kernel).
    n = a.swiglu_out ? (column & 1) * a.part[0].n + (column >> 1) : column;
    // Constant indices only: indexing the parameter array with a variable would copy it to local memory.
    LinearPart part = a.part[0];
#pragma unroll
    for (int p = 1; p < KILN_LINEAR_PARTS; ++p) {
        if (p < a.parts && n >= part.n) {
            n -= part.n;
            part = a.part[p];
        }
    }
    return part;
}

// Requests the weight chunks lane `vlane` of a column's S warps computes with (one round: the caller checked
// that a column is at most KILN_LINEAR_UNROLL chunks per lane); zeros past the row or for no column.
template <typename W>
__device__ __forceinline__ void gemv_issue(const LinearArgs& a, int column, int vlane, int vwidth, uint4* raw) {
    const int chunks = a.K / Pack<W>::N;
    const uint4* wv = nullptr;
    if (column < a.N) {
        int n;
        const LinearPart part = column_part(a, column, n);
        wv = (const uint4*)((const W*)part.w + (i64)n * a.K);
    }
#pragma unroll
    for (int u = 0; u < KILN_LINEAR_UNROLL; ++u) {
        const int c = vlane + vwidth * u;
        raw[u] = (wv && c < chunks) ? load_weight_chunk(wv + c) : make_uint4(0, 0, 0, 0);
    }
}

// Decode (one row) where a column is one round of loads per lane: each warp requests the next column's
// weights before it reduces the current one, so that its loads stay in flight across the reduction and the
// barriers instead of the warp idling between columns. The arithmetic is linear_column's for one row (the
// same fused multiply-adds in the same order, the same butterfly and slice sums), so a decode step still
// equals a verification row bit for bit.
template <typename W>
__device__ __forceinline__ void gemv_issue_first(const LinearArgs& a, uint4* raw) {
    const int S = a.ksplit, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int per_block = (blockDim.x >> 5) / S, slice = warp % S;
    gemv_issue<W>(a, blockIdx.x * per_block + warp / S, slice * 32 + lane, 32 * S, raw);
}

// `raw` holds the block's first round of weights (gemv_issue_first), requested before the kernel waited for
// its predecessor: weights are never written by a step, and their loads then overlap the previous kernel's
// tail and the staging of x.
template <typename W, typename XS>
__device__ __forceinline__ void gemv_pipelined(const LinearArgs& a, const XS* __restrict__ x,
                                               float (*red)[KILN_LINEAR_ROWS], float (*pair)[KILN_LINEAR_ROWS],
                                               uint4* raw) {
    const int V = Pack<W>::N;
    const int S = a.ksplit, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int per_block = (blockDim.x >> 5) / S, slice = warp % S;
    const int vlane = slice * 32 + lane, vwidth = 32 * S;
    const int chunks = a.K / V;
    for (int group = blockIdx.x; group * per_block < a.N; group += gridDim.x) {
        const int column = group * per_block + warp / S;
        uint4 next[KILN_LINEAR_UNROLL];
        gemv_issue<W>(a, (group + gridDim.x) * per_block + warp / S, vlane, vwidth, next);
        float acc = 0.0f;
#pragma unroll
        for (int u = 0; u < KILN_LINEAR_UNROLL; ++u) {
            const int c = vlane + vwidth * u;
            if (c >= chunks) break;
            float wf[Pack<W>::N], xf[Pack<W>::N];
            Pack<W>::unpack(raw[u], wf);
            XLoad<XS, Pack<W>::N>::load(x + (i64)c * V, xf);
#pragma unroll
            for (int e = 0; e < Pack<W>::N; ++e) acc = fmaf(wf[e], xf[e], acc);
        }
        acc = warp_sum(acc);
        if (S > 1) {
            if (lane == 0) red[warp][0] = acc;
            __syncthreads();
            if (slice == 0) {
                float v = red[warp][0];
                for (int s = 1; s < S; ++s) v += red[warp + s][0];
                acc = v;
            }
            __syncthreads();
        }
        if (a.swiglu_out) {
            const int at = warp / S;
            if (column < a.N && slice == 0 && lane == 0) {
                int n;
                const LinearPart part = column_part(a, column, n);
                pair[at][0] = part.bias ? acc + part.bias[n] : acc;
            }
            __syncthreads();
            if (column < a.N && slice == 0 && lane == 0 && (at & 1) == 0)
                a.swiglu_out[column >> 1] = swiglu_value(pair[at][0], pair[at + 1][0]);
            __syncthreads();
        } else if (column < a.N && slice == 0 && lane == 0) {
            int n;
            const LinearPart part = column_part(a, column, n);
            float v = acc;
            if (part.bias) v += part.bias[n];
            if (a.softcap > 0.0f) v = a.softcap * tanhf(v / a.softcap);
            part.out[n] = v;
        }
#pragma unroll
        for (int u = 0; u < KILN_LINEAR_UNROLL; ++u) raw[u] = next[u];
    }
}

// The ring GEMV (kiln_gemvr_*): a one-row linear whose weights wait in shared memory instead of registers. Each
// warp keeps a ring of KILN_GEMV_RING_STAGES stages, one column each: lane l copies its own chunks of the column
// (the chunks a lane of gemv_pipelined computes with) into its slots of the stage with cp.async, so a lane reads
// back only what it copied itself, after cp.async.wait_group, and no barrier or bulk copy is involved. The
// registers then hold the lane's part of x (loaded once, the same for every column) instead of two rounds of
// weights, and every stage of the ring is requested before the kernel's wait at no register cost. Alone, on
// the Llama-1B shapes of an H200, this streams the weights 3-4% faster than the pipelined kernel's pattern
// (bench/experiments/gemv-cp-async-ring.cu). In a decode step it gained 1.0-1.8% on the Llama-8B shape, whose
// rows are split over two or more warps, and was even on the 1B shape (bench/gpu-decode.md). The arithmetic is
// gemv_pipelined's (the same fused multiply-adds in the same order, the same butterfly and slice sums), so a
// decode step still equals a verification row bit for bit.
#define KILN_GEMV_RING_STAGES 2

// Copies a 16-byte chunk of weights to shared memory, evict-first in the L2 as load_weight_chunk.
__device__ __forceinline__ void copy_weight_chunk(uint4* to, const uint4* from) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    u64 policy;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;"
                 ::"r"((u32)__cvta_generic_to_shared(to)), "l"(from), "l"(policy) : "memory");
#else
    *to = *from;
#endif
}
__device__ __forceinline__ void ring_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
// Waits until the oldest stage not yet consumed has arrived (all but the newest STAGES - 1 groups).
__device__ __forceinline__ void ring_wait_oldest() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(KILN_GEMV_RING_STAGES - 1) : "memory");
#endif
}
__device__ __forceinline__ void ring_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}

// This lane's slot of stage `s` of its warp's ring (chunk u at slot[32 u]; a stage is KILN_LINEAR_UNROLL chunks of
// 16 bytes a lane). In the dynamic shared memory the ring follows the staged x (M K floats; none where the
// lanes read x from memory); K is a multiple of 4 (the runtime checks), so it starts 16-byte aligned.
__device__ __forceinline__ uint4* ring_slot(float* xs, const LinearArgs& a, int s) {
    uint4* ring = (uint4*)(xs + (a.staged || a.norm_w ? (i64)a.M * a.K : 0));
    return ring + ((threadIdx.x >> 5) * KILN_GEMV_RING_STAGES + s) * (KILN_LINEAR_UNROLL * 32) + (threadIdx.x & 31);
}

// Requests the lane's chunks of launch column `column` (none past the last column) into `slot`, as one group.
template <typename W>
__device__ __forceinline__ void ring_request(const LinearArgs& a, int column, int vlane, int vwidth, uint4* slot) {
    if (column < a.N) {
        int n;
        const LinearPart part = column_part(a, column, n);
        const uint4* wv = (const uint4*)((const W*)part.w + (i64)n * a.K);
        const int chunks = a.K / Pack<W>::N;
#pragma unroll
        for (int u = 0; u < KILN_LINEAR_UNROLL; ++u) {
            const int c = vlane + vwidth * u;
            if (c < chunks) copy_weight_chunk(slot + 32 * u, wv + c);
        }
    }
    ring_commit();  // an empty group past the end keeps ring_wait_oldest's count
}

// Every stage of the warp's ring: its first columns, in groups blockIdx.x + s gridDim.x.
template <typename W>
__device__ __forceinline__ void ring_request_first(const LinearArgs& a, float* xs) {
    const int S = a.ksplit, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int per_block = (blockDim.x >> 5) / S, slice = warp % S;
    for (int s = 0; s < KILN_GEMV_RING_STAGES; ++s)
        ring_request<W>(a, ((int)blockIdx.x + s * (int)gridDim.x) * per_block + warp / S, slice * 32 + lane, 32 * S,
                        ring_slot(xs, a, s));
}

// The ring's loop; stages 0..KILN_GEMV_RING_STAGES - 1 have been requested.
template <typename W, typename XS>
__device__ __forceinline__ void gemv_ring(const LinearArgs& a, const XS* __restrict__ x, float* xs,
                                          float (*red)[KILN_LINEAR_ROWS], float (*pair)[KILN_LINEAR_ROWS]) {
    const int V = Pack<W>::N;
    const int S = a.ksplit, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int per_block = (blockDim.x >> 5) / S, slice = warp % S;
    const int vlane = slice * 32 + lane, vwidth = 32 * S;
    const int chunks = a.K / V;
    // The lane's x: the same chunks for every column it computes.
    float xr[KILN_LINEAR_UNROLL][Pack<W>::N];
#pragma unroll
    for (int u = 0; u < KILN_LINEAR_UNROLL; ++u) {
        const int c = vlane + vwidth * u;
        if (c < chunks) XLoad<XS, Pack<W>::N>::load(x + (i64)c * V, xr[u]);
    }
    int s = 0;
    for (int group = blockIdx.x; group * per_block < a.N; group += gridDim.x) {
        const int column = group * per_block + warp / S;
        uint4* slot = ring_slot(xs, a, s);
        ring_wait_oldest();
        float acc = 0.0f;
#pragma unroll
        for (int u = 0; u < KILN_LINEAR_UNROLL; ++u) {
            const int c = vlane + vwidth * u;
            if (c >= chunks) break;
            float wf[Pack<W>::N];
            Pack<W>::unpack(slot[32 * u], wf);
#pragma unroll
            for (int e = 0; e < Pack<W>::N; ++e) acc = fmaf(wf[e], xr[u][e], acc);
        }
        // The stage is read (its values are in acc): refill it with the column KILN_GEMV_RING_STAGES groups on.
        const int later = (group + KILN_GEMV_RING_STAGES * (int)gridDim.x) * per_block + warp / S;
        ring_request<W>(a, later, vlane, vwidth, slot);
        s = s + 1 == KILN_GEMV_RING_STAGES ? 0 : s + 1;
        // From here on gemv_pipelined's column end, written out again: one function for both made the pipelined
        // kernel spill 8-16 bytes in three of its nine variants (sm_90, ptxas), a loop whose register allocation
        // has cost steps several percent before (bench/gpu-decode.md).
        acc = warp_sum(acc);
        if (S > 1) {
            if (lane == 0) red[warp][0] = acc;
            __syncthreads();
            if (slice == 0) {
                float v = red[warp][0];
                for (int t = 1; t < S; ++t) v += red[warp + t][0];
                acc = v;
            }
            __syncthreads();
        }
        if (a.swiglu_out) {
            const int at = warp / S;
            if (column < a.N && slice == 0 && lane == 0) {
                int n;
                const LinearPart part = column_part(a, column, n);
                pair[at][0] = part.bias ? acc + part.bias[n] : acc;
            }
            __syncthreads();
            if (column < a.N && slice == 0 && lane == 0 && (at & 1) == 0)
                a.swiglu_out[column >> 1] = swiglu_value(pair[at][0], pair[at + 1][0]);
            __syncthreads();
        } else if (column < a.N && slice == 0 && lane == 0) {
            int n;
            const LinearPart part = column_part(a, column, n);
            float v = acc;
            if (part.bias) v += part.bias[n];
            if (a.softcap > 0.0f) v = a.softcap * tanhf(v / a.softcap);
            part.out[n] = v;
        }
    }
    // No copy may land in shared memory after the block has left it.
    ring_wait_all();
}

// The fused norm's weights (K floats) are copied to shared memory as soon as the kernel has passed its wait,
// together with the loads of the norm's inputs: read where they are used, after the norm's reduction, they
// were one more trip to L2 on the path of every block (1B shape on an H200: 1076 -> 1084 tok/s together with
// the attention's merge launching the o projection early, attention.cu; bench/gpu-decode.md). Copied before
// the wait, the block passed its wait later and the kernel lost. The copy is asynchronous where it can be
// (sm_80+, 16-byte aligned, K a multiple of 4); each thread waits for its own part before the reduction's
// barrier (norm_weights_copied), after which every thread sees all of it.
__device__ __forceinline__ void stage_norm_weights(float* stage, const float* w, int K) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if (K % 4 == 0 && (((u64)w) & 15) == 0) {
        const u32 to = (u32)__cvta_generic_to_shared(stage);
#pragma unroll 1
        for (int c = threadIdx.x; c < K / 4; c += blockDim.x)
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(to + 16 * c), "l"(w + 4 * c) : "memory");
        asm volatile("cp.async.commit_group;" ::: "memory");
        return;
    }
#endif
    for (int i = threadIdx.x; i < K; i += blockDim.x) stage[i] = w[i];
}
// Waits for the thread's copies (none after the plain copy, and then this returns at once).
__device__ __forceinline__ void norm_weights_copied() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}

// Block: `per_block` columns of S warps each (blockDim.x == 32 * S * per_block); blocks stride over the
// column groups (the grid is sized to the GPU, not to N). With `staged`, the block first copies x to
// shared memory as floats: every warp then reads x from there, instead of each chunk waiting on its own
// trip to L2. MODE: the loop over the columns (KILN_GEMV_* below).
#define KILN_GEMV_PLAIN 0      // linear_column (kiln_linear_*, kiln_gemv_*)
#define KILN_GEMV_PIPELINED 1  // gemv_pipelined where a column is one round (kiln_gemvp_*)
#define KILN_GEMV_RING 2       // gemv_ring (kiln_gemvr_*; the runtime takes it only where a column is one round)
template <typename W, typename X, int ROWS, int MODE>
__device__ __forceinline__ void linear_kernel(const LinearArgs& a) {
    extern __shared__ float xs[];
    __shared__ float red[8][KILN_LINEAR_ROWS];
    __shared__ float pair[8][KILN_LINEAR_ROWS];
    const bool one_round = a.K % Pack<W>::N == 0 && a.K / Pack<W>::N <= 32 * a.ksplit * KILN_LINEAR_UNROLL;
    uint4 first[MODE == KILN_GEMV_PIPELINED ? KILN_LINEAR_UNROLL : 1];
    if constexpr (MODE == KILN_GEMV_PIPELINED) {
        if (one_round) gemv_issue_first<W>(a, first);
    }
    // The ring's every stage, before the wait: more of them requested there measured faster (bench/gpu-decode.md).
    if constexpr (MODE == KILN_GEMV_RING) ring_request_first<W>(a, xs);
    // The one-row kernel kiln_gemv_* never gets a fused norm (the runtime takes kiln_gemvp_* or kiln_gemvr_* for
    // those), and leaving the prologue out keeps it within its 64 registers.
    constexpr bool can_norm = ROWS != 1 || MODE != KILN_GEMV_PLAIN;
    KILN_PDL_ENTRY();
    if (can_norm && a.norm_w) {
        // The norm's weights: the other kernels copy them to shared memory (after x), asynchronously. The ring's
        // stages are copy groups of their own, which the wait for that copy would include: there each thread
        // reads its part of the weights into registers with its part of the row instead.
        float* const norm_w = xs + (i64)a.M * a.K;
        if constexpr (MODE != KILN_GEMV_RING) stage_norm_weights(norm_w, a.norm_w, a.K);
        __shared__ float scratch[32];
        for (int m = 0; m < a.M; ++m) {
            const i64 row = (i64)m * a.K;
            const X* residual = a.norm_residual ? (const X*)a.norm_residual + row : (const X*)0;
            X* sum = (a.norm_sum && blockIdx.x == 0) ? (X*)a.norm_sum + row : (X*)0;
            auto emit = [&](int i, float y) { xs[row + i] = to_f32(from_f32<X>(y)); };
            if constexpr (MODE == KILN_GEMV_RING)
                rms_norm_row_with<true, X>((const X*)a.norm_x + row, residual, sum, a.norm_w, a.K, a.norm_eps,
                                           a.norm_offset, scratch, emit, [] {});
            else
                rms_norm_row_with<false, X>((const X*)a.norm_x + row, residual, sum, norm_w, a.K, a.norm_eps,
                                            a.norm_offset, scratch, emit, [] { norm_weights_copied(); });
        }
        __syncthreads();
    } else if (a.staged) {
        const i64 total = (i64)a.M * a.K;
        const X* x = (const X*)a.x;
        if (sizeof(X) == 4 && total % 4 == 0 && (((u64)x) & 15) == 0) {
            // 16-byte loads, four in flight per thread: staging a long row is a few trips to L2, not dozens.
            const float4* x4 = (const float4*)x;
            float4* xs4 = (float4*)xs;
            const i64 vectors = total / 4;
            for (i64 i0 = threadIdx.x; i0 < vectors; i0 += 4 * (i64)blockDim.x) {
                float4 v[4];
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    const i64 i = i0 + u * (i64)blockDim.x;
                    if (i < vectors) v[u] = x4[i];
                }
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    const i64 i = i0 + u * (i64)blockDim.x;
                    if (i < vectors) xs4[i] = v[u];
                }
            }
        } else {
            for (i64 i = threadIdx.x; i < total; i += blockDim.x) xs[i] = to_f32(x[i]);
        }
        __syncthreads();
    }
    const int S = a.ksplit, warp = threadIdx.x >> 5;
    const int per_block = (blockDim.x >> 5) / S;
    const bool from_shared = a.staged || (can_norm && a.norm_w);
    // Nor a folded SwiGLU (the runtime takes kiln_gemvp_* for those too).
    float* const swiglu_out = can_norm ? a.swiglu_out : nullptr;
    if constexpr (MODE == KILN_GEMV_RING) {
        if (from_shared) gemv_ring<W, float>(a, xs, xs, red, pair);
        else gemv_ring<W, X>(a, (const X*)a.x, xs, red, pair);
        return;
    }
    if constexpr (MODE == KILN_GEMV_PIPELINED) {
        if (one_round) {
            if (from_shared) gemv_pipelined<W, float>(a, xs, red, pair, first);
            else gemv_pipelined<W, X>(a, (const X*)a.x, red, pair, first);
            return;
        }
    }
    for (int group = blockIdx.x; group * per_block < a.N; group += gridDim.x) {
        const int column = group * per_block + warp / S;
        const bool valid = column < a.N;
        int n;
        const LinearPart part = column_part(a, valid ? column : 0, n);
        const W* wrow = (const W*)part.w + (i64)n * a.K;
        if (from_shared)
            linear_column<W, float, ROWS>(xs, wrow, part.bias, part.out, a.M, part.n, a.K, a.softcap, n,
                                          threadIdx.x & 31, warp % S, S, valid, red, swiglu_out, pair);
        else
            linear_column<W, X, ROWS>((const X*)a.x, wrow, part.bias, part.out, a.M, part.n, a.K, a.softcap, n,
                                      threadIdx.x & 31, warp % S, S, valid, red, swiglu_out, pair);
    }
}

// kiln_linear_*: any M. kiln_gemv_*: M == 1 only (a decode step), one row in registers, with a quarter of
// kiln_linear's registers so that four blocks fit on a multiprocessor. kiln_gemvp_*: M == 1, the pipelined
// loop where a column is one round of loads (two rounds of weights in registers, two blocks per
// multiprocessor), whose first weights are requested before the wait for the previous kernel; the runtime
// takes it for decode linears under programmatic launch where the model does not take the ring kernel, and
// otherwise for long rows (split over four or more warps), where the warps' idle time between columns costs
// most. kiln_gemvr_*: M == 1 where a column is one round, the ring of shared-memory stages (gemv_ring), which
// the runtime takes for decode linears under programmatic launch where it suits the model (gemv_ring_suits in
// its executor). All four compute a column alike.
#define KILN_LINEAR(WN, WT, XN, XT)                                                                       \
    extern "C" __global__ void __launch_bounds__(256, 2) kiln_linear_w##WN##_x##XN(const LinearArgs a) { \
        linear_kernel<WT, XT, KILN_LINEAR_ROWS, KILN_GEMV_PLAIN>(a);                                      \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(256, 4) kiln_gemv_w##WN##_x##XN(const LinearArgs a) {   \
        linear_kernel<WT, XT, 1, KILN_GEMV_PLAIN>(a);                                                     \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(256, 2) kiln_gemvp_w##WN##_x##XN(const LinearArgs a) {  \
        linear_kernel<WT, XT, 1, KILN_GEMV_PIPELINED>(a);                                                 \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(256, 2) kiln_gemvr_w##WN##_x##XN(const LinearArgs a) {  \
        linear_kernel<WT, XT, 1, KILN_GEMV_RING>(a);                                                      \
    }
#define KILN_LINEAR_FOR_X(XN, XT) KILN_LINEAR(f32, float, XN, XT) KILN_LINEAR(f16, f16_t, XN, XT) KILN_LINEAR(bf16, bf16_t, XN, XT)
KILN_FOR_FLOAT_TYPES(KILN_LINEAR_FOR_X)
