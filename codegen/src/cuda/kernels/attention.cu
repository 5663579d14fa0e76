// attention over the device KV cache, for decode steps, speculative tree verification and prefill.
//
// The cache of a layer holds `cap` slots of [kv_heads, head_dim] keys and [kv_heads, v_dim] values in f32;
// slot t is the token at position t. A step first appends its new keys and values at slots past..past+S
// (kiln_kv_append), then one block per (query, head) attends over slots 0..past+S with the rules of the
// `attention` op: a past key t is visible when t <= p (or always without `causal`), new key j when
// tree_mask[i][j] (or j <= i when causal), and a window hides keys at distance >= window except the first
// `sinks` positions. A query that sees no key gets zeros.
//
// Exactness: a query's visible keys are the same whether it is decoded alone or verified in a tree (its
// descendants and siblings are masked). Masked keys get weight exactly 0, and 0 added to a partial sum, or
// 0 * v fused into one, leaves it unchanged; the reductions have a fixed shape (the block size, not the key
// count). So its output is bit-identical in both cases.

template <typename X>
__device__ __forceinline__ void kv_append(const X* k, const X* v, float* kcache, float* vcache, int past, int S,
                                          int kv_row, int v_row) {
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const i64 nk = (i64)S * kv_row, nv = (i64)S * v_row;
    if (idx < nk) kcache[(i64)past * kv_row + idx] = to_f32(k[idx]);
    if (idx < nv) vcache[(i64)past * v_row + idx] = to_f32(v[idx]);
}
#define KILN_KV_APPEND(XN, XT)                                                                          \
    extern "C" __global__ void kiln_kv_append_x##XN(const XT* k, const XT* v, float* kcache, float* vcache, \
                                                    int past, int S, int kv_row, int v_row) {             \
        kv_append<XT>(k, v, kcache, vcache, past, S, kv_row, v_row);                                     \
    }
KILN_FOR_FLOAT_TYPES(KILN_KV_APPEND)

struct AttentionArgs {
    const void* q;          // [S, heads, D]
    const float* kcache;    // [cap, kv_heads, D]
    const float* vcache;    // [cap, kv_heads, Dv]
    void* out;              // [S, heads, Dv]
    const i64* positions;   // [S]
    const u8* mask;         // [S, S] or null
    int S, heads, kv_heads, D, Dv, past;
    float scale, softcap;   // softcap 0: none
    int causal, window, sinks;  // window 0: none
};

#define KILN_ATTENTION_THREADS 128

template <typename X>
__device__ __forceinline__ void attention_query(const AttentionArgs& a) {
    extern __shared__ float smem[];
    __shared__ float scratch[32];
    const int i = blockIdx.x / a.heads, h = blockIdx.x % a.heads;
    const int kvh = h / (a.heads / a.kv_heads);
    const int total = a.past + a.S;
    float* qs = smem;             // D floats
    float* w = smem + a.D;        // total floats
    const X* q = (const X*)a.q + ((i64)i * a.heads + h) * a.D;
    for (int d = threadIdx.x; d < a.D; d += blockDim.x) qs[d] = to_f32(q[d]);
    __syncthreads();
    const i64 p = a.positions[i];
    float m = -__int_as_float(0x7f800000);
    for (int t = threadIdx.x; t < total; t += blockDim.x) {
        bool seen;
        i64 tp;
        if (t < a.past) {
            seen = !a.causal || (i64)t <= p;
            tp = t;
        } else {
            const int j = t - a.past;
            seen = a.mask ? a.mask[(i64)i * a.S + j] != 0 : (!a.causal || j <= i);
            tp = a.positions[j];
        }
        if (a.window > 0) {
            const i64 dist = tp > p ? tp - p : p - tp;
            seen = seen && (dist < a.window || tp < a.sinks);
        }
        float s = -__int_as_float(0x7f800000);
        if (seen) {
            const float* k = a.kcache + ((i64)t * a.kv_heads + kvh) * a.D;
            float dot = 0.0f;
            for (int d = 0; d < a.D; ++d) dot = fmaf(qs[d], k[d], dot);
            s = dot * a.scale;
            if (a.softcap > 0.0f) s = a.softcap * tanhf(s / a.softcap);
            m = fmaxf(m, s);
        }
        w[t] = s;
    }
    m = block_max(m, scratch);
    X* out = (X*)a.out + ((i64)i * a.heads + h) * a.Dv;
    if (m == -__int_as_float(0x7f800000)) {
        for (int d = threadIdx.x; d < a.Dv; d += blockDim.x) out[d] = from_f32<X>(0.0f);
        return;
    }
    float sum = 0.0f;
    for (int t = threadIdx.x; t < total; t += blockDim.x) {
        const float s = w[t];
        const float e = s == -__int_as_float(0x7f800000) ? 0.0f : expf(s - m);
        w[t] = e;
        sum += e;
    }
    sum = block_sum(sum, scratch);  // its barriers also publish every w[t]
    for (int d = threadIdx.x; d < a.Dv; d += blockDim.x) {
        float acc = 0.0f;
        const float* v = a.vcache + (i64)kvh * a.Dv + d;
        const i64 stride = (i64)a.kv_heads * a.Dv;
        for (int t = 0; t < total; ++t) acc = fmaf(w[t], v[t * stride], acc);
        out[d] = from_f32<X>(acc / sum);
    }
}
#define KILN_ATTENTION(XN, XT)                                                        \
    extern "C" __global__ void kiln_attention_x##XN(const AttentionArgs a) { attention_query<XT>(a); }
KILN_FOR_FLOAT_TYPES(KILN_ATTENTION)

// Keeps cache slots keep[0..n) as slots 0..n of every layer's keys and values (tree speculation keeps the
// accepted path). keep is increasing with keep[i] >= i, so copying slots in increasing order in place is
// safe; one block per (layer, keys|values) walks the slots in order. `stride` is the elements between two
// layers' caches, `row` the elements of one slot, `first` the first slot that can move.
extern "C" __global__ void kiln_kv_compact(float* cache, const int* keep, int first, int n, i64 stride, int row) {
    float* base = cache + (i64)blockIdx.x * stride;
    for (int s = first; s < n; ++s) {
        const int from = keep[s];
        if (from != s)
            for (int e = threadIdx.x; e < row; e += blockDim.x) base[(i64)s * row + e] = base[(i64)from * row + e];
        __syncthreads();
    }
}
