// rope: rotary position embeddings on x[tokens, heads, head_dim], in the `half` (rotate i with i + r/2)
// or `interleaved` (2i with 2i + 1) style, on the first `rotary_dim` elements of each head. The inverse
// frequencies (with their scaling already applied) come from the host in f64; the angle, its cosine and
// sine are computed in f64 and rounded to f32 as the CPU reference does. One thread per element.

// Which pair element d of a head is (first: the `a` of (a, b) -> (a cos - b sin, b cos + a sin)) and the
// index i of its frequency, in either style.
__device__ __forceinline__ void rope_pair_of(int d, int rdim, int interleaved, int& i, bool& first) {
    const int half = rdim / 2;
    if (interleaved) {
        i = d / 2; first = (d % 2) == 0;
    } else {
        i = d % half; first = d < half;
    }
}

// cos and sin of a position's angle for frequency inv_freq: taken in f64 and rounded to f32 after the
// magnitude, as the CPU reference does.
__device__ __forceinline__ void rope_cos_sin(i64 position, double inv_freq, double magnitude, float& c, float& s) {
    const double angle = (double)position * inv_freq;
    c = (float)(cos(angle) * magnitude);
    s = (float)(sin(angle) * magnitude);
}

// One rotated element of the pair (a, b). Products and the difference are rounded separately (no fused
// multiply-add), as the CPU reference computes them, and alike wherever a kernel rotates (the rope kernel,
// the append launch, a linear's epilogue), so that every path stores the same bits.
__device__ __forceinline__ float rope_rotate(float a, float b, float c, float s, bool first) {
    return first ? __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)) : __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}

// Element idx of x[tokens, heads, D] after the rotation (as X, rounded like a stored rope output).
template <typename X>
__device__ __forceinline__ X rope_value(const X* x, i64 idx, const i64* positions, const double* inv_freq,
                                        double magnitude, int heads, int D, int rdim, int interleaved) {
    const int d = (int)(idx % D);
    const i64 token = idx / ((i64)heads * D);
    const i64 head_base = idx - d;
    if (d >= rdim) return x[idx];
    int i;
    bool first;
    rope_pair_of(d, rdim, interleaved, i, first);
    const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + rdim / 2;
    float c, s;
    rope_cos_sin(positions[token], inv_freq[i], magnitude, c, s);
    return from_f32<X>(rope_rotate(to_f32(x[head_base + ia]), to_f32(x[head_base + ib]), c, s, first));
}

#define KILN_ROPE(XN, XT)                                                                                   \
    extern "C" __global__ void kiln_rope_x##XN(const XT* x, const i64* positions, const double* inv_freq,     \
                                               double magnitude, XT* out, int tokens, int heads, int D,      \
                                               int rdim, int interleaved) { KILN_PDL_ENTRY();                \
        const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;                                         \
        if (idx >= (i64)tokens * heads * D) return;                                                         \
        out[idx] = rope_value<XT>(x, idx, positions, inv_freq, magnitude, heads, D, rdim, interleaved);    \
    }
KILN_FOR_FLOAT_TYPES(KILN_ROPE)

// The cos and sin of every (row, pair) of a step, [rows, rdim / 2] pairs of floats: rope_cos_sin taken once per
// step, for the linears that rotate q and k in their epilogue (LinearArgs.rope_table), instead of in f64 by
// every column of every layer. The values are rope_cos_sin's, so the rotations match the rope kernels' bits.
extern "C" __global__ void kiln_rope_table(const i64* positions, const double* inv_freq, double magnitude, float* table,
                                           int rows, int half) {
    KILN_PDL_ENTRY();
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rows * half) return;
    float c, s;
    rope_cos_sin(positions[idx / half], inv_freq[idx % half], magnitude, c, s);
    table[2 * idx] = c;
    table[2 * idx + 1] = s;
}
