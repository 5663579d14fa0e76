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
__device__ __forceinline__ float2 rope_cos_sin(i64 position, double inv_freq, double magnitude) {
    const double angle = (double)position * inv_freq;
    return make_float2((float)(cos(angle) * magnitude), (float)(sin(angle) * magnitude));
}

// Element x of a pair after the rotation, `partner` the pair's other element: a first element a becomes
// a cos - b sin, a second b becomes b cos + a sin. Products and the sum are rounded separately (no fused
// multiply-add), as the CPU reference computes them.
__device__ __forceinline__ float rope_rotate(float x, float partner, float c, float s, bool first) {
    return first ? __fsub_rn(__fmul_rn(x, c), __fmul_rn(partner, s)) : __fadd_rn(__fmul_rn(x, c), __fmul_rn(partner, s));
}

// Element d of one head row after the rotation, rounded to X like a stored rope output. `cos_sin(i)` gives
// the cos and sin of frequency i for the row's position: computed by the caller (rope_value) or read from a
// step's table (rope_table_element: the split attention kernel's folded append and the prefill's rope +
// append), which holds rope_cos_sin's values, so both give the same bits.
template <typename X, typename CosSin>
__device__ __forceinline__ X rope_head_element(const X* head, int d, int rdim, int interleaved, CosSin cos_sin) {
    if (d >= rdim) return head[d];
    int i;
    bool first;
    rope_pair_of(d, rdim, interleaved, i, first);
    const int partner = interleaved ? (d ^ 1) : (first ? d + rdim / 2 : d - rdim / 2);
    const float2 cs = cos_sin(i);
    return from_f32<X>(rope_rotate(to_f32(head[d]), to_f32(head[partner]), cs.x, cs.y, first));
}

// Element d of one head row of step row `row` after the rotation, with the cos and sin of a step's table
// (kiln_rope_table's [rows, rdim / 2] pairs), which hold rope_cos_sin's values: the same bits as rope_value.
template <typename X>
__device__ __forceinline__ X rope_table_element(const float* table, const X* head, int d, i64 row, int rdim,
                                                int interleaved) {
    const float2* cos_sin = (const float2*)table + row * (rdim / 2);
    return rope_head_element<X>(head, d, rdim, interleaved, [&](int f) { return cos_sin[f]; });
}

// Element idx of x[tokens, heads, D] after the rotation.
template <typename X>
__device__ __forceinline__ X rope_value(const X* x, i64 idx, const i64* positions, const double* inv_freq,
                                        double magnitude, int heads, int D, int rdim, int interleaved) {
    const int d = (int)(idx % D);
    const i64 position = positions[idx / ((i64)heads * D)];
    return rope_head_element<X>(x + (idx - d), d, rdim, interleaved,
                                [&](int i) { return rope_cos_sin(position, inv_freq[i], magnitude); });
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
// step for the split attention kernel's folded append (AttentionArgs.rope_table), instead of in f64 by every
// block of every layer.
extern "C" __global__ void kiln_rope_table(const i64* positions, const double* inv_freq, double magnitude, float* table,
                                           int rows, int half) {
    KILN_PDL_ENTRY();
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rows * half) return;
    ((float2*)table)[idx] = rope_cos_sin(positions[idx / half], inv_freq[idx % half], magnitude);
}
