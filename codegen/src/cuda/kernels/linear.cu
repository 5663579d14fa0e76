// linear and logits: out[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]), optionally soft-capped, for the
// small row counts of decoding and speculative verification (GEMV / small-M GEMM).
//
// One warp computes one output column `n` for every row. Lane l reads the 16-byte chunks l, l+32, l+64, ...
// of weight row n (so the warp streams the row with coalesced 16-byte loads, four chunks in flight per
// lane), multiplies each chunk into the partial sums of up to KILN_LINEAR_ROWS rows at once (one weight
// load serves every row), and the warp then adds the 32 partial sums with a fixed butterfly.
//
// Exactness: for a given row, the sequence of fused multiply-adds a lane performs, and the butterfly, depend
// only on K, not on how many rows the launch has or which group a row falls in. So a row computed among
// others (verifying a token tree) is bit-identical to the same row computed alone (a decode step).

#define KILN_LINEAR_ROWS 8
#define KILN_LINEAR_UNROLL 4

template <typename W, typename X>
__device__ __forceinline__ void linear_column(const X* __restrict__ x, const W* __restrict__ w,
                                              const float* __restrict__ bias, float* __restrict__ out, int M,
                                              int N, int K, float softcap, int n, int lane) {
    const int V = Pack<W>::N;
    const bool vectorized = (K % V) == 0;
    const W* wrow = w + (i64)n * K;
    for (int m0 = 0; m0 < M; m0 += KILN_LINEAR_ROWS) {
        const int rows = min(KILN_LINEAR_ROWS, M - m0);
        float acc[KILN_LINEAR_ROWS];
#pragma unroll
        for (int r = 0; r < KILN_LINEAR_ROWS; ++r) acc[r] = 0.0f;
        if (vectorized) {
            const uint4* wv = (const uint4*)wrow;
            const int chunks = K / V;
            for (int c0 = lane; c0 < chunks; c0 += 32 * KILN_LINEAR_UNROLL) {
                uint4 raw[KILN_LINEAR_UNROLL];
#pragma unroll
                for (int u = 0; u < KILN_LINEAR_UNROLL; ++u) {
                    const int c = c0 + 32 * u;
                    raw[u] = c < chunks ? __ldg(wv + c) : make_uint4(0, 0, 0, 0);
                }
#pragma unroll
                for (int u = 0; u < KILN_LINEAR_UNROLL; ++u) {
                    const int c = c0 + 32 * u;
                    if (c >= chunks) break;
                    float wf[Pack<W>::N];
                    Pack<W>::unpack(raw[u], wf);
#pragma unroll
                    for (int r = 0; r < KILN_LINEAR_ROWS; ++r) {
                        if (r < rows) {
                            const X* xr = x + (i64)(m0 + r) * K + (i64)c * V;
                            float s = acc[r];
#pragma unroll
                            for (int e = 0; e < Pack<W>::N; ++e) s = fmaf(wf[e], to_f32(xr[e]), s);
                            acc[r] = s;
                        }
                    }
                }
            }
        } else {
            for (int k = lane; k < K; k += 32) {
                const float wk = to_f32(wrow[k]);
#pragma unroll
                for (int r = 0; r < KILN_LINEAR_ROWS; ++r)
                    if (r < rows) acc[r] = fmaf(wk, to_f32(x[(i64)(m0 + r) * K + k]), acc[r]);
            }
        }
#pragma unroll
        for (int r = 0; r < KILN_LINEAR_ROWS; ++r) acc[r] = warp_sum(acc[r]);
        if (lane == 0) {
            for (int r = 0; r < rows; ++r) {
                float v = acc[r];
                if (bias) v += bias[n];
                if (softcap > 0.0f) v = softcap * tanhf(v / softcap);
                out[(i64)(m0 + r) * N + n] = v;
            }
        }
    }
}

// Grid: ceil(N / (blockDim.x / 32)) blocks; each warp one column.
template <typename W, typename X>
__device__ __forceinline__ void linear_kernel(const X* x, const W* w, const float* bias, float* out, int M, int N,
                                              int K, float softcap) {
    const int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (n >= N) return;
    linear_column<W, X>(x, w, bias, out, M, N, K, softcap, n, threadIdx.x & 31);
}

#define KILN_LINEAR(WN, WT, XN, XT)                                                                             \
    extern "C" __global__ void kiln_linear_w##WN##_x##XN(const XT* x, const WT* w, const float* bias, float* out, \
                                                          int M, int N, int K, float softcap) {                 \
        linear_kernel<WT, XT>(x, w, bias, out, M, N, K, softcap);                                               \
    }
#define KILN_LINEAR_FOR_X(XN, XT) KILN_LINEAR(f32, float, XN, XT) KILN_LINEAR(f16, f16_t, XN, XT) KILN_LINEAR(bf16, bf16_t, XN, XT)
KILN_FOR_FLOAT_TYPES(KILN_LINEAR_FOR_X)
