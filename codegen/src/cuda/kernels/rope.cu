// rope: rotary position embeddings on x[tokens, heads, head_dim], in the `half` (rotate i with i + r/2)
// or `interleaved` (2i with 2i + 1) style, on the first `rotary_dim` elements of each head. The inverse
// frequencies (with their scaling already applied) come from the host in f64; the angle, its cosine and
// sine are computed in f64 and rounded to f32 as the CPU reference does. One thread per element.

// Element idx of x[tokens, heads, D] after the rotation (as X, rounded like a stored rope output).
template <typename X>
__device__ __forceinline__ X rope_value(const X* x, i64 idx, const i64* positions, const double* inv_freq,
                                        double magnitude, int heads, int D, int rdim, int interleaved) {
    const int d = (int)(idx % D);
    const i64 token = idx / ((i64)heads * D);
    const i64 head_base = idx - d;
    if (d >= rdim) return x[idx];
    const int half = rdim / 2;
    int i, ia, ib;
    bool first;
    if (interleaved) {
        i = d / 2; ia = 2 * i; ib = 2 * i + 1; first = (d % 2) == 0;
    } else {
        i = d % half; ia = i; ib = i + half; first = d < half;
    }
    const double angle = (double)positions[token] * inv_freq[i];
    const float c = (float)(cos(angle) * magnitude);
    const float s = (float)(sin(angle) * magnitude);
    const float a = to_f32(x[head_base + ia]);
    const float b = to_f32(x[head_base + ib]);
    return from_f32<X>(first ? a * c - b * s : b * c + a * s);
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
