// attention over the device KV cache, for decode steps, speculative tree verification and prefill.
//
// The cache of a layer holds `cap` slots of [kv_heads, head_dim] keys and [kv_heads, v_dim] values in f32;
// slot t is the token at position t. A step first appends its new keys and values at slots past..past+S
// (kiln_kv_append, or kiln_rope_kv_append with the rope of q and k; the split kernel does it itself for short
// steps, see AttentionArgs.k_in), then attends over slots 0..past+S with the rules of the `attention` op: a past key t is
// visible when t <= p (or always without `causal`), new key j when tree_mask[i][j] (or j <= i when causal),
// and a window hides keys at distance >= window except the first `sinks` positions. A query that sees no
// key gets zeros. `past` is read from the device (step[0]), so that one captured CUDA graph serves every
// decode step.
//
// Split-KV ("flash decoding"): the keys are cut into splits of `chunk` slots. kiln_attention_x* blocks (eight
// or four warps, KILN_ATTENTION_WARPS) stride over the splits of one (query, head) each and write each split's
// running max, sum of weights and weighted values; kiln_attention_combine_x* merges the splits of each
// (query, head). A decode step thus spreads a long context over the whole GPU instead of one block per head.
// With weights to prefetch, the grid has more rows of blocks that only ask the L2 for them.
//
// Exactness: a query's visible keys are the same whether it is decoded alone or verified in a tree. Keys
// are assigned to splits, warps and groups by their slot alone (never by the step's length), an
// invisible key contributes a weight of exactly 0 (fma(0, v, acc) == acc; a max with -inf is a no-op) and
// splits with no visible key are skipped by the merge; every reduction has a fixed order. So the output is
// bit-identical in both cases, as long as `chunk` is the same (the runtime uses one chunk for every step
// of up to CUDA_EXACT_STEP_ROWS tokens).

template <typename X>
__device__ __forceinline__ void kv_append(const X* k, const X* v, float* kcache, float* vcache, const int* step,
                                          int S, int kv_row, int v_row) {
    const int past = step[0];
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const i64 nk = (i64)S * kv_row, nv = (i64)S * v_row;
    if (idx < nk) kcache[(i64)past * kv_row + idx] = to_f32(k[idx]);
    if (idx < nv) vcache[(i64)past * v_row + idx] = to_f32(v[idx]);
}
#define KILN_KV_APPEND(XN, XT)                                                                          \
    extern "C" __global__ void kiln_kv_append_x##XN(const XT* k, const XT* v, float* kcache, float* vcache, \
                                                    const int* step, int S, int kv_row, int v_row) { KILN_PDL_ENTRY(); \
        kv_append<XT>(k, v, kcache, vcache, step, S, kv_row, v_row);                                     \
    }
KILN_FOR_FLOAT_TYPES(KILN_KV_APPEND)

// Rope of q and k fused with the append (one launch instead of three, where both ropes feed only the
// attention): q_out gets the rotated queries, the cache the rotated keys and the values. The cos and sin come
// from the step's table (kiln_rope_table: rope_cos_sin's values, taken once per step) rather than from f64
// trigonometry per element, which made this launch compute-bound in a prefill (30 us a layer for 512 tokens of
// the 8B shape on an H100). Each rotated element is rope_head_element's with those values, rounded to X as the
// separate rope kernel stores it, so the cache holds exactly what rope + kv_append would have put there.
struct RopeAppendArgs {
    const void* q;          // [S, heads, D], before the rotation
    const void* k;          // [S, kv_heads, D], before the rotation
    const void* v;          // [S, kv_heads, Dv]
    void* q_out;            // [S, heads, D]
    float* kcache;
    float* vcache;
    const int* step;        // step[0]: past
    const float* rope_table;  // [S, rdim / 2] (cos, sin): kiln_rope_table's
    int S, heads, kv_heads, D, Dv, rdim, interleaved;
};
// Element idx of x[S, heads, D] rotated with its row's table entries.
template <typename X>
__device__ __forceinline__ X rope_table_value(const RopeAppendArgs& a, const X* x, i64 idx, int heads) {
    const int d = (int)(idx % a.D);
    return rope_table_element<X>(a.rope_table, x + (idx - d), d, idx / ((i64)heads * a.D), a.rdim, a.interleaved);
}
template <typename X>
__device__ __forceinline__ void rope_kv_append(const RopeAppendArgs& a) {
    const int past = a.step[0];
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const i64 kv_row = (i64)a.kv_heads * a.D, v_row = (i64)a.kv_heads * a.Dv;
    if (idx < (i64)a.S * a.heads * a.D)
        ((X*)a.q_out)[idx] = rope_table_value<X>(a, (const X*)a.q, idx, a.heads);
    if (idx < (i64)a.S * kv_row)
        a.kcache[(i64)past * kv_row + idx] = to_f32(rope_table_value<X>(a, (const X*)a.k, idx, a.kv_heads));
    if (idx < (i64)a.S * v_row) a.vcache[(i64)past * v_row + idx] = to_f32(((const X*)a.v)[idx]);
}
#define KILN_ROPE_KV_APPEND(XN, XT)                                                                     \
    extern "C" __global__ void kiln_rope_kv_append_x##XN(const RopeAppendArgs a) { KILN_PDL_ENTRY(); rope_kv_append<XT>(a); }
KILN_FOR_FLOAT_TYPES(KILN_ROPE_KV_APPEND)

struct AttentionArgs {
    const void* q;          // [S, heads, D]
    float* kcache;          // [cap, kv_heads, D] (written by the split kernel with a folded append only)
    float* vcache;          // [cap, kv_heads, Dv]
    void* out;              // [S, heads, Dv]
    float* partial;         // [S, heads, max_splits, Dv + 2]: max, sum, weighted values
    const i64* positions;   // [S]
    const u8* mask;         // [S, S] or null
    const int* step;        // step[0]: past (cached tokens before this step)
    int S, heads, kv_heads, D, Dv;
    float scale, softcap;   // softcap 0: none
    int causal, window, sinks;  // window 0: none
    int chunk, max_splits;  // keys per split (a multiple of 64); partial's split capacity
    // The append folded in (split kernel only; k_in not null): the queries come from q_in and the step's own
    // keys and values from k_in and v_in, q and k rotated first where rope_dim > 0 (see folded_element), and
    // the blocks store the new keys and values in the cache themselves, so that no append launch runs before
    // the attention (the runtime folds only short steps: each such block stores all S of them).
    const void* q_in;         // [S, heads, D]
    const void* k_in;         // [S, kv_heads, D]
    const void* v_in;         // [S, kv_heads, Dv]
    const float* rope_table;  // [S, rope_dim / 2] (cos, sin): kiln_rope_table's
    int rope_dim, rope_interleaved;
    // Weights of the linears after this attention (16-byte aligned ranges, bytes a multiple of 16; 0 bytes:
    // none), which the split kernel's prefetch rows of blocks ask the L2 to fetch (prefetch_block): a decode
    // step's attention is a chain of latencies that leaves the memory bandwidth idle, and the linears after
    // it then read those weights from L2.
    const char* prefetch[3];
    u64 prefetch_bytes[3];
    int prefetch_rows;  // the grid's last rows (blockIdx.y) that prefetch; 0 without prefetch ranges
};

#define KILN_PREFETCH_PIECE 8192
// Rows of split blocks (blockIdx.y); with prefetch ranges, the last `prefetch_rows` rows only prefetch, so that
// the split blocks' own loads are not queued behind the requests.
__device__ __forceinline__ int split_rows(const AttentionArgs& a) { return (int)gridDim.y - a.prefetch_rows; }

// A block of the prefetch rows asks the L2 for its share of the ranges (pieces of KILN_PREFETCH_PIECE bytes
// dealt out block-first, so that the tensor memory accelerators of many multiprocessors issue them) and
// returns true. A hint: nothing waits for it. Below sm_90 there is no bulk prefetch (and the runtime adds no
// prefetch rows).
__device__ __forceinline__ bool prefetch_block(const AttentionArgs& a) {
    if ((int)blockIdx.y < split_rows(a)) return false;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const u64 blocks = (u64)a.prefetch_rows * gridDim.x, block = (u64)(blockIdx.y - split_rows(a)) * gridDim.x + blockIdx.x;
    const u64 piece0 = (u64)threadIdx.x * blocks + block, stride = blocks * blockDim.x;
#pragma unroll
    for (int r = 0; r < 3; ++r) {
        const u64 bytes = a.prefetch_bytes[r];
        for (u64 k = piece0; k * KILN_PREFETCH_PIECE < bytes; k += stride) {
            const u64 offset = k * KILN_PREFETCH_PIECE;
            const u32 size = (u32)min((u64)KILN_PREFETCH_PIECE, bytes - offset);
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a.prefetch[r] + offset), "r"(size) : "memory");
        }
    }
#endif
    return true;
}

// Element d of a head row (of q_in or k_in, row i of the step) as a folded append hands it to the attention:
// rotated with the step table's cos and sin and rounded to X, which is what rope_kv_append stores and the
// split kernel then reads.
template <typename X>
__device__ __forceinline__ float folded_element(const AttentionArgs& a, const X* row, int d, int i) {
    return to_f32(rope_table_element<X>(a.rope_table, row, d, i, a.rope_dim, a.rope_interleaved));
}

// Keys a warp scores at once (their loads in flight together): at most 8, which the registers of a 128-wide
// head allow (16 needed 213 registers), and at most the warp's keys of a 64-slot block.
#define KILN_ATTENTION_GROUP 8
// Warps of a split block. Heads of up to 128 elements take eight, so that a warp's eight keys of a 64-slot
// block are one group, requested before the kernel's wait. The scoring of a group is a chain of latencies
// (shuffles, the online softmax) that one warp runs alone, so a split's keys over more warps finish sooner:
// 64-wide heads with eight warps of 8 keys instead of four of 16 were 3.3% faster on the Llama-1B shape
// (H200, bench/gpu-decode.md); sixteen warps of 4 keys were 1.6% slower than four. 256-wide heads take four
// (16 keys a warp, two groups), which their registers leave room for. The runtime launches a class's blocks
// with as many threads (attention_split_threads in its plan, which a test compares with these numbers).
#define KILN_ATTENTION_WARPS_D64 8
#define KILN_ATTENTION_WARPS_D128 8
#define KILN_ATTENTION_WARPS_D256 4
#define KILN_ATTENTION_WARPS(DR) \
    ((DR) <= 2 ? KILN_ATTENTION_WARPS_D64 : (DR) <= 4 ? KILN_ATTENTION_WARPS_D128 : KILN_ATTENTION_WARPS_D256)

__device__ __forceinline__ bool key_visible(const AttentionArgs& a, int past, int i, i64 p, int t) {
    bool seen;
    i64 tp;
    if (t < past) {
        seen = !a.causal || (i64)t <= p;
        tp = t;
    } else {
        const int j = t - past;
        seen = a.mask ? a.mask[(i64)i * a.S + j] != 0 : (!a.causal || j <= i);
        tp = a.positions[j];
    }
    if (a.window > 0) {
        const i64 dist = tp > p ? tp - p : p - tp;
        seen = seen && (dist < a.window || tp < a.sinks);
    }
    return seen;
}

// The longest step whose keys and values a folding split block also keeps in shared memory
// (ATTENTION_FOLD_ROWS in the runtime's plan: it folds no longer step).
#define KILN_ATTENTION_FOLD_ROWS 4

// The step's own keys and values as a folding block stored them in the cache, kept in shared memory too, so
// that scoring them needs no trip to the L2 for what the block itself has just written (that re-read was the
// last memory round trip on the critical path of a decode step's attention). Null pointers: read the cache.
template <int DR> struct OwnSlots {
    const float (*k)[32 * DR];  // [KILN_ATTENTION_FOLD_ROWS][32 DR]: key d of the step's row j at [j][d]
    const float (*v)[32 * DR];
    int past;                   // slot of the step's row 0
};

// Keys (and values) of slots t0 .. t0 + G - 1 below `hi` for lane `lane`, where the slot is at least `from`:
// the whole group is requested before any of it is used, so that the group costs one memory round trip.
// Slots of the step itself come from `own` when it holds them.
template <int G, int DR>
__device__ __forceinline__ void load_key_group(const AttentionArgs& a, const float* kbase, const float* vbase,
                                               i64 kstride, i64 vstride, int t0, int from, int hi, int lane,
                                               const OwnSlots<DR>& own, float (&kv)[G][DR], float (&vv)[G][DR]) {
    const int nd = (a.D + 31) / 32, nv = (a.Dv + 31) / 32;
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const int t = t0 + g;
        if (t < from) continue;
        if (own.k && t >= own.past) {
            const int j = min(t - own.past, KILN_ATTENTION_FOLD_ROWS - 1);
#pragma unroll
            for (int r = 0; r < DR; ++r) {
                const int d = lane + 32 * r;
                kv[g][r] = (t < hi && r < nd && d < a.D) ? own.k[j][d] : 0.0f;
                vv[g][r] = (t < hi && r < nv && d < a.Dv) ? own.v[j][d] : 0.0f;
            }
            continue;
        }
        const float* k = kbase + (i64)t * kstride;
        const float* v = vbase + (i64)t * vstride;
#pragma unroll
        for (int r = 0; r < DR; ++r) {
            const int d = lane + 32 * r;
            kv[g][r] = (t < hi && r < nd && d < a.D) ? k[d] : 0.0f;
            vv[g][r] = (t < hi && r < nv && d < a.Dv) ? v[d] : 0.0f;
        }
    }
}

// The scores of a group of G keys (G a power of two up to 32): each lane's partial dot products, summed over
// the warp in warp_sum's order (lane steps 16, 8, 4, 2, 1, own value first), so each score is bit for bit
// the one warp_sum would give. The first log2(G) steps are transposed: at step o a lane keeps the half of its
// keys its lane bit o selects and hands the other half to lane ^ o, so the group costs G - 1 + 5 - log2(G)
// shuffles (16 for G = 16, 9 for G = 8) instead of 5 G. Lanes G_LANES k .. G_LANES (k + 1) - 1
// (G_LANES = 32 / G) end with key k's score.
template <int G, int DR>
__device__ __forceinline__ float group_scores(const float (&q)[DR], const float (&kv)[G][DR], int lane) {
    float v[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        float dot = 0.0f;
#pragma unroll
        for (int r = 0; r < DR; ++r) dot = fmaf(q[r], kv[g][r], dot);
        v[g] = dot;
    }
#pragma unroll
    for (int step = 0; (1 << step) < G; ++step) {
        const int half = (G >> step) / 2, o = 16 >> step;
        const bool upper = (lane & o) != 0;
#pragma unroll
        for (int j = 0; j < half; ++j) {
            const float keep = upper ? v[j + half] : v[j];
            const float send = upper ? v[j] : v[j + half];
            v[j] = keep + __shfl_xor_sync(0xffffffffu, send, o);
        }
    }
    float score = v[0];
#pragma unroll
    for (int o = 16 / G; o > 0; o >>= 1) score += __shfl_xor_sync(0xffffffffu, score, o);
    return score;
}

// One (query, head, split): warp w scores slots base + KPW w .. base + KPW (w + 1) - 1 of every 64-slot block
// of the split (KPW = 64 / WARPS keys per warp), G = min(KILN_ATTENTION_GROUP, KPW) at a time, with an
// online softmax; the warps then merge in index order. DR: registers per lane for a head (head_dim <=
// 32 * DR), so that short heads waste no loads. WARPS is chosen per head size so that a warp's keys of a
// block are one group, one memory round trip, where the registers allow it.
//
// The kernel's first group of cached keys is requested before it waits for the previous kernel: slots before
// the step (`past`) were written by earlier steps, and the step's size was uploaded before its first kernel,
// so neither depends on the kernels the wait is for; the step's own slots are read after it.
template <typename X, int DR, int WARPS>
__device__ __forceinline__ void attention_split(const AttentionArgs& a, float (*merge)[2 + 32 * DR],
                                                float (*own_k)[32 * DR], float (*own_v)[32 * DR]) {
    constexpr int KPW = 64 / WARPS;
    constexpr int G = KILN_ATTENTION_GROUP < KPW ? KILN_ATTENTION_GROUP : KPW;
    constexpr int G_LANES = 32 / G;  // lanes that hold each key's score (group_scores)
    const int past = a.step[0];
    const int total = past + a.S;
    const int i = blockIdx.x / a.heads, h = blockIdx.x % a.heads;
    const int kvh = h / (a.heads / a.kv_heads);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    // Without a mask, causal keys after the query's own slot are invisible: stop there.
    const int end = (a.causal && !a.mask) ? past + i + 1 : total;
    const int splits = (end + a.chunk - 1) / a.chunk;
    const i64 kstride = (i64)a.kv_heads * a.D, vstride = (i64)a.kv_heads * a.Dv;
    const float* kbase = a.kcache + (i64)kvh * a.D;
    const float* vbase = a.vcache + (i64)kvh * a.Dv;
    float kv[G][DR];
    float vv[G][DR];
    {
        const int lo = (int)blockIdx.y * a.chunk;
        const OwnSlots<DR> none{nullptr, nullptr, 0};
        load_key_group<G, DR>(a, kbase, vbase, kstride, vstride, lo + KPW * warp, 0, min(min(lo + a.chunk, end), past),
                              lane, none, kv, vv);
    }
    KILN_PDL_ENTRY();
    const i64 p = a.positions[i];
    const int nd = (a.D + 31) / 32;
    float q[DR];
    const bool fold = a.k_in != nullptr;
    const X* qrow = (const X*)(fold ? a.q_in : a.q) + ((i64)i * a.heads + h) * a.D;
#pragma unroll
    for (int r = 0; r < DR; ++r) {
        const int d = lane + 32 * r;
        q[r] = (r < nd && d < a.D) ? (fold ? folded_element<X>(a, qrow, d, i) : to_f32(qrow[d])) : 0.0f;
    }
    // A folded append: the step's own keys and values (slots past and on) are not in the cache yet. Every
    // block whose splits reach them first stores all of them for its KV head, rotated; blocks of other query
    // heads store the same bits at the same places, and a block reads only slots it has stored itself (or
    // that an earlier step stored), so the key loop below is the same with or without the fold. The block
    // scores those slots from the copy it keeps in shared memory (the same bits).
    OwnSlots<DR> own{nullptr, nullptr, past};
    if (fold) {
        // Blocks stride over the splits; the step's own slots start in split past / chunk.
        const int y = (int)blockIdx.y, stride = split_rows(a);
        if (y < splits && y + (splits - 1 - y) / stride * stride >= past / a.chunk) {
            const bool keep = a.S <= KILN_ATTENTION_FOLD_ROWS;
            for (int e = threadIdx.x; e < a.S * a.D; e += blockDim.x) {
                const int j = e / a.D, d = e - j * a.D;
                const float key = folded_element<X>(a, (const X*)a.k_in + ((i64)j * a.kv_heads + kvh) * a.D, d, j);
                a.kcache[(i64)(past + j) * kstride + (i64)kvh * a.D + d] = key;
                if (keep) own_k[j][d] = key;
            }
            for (int e = threadIdx.x; e < a.S * a.Dv; e += blockDim.x) {
                const int j = e / a.Dv, d = e - j * a.Dv;
                const float value = to_f32(((const X*)a.v_in)[((i64)j * a.kv_heads + kvh) * a.Dv + d]);
                a.vcache[(i64)(past + j) * vstride + (i64)kvh * a.Dv + d] = value;
                if (keep) own_v[j][d] = value;
            }
            __syncthreads();
            if (keep) {
                own.k = own_k;
                own.v = own_v;
            }
        }
    }
    const float NEG = -__int_as_float(0x7f800000);
    // The group requested before the wait is the loop's first; it lacks only the step's own slots.
    bool first = true;
    // The merge reads splits 0..splits only; later ones are not written.
    for (int s = blockIdx.y; s < splits; s += split_rows(a)) {
        float* out = a.partial + (((i64)i * a.heads + h) * a.max_splits + s) * (a.Dv + 2);
        float m = NEG, l = 0.0f;
        float acc[DR];
#pragma unroll
        for (int r = 0; r < DR; ++r) acc[r] = 0.0f;
        const int lo = s * a.chunk, hi = min(lo + a.chunk, end);
        for (int base = lo + KPW * warp; base < hi; base += 64) {
#pragma unroll
            for (int g0 = 0; g0 < KPW; g0 += G) {
                load_key_group<G, DR>(a, kbase, vbase, kstride, vstride, base + g0, first ? past : 0, hi, lane, own, kv,
                                      vv);
                first = false;
                // The group's scores: lane partial dots, then one transposed warp sum, after which lanes
                // G_LANES k .. G_LANES (k + 1) - 1 hold key k's score (group_scores).
                const float score = group_scores<G, DR>(q, kv, lane);
                const int t = base + g0 + lane / G_LANES;
                float x = NEG;
                if (t < hi && key_visible(a, past, i, p, t)) {
                    x = score * a.scale;
                    if (a.softcap > 0.0f) x = a.softcap * tanhf(x / a.softcap);
                }
                // The group's max over its keys (over the lane bits that tell keys apart; max is exact in
                // any order). Starting from NEG, a NaN score is passed over as the key-by-key max did.
                float gm = fmaxf(NEG, x);
#pragma unroll
                for (int o = 16; o >= G_LANES; o >>= 1) gm = fmaxf(gm, __shfl_xor_sync(0xffffffffu, gm, o));
                if (gm == NEG) continue;  // no visible key in this group: the state is unchanged
                const float mn = fmaxf(m, gm);
                const float corr = m == NEG ? 0.0f : expf(m - mn);
                l *= corr;
#pragma unroll
                for (int r = 0; r < DR; ++r) acc[r] *= corr;
                m = mn;
                // Each key's weight is taken once, by its own lanes (-1: invisible), and handed to every lane,
                // which adds the weights in key order as before.
                const float own_w = x == NEG ? -1.0f : expf(x - m);
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    const float w = __shfl_sync(0xffffffffu, own_w, g * G_LANES);
                    if (w < 0.0f) continue;
                    l += w;
#pragma unroll
                    for (int r = 0; r < DR; ++r) acc[r] = fmaf(w, vv[g][r], acc[r]);
                }
            }
        }
        __syncthreads();  // the previous split's merge has read `merge`
        if (lane == 0) { merge[warp][0] = m; merge[warp][1] = l; }
#pragma unroll
        for (int r = 0; r < DR; ++r) merge[warp][2 + lane + 32 * r] = acc[r];
        __syncthreads();
        float bm = NEG;
        for (int w = 0; w < WARPS; ++w) bm = fmaxf(bm, merge[w][0]);
        if (threadIdx.x == 0) out[0] = bm;
        if (bm == NEG) {
            if (threadIdx.x == 0) out[1] = 0.0f;
            continue;
        }
        float scale_w[WARPS];
        for (int w = 0; w < WARPS; ++w) scale_w[w] = merge[w][0] == NEG ? 0.0f : expf(merge[w][0] - bm);
        if (threadIdx.x == 0) {
            float bl = 0.0f;
            for (int w = 0; w < WARPS; ++w) bl = fmaf(merge[w][1], scale_w[w], bl);
            out[1] = bl;
        }
        for (int d = threadIdx.x; d < a.Dv; d += blockDim.x) {
            float v = 0.0f;
            for (int w = 0; w < WARPS; ++w) v = fmaf(merge[w][2 + d], scale_w[w], v);
            out[2 + d] = v;
        }
    }
}
// One entry point per head-size class (_d64, _d128, _d256: heads of at most 64, 128, 256 elements), so
// that a kernel's registers are sized for its own heads: one function holding every class would be
// allocated for the widest and run few blocks per multiprocessor.
#define KILN_ATTENTION_D(XN, XT, DN, DR)                                                               \
    extern "C" __global__ void __launch_bounds__(32 * KILN_ATTENTION_WARPS(DR))                        \
        kiln_attention_x##XN##_d##DN(const AttentionArgs a) {                                          \
        __shared__ float merge[KILN_ATTENTION_WARPS(DR)][2 + 32 * DR];                                 \
        __shared__ float own_k[KILN_ATTENTION_FOLD_ROWS][32 * DR], own_v[KILN_ATTENTION_FOLD_ROWS][32 * DR]; \
        if (prefetch_block(a)) return;                                                                 \
        attention_split<XT, DR, KILN_ATTENTION_WARPS(DR)>(a, merge, own_k, own_v);                     \
    }
#define KILN_ATTENTION(XN, XT)                                                                         \
    KILN_ATTENTION_D(XN, XT, 64, 2) KILN_ATTENTION_D(XN, XT, 128, 4) KILN_ATTENTION_D(XN, XT, 256, 8)
KILN_FOR_FLOAT_TYPES(KILN_ATTENTION)

// Prefill attention (steps longer than CUDA_EXACT_STEP_ROWS, whose rows need not match a decode step bit
// for bit): one block of 256 threads computes a tile of 64 queries of one head, walking the keys 64 at a
// time with the tiles in shared memory, so each key and value loaded serves 64 queries (the split kernel
// loads them once per query). Thread (ty, tx) of a 16 x 16 grid holds the scores of queries 4ty + i and
// keys 4tx + j (i, j < 4), and output columns 64g + 4tx + j of its four queries; the softmax is online over
// the key tiles. Queries and keys are stored transposed (element-major, rows of KILN_TILE_PAD floats), so
// that each step of a dot product is two 16-byte shared loads for 16 multiply-adds; the weights are stored
// transposed in the key tile's space once the scores are taken. The visibility rules are the split kernel's
// (key_visible). Head sizes must be multiples of 4 (the runtime checks). Shared memory, in floats:
// qT [D][PAD], kT / pT [max(D, 64)][PAD], v [64][Dv] (tiled_attention_bytes() in the runtime).
//
// Causal tiles see different numbers of keys (the last tile of a 512-token prompt eight times the first's),
// so the keys are also cut into splits of `chunk` keys (blockIdx.z), several blocks per long tile, whose
// partial results kiln_attention_combine merges; with max_splits == 1 the block writes the output itself.
#define KILN_TILE 64
#define KILN_TILE_PAD 68  // 16-byte aligned rows, four banks apart
#define KILN_TILED_THREADS 256
template <typename X, int NV>
__device__ __forceinline__ void attention_tiled(const AttentionArgs& a) {
    extern __shared__ float tile_smem[];
    const int PAD = KILN_TILE_PAD;
    float* qT = tile_smem;
    float* kT = qT + a.D * PAD;
    float* pT = kT;
    float* vs = kT + max(a.D, KILN_TILE) * PAD;
    const float NEG = -__int_as_float(0x7f800000);
    const int past = a.step[0];
    const int tiles = (a.S + KILN_TILE - 1) / KILN_TILE;
    const int i0 = (tiles - 1 - (int)blockIdx.y) * KILN_TILE;  // the last tiles see the most keys: start them first
    const int h = blockIdx.x;
    const int kvh = h / (a.heads / a.kv_heads);
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    // Without a mask, causal keys after the tile's last query are invisible to all of it: stop there.
    const int end = (a.causal && !a.mask) ? past + min(i0 + KILN_TILE, a.S) : past + a.S;
    const int split = blockIdx.z;
    const int lo = split * a.chunk, hi = min(lo + a.chunk, end);
    if (lo >= end) return;  // this tile has fewer splits
    const X* q = (const X*)a.q;
    // Coalesced reads of the query rows (the transposed stores conflict a little, once per block).
    for (int e = tid; e < KILN_TILE * a.D; e += KILN_TILED_THREADS) {
        const int r = e / a.D, d = e - r * a.D, i = i0 + r;
        qT[d * PAD + r] = i < a.S ? to_f32(q[((i64)i * a.heads + h) * a.D + d]) : 0.0f;
    }
    int qi[4];
    i64 pos[4];
    float m[4], l[4], acc[4][NV];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
        qi[r] = i0 + 4 * ty + r;
        pos[r] = qi[r] < a.S ? a.positions[qi[r]] : 0;
        m[r] = NEG;
        l[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < NV; ++c) acc[r][c] = 0.0f;
    }
    const i64 kstride = (i64)a.kv_heads * a.D, vstride = (i64)a.kv_heads * a.Dv;
    const float* kbase = a.kcache + (i64)kvh * a.D;
    const float* vbase = a.vcache + (i64)kvh * a.Dv;
    const int d4s = a.D / 4, v4s = a.Dv / 4;
    for (int t0 = lo; t0 < hi; t0 += KILN_TILE) {
        __syncthreads();  // the previous tile's weights and values are consumed
        // Keys: consecutive threads take consecutive keys, so the transposed stores hit distinct banks.
        for (int e = tid; e < KILN_TILE * d4s; e += KILN_TILED_THREADS) {
            const int c = e & (KILN_TILE - 1), d = 4 * (e / KILN_TILE), t = t0 + c;
            const float4 w = t < hi ? *(const float4*)(kbase + (i64)t * kstride + d) : make_float4(0.f, 0.f, 0.f, 0.f);
            kT[d * PAD + c] = w.x;
            kT[(d + 1) * PAD + c] = w.y;
            kT[(d + 2) * PAD + c] = w.z;
            kT[(d + 3) * PAD + c] = w.w;
        }
        for (int e = tid; e < KILN_TILE * v4s; e += KILN_TILED_THREADS) {
            const int c = e / v4s, d = 4 * (e - c * v4s), t = t0 + c;
            *(float4*)(vs + c * a.Dv + d) =
                t < hi ? *(const float4*)(vbase + (i64)t * vstride + d) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        __syncthreads();
        float s[4][4];
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
            for (int j = 0; j < 4; ++j) s[r][j] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < a.D; ++d) {
            const float4 qv = *(const float4*)(qT + d * PAD + 4 * ty);
            const float4 kv = *(const float4*)(kT + d * PAD + 4 * tx);
            const float qr[4] = {qv.x, qv.y, qv.z, qv.w}, kc[4] = {kv.x, kv.y, kv.z, kv.w};
#pragma unroll
            for (int r = 0; r < 4; ++r)
#pragma unroll
                for (int j = 0; j < 4; ++j) s[r][j] = fmaf(qr[r], kc[j], s[r][j]);
        }
        __syncthreads();  // every score is taken: the key tile's space now holds the weights
        float p[4][4];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            float rowmax = NEG;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int t = t0 + 4 * tx + j;
                float x = NEG;
                if (qi[r] < a.S && t < hi && key_visible(a, past, qi[r], pos[r], t)) {
                    x = s[r][j] * a.scale;
                    if (a.softcap > 0.0f) x = a.softcap * tanhf(x / a.softcap);
                }
                s[r][j] = x;
                rowmax = fmaxf(rowmax, x);
            }
            // The 16 threads of a query row are one half-warp: reduce within it.
#pragma unroll
            for (int o = 8; o > 0; o >>= 1) rowmax = fmaxf(rowmax, __shfl_xor_sync(0xffffffffu, rowmax, o));
            if (rowmax == NEG) {  // nothing visible in this tile: weights 0, the state is unchanged
#pragma unroll
                for (int j = 0; j < 4; ++j) p[r][j] = 0.0f;
                continue;
            }
            const float mn = fmaxf(m[r], rowmax);
            const float corr = m[r] == NEG ? 0.0f : expf(m[r] - mn);
            m[r] = mn;
            l[r] *= corr;
#pragma unroll
            for (int c = 0; c < NV; ++c) acc[r][c] *= corr;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                p[r][j] = s[r][j] == NEG ? 0.0f : expf(s[r][j] - mn);
                l[r] += p[r][j];
            }
        }
#pragma unroll
        for (int j = 0; j < 4; ++j)
            *(float4*)(pT + (4 * tx + j) * PAD + 4 * ty) = make_float4(p[0][j], p[1][j], p[2][j], p[3][j]);
        __syncthreads();
#pragma unroll 4
        for (int c = 0; c < KILN_TILE; ++c) {
            const float4 pv = *(const float4*)(pT + c * PAD + 4 * ty);
            const float pr[4] = {pv.x, pv.y, pv.z, pv.w};
#pragma unroll
            for (int g = 0; g < NV / 4; ++g) {
                const int col = 64 * g + 4 * tx;
                const float4 vv = col < a.Dv ? *(const float4*)(vs + c * a.Dv + col) : make_float4(0.f, 0.f, 0.f, 0.f);
                const float vc[4] = {vv.x, vv.y, vv.z, vv.w};
#pragma unroll
                for (int r = 0; r < 4; ++r)
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[r][4 * g + j] = fmaf(pr[r], vc[j], acc[r][4 * g + j]);
            }
        }
    }
    X* out = (X*)a.out;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
        float total = l[r];
#pragma unroll
        for (int o = 8; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
        if (qi[r] >= a.S) continue;
        if (a.max_splits > 1) {
            // The split's running max, sum of weights and weighted values, for the merge.
            float* part = a.partial + (((i64)qi[r] * a.heads + h) * a.max_splits + split) * (a.Dv + 2);
            if (tx == 0) { part[0] = m[r]; part[1] = total; }
#pragma unroll
            for (int g = 0; g < NV / 4; ++g)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int col = 64 * g + 4 * tx + j;
                    if (col < a.Dv) part[2 + col] = acc[r][4 * g + j];
                }
            continue;
        }
        X* orow = out + ((i64)qi[r] * a.heads + h) * a.Dv;
#pragma unroll
        for (int g = 0; g < NV / 4; ++g)
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int col = 64 * g + 4 * tx + j;
                if (col < a.Dv) orow[col] = from_f32<X>(total > 0.0f ? acc[r][4 * g + j] / total : 0.0f);
            }
    }
}
// NV: output columns per thread, 4 per 64 columns of the head.
#define KILN_ATTENTION_TILED_D(XN, XT, DN, NV)                                                         \
    extern "C" __global__ void __launch_bounds__(KILN_TILED_THREADS)                                   \
        kiln_attention_tiled_x##XN##_d##DN(const AttentionArgs a) { KILN_PDL_ENTRY();                  \
        attention_tiled<XT, NV>(a);                                                                    \
    }
#define KILN_ATTENTION_TILED(XN, XT)                                                                   \
    KILN_ATTENTION_TILED_D(XN, XT, 64, 4) KILN_ATTENTION_TILED_D(XN, XT, 128, 8)                       \
    KILN_ATTENTION_TILED_D(XN, XT, 256, 16)
KILN_FOR_FLOAT_TYPES(KILN_ATTENTION_TILED)

// Prefill attention on tensor cores (steps longer than CUDA_EXACT_STEP_ROWS): the tiled kernel's tiles and
// rules, with the two products as warp-level tf32 matrix multiplies (mma.sync m16n8k8, sm_80+; tf32 keeps 10
// bits of mantissa, and the tensor cores read an f32 operand's upper 19 bits). 16-bit queries, keys and
// values are exact in tf32. f32 ones lose their low mantissa bits (truncated; rounding them to nearest was no
// more accurate against the CPU and cost the whole gain: bench/gpu-decode.md). So the runtime's plan takes
// this kernel for f32 activations only where every linear's weights are 16-bit, whose prefill GEMMs already
// round the activations to 16 bits, coarser than tf32; models with f32 weights keep the tiled kernel (a
// three-pass split of each operand into two tf32 parts, about f32's accuracy, measured slower than the tiled
// kernel). The softmax weights are rounded to tf32 before both their sum and the product.
//
// A block of four warps takes a tile of 64 queries of one head, 16 per warp, and walks the keys 64 at a time.
// Queries, keys and values sit in shared memory in rows of D + 4 (Dv + 4) floats, a stride that spreads
// every fragment load of 32 lanes over distinct banks. The next key tile is requested (cp.async) as soon as
// the scores of this one are taken, and the next value tile once its weighted sum is; rows past the split's
// end are zero-filled, so that a weight of 0 never meets a stale value. In the weights-times-values product
// the keys of a k-step are taken in the order the score fragment holds them (lane t has keys 2t and 2t + 1
// where the operand wants t and t + 4): the value rows are read in that same order, so no shuffle is needed.
// Shared memory, in floats: q [64][D + 4], k [64][D + 4], v [64][Dv + 4] (mma_attention_bytes() in the runtime).
#define KILN_MMA_THREADS 128
__device__ __forceinline__ u32 tf32_bits(float x) {
    u32 r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}
// c += a (16 x 8, row-major fragment) b (8 x 8, column-major fragment), tf32 inputs, f32 accumulate.
__device__ __forceinline__ void mma_tf32(float (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// Copies 16 bytes to shared memory asynchronously, or zero-fills them where !valid (src is then not read).
__device__ __forceinline__ void copy16_async(float* dst, const float* src, bool valid) {
    const u32 s = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void copies_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most one group of copies (the newest) is still in flight.
__device__ __forceinline__ void copies_wait_all_but_newest() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
// Rows t0 .. t0 + 63 of a cache, or of the step's f32 queries (`width` floats each, `stride` apart), into a
// [64][width + 4] tile, rows at or past `hi` zero-filled; one group of copies.
__device__ __forceinline__ void load_cache_tile(float* tile, const float* base, i64 stride, int width, int t0, int hi) {
    const int chunks = width / 4;
    for (int e = threadIdx.x; e < KILN_TILE * chunks; e += KILN_MMA_THREADS) {
        const int c = e / chunks, d = 4 * (e - c * chunks), t = t0 + c;
        copy16_async(tile + c * (width + 4) + d, base + (i64)(t < hi ? t : 0) * stride + d, t < hi);
    }
    copies_commit();
}
template <typename X, int NO>  // NO: 8-column tiles of the output a warp holds (the head-size class / 8)
__device__ __forceinline__ void attention_mma(const AttentionArgs& a) {
    extern __shared__ float tile_smem[];
    const int QS = a.D + 4, VS = a.Dv + 4;
    float* qs = tile_smem;
    float* ks = qs + KILN_TILE * QS;
    float* vs = ks + KILN_TILE * QS;
    const float NEG = -__int_as_float(0x7f800000);
    const int past = a.step[0];
    const int tiles = (a.S + KILN_TILE - 1) / KILN_TILE;
    const int i0 = (tiles - 1 - (int)blockIdx.y) * KILN_TILE;  // the last tiles see the most keys: start them first
    const int h = blockIdx.x;
    const int kvh = h / (a.heads / a.kv_heads);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const int end = (a.causal && !a.mask) ? past + min(i0 + KILN_TILE, a.S) : past + a.S;
    const int split = blockIdx.z;
    const int lo = split * a.chunk, hi = min(lo + a.chunk, end);
    if (lo >= end) return;  // this tile has fewer splits
    const i64 kstride = (i64)a.kv_heads * a.D, vstride = (i64)a.kv_heads * a.Dv;
    const float* kbase = a.kcache + (i64)kvh * a.D;
    const float* vbase = a.vcache + (i64)kvh * a.Dv;
    const X* q = (const X*)a.q;
    if (sizeof(X) == 4) {
        // f32 queries are copied as they are, asynchronously (rows past the step zero-filled).
        load_cache_tile(qs, (const float*)a.q + (i64)h * a.D + (i64)i0 * a.heads * a.D, (i64)a.heads * a.D, a.D, 0,
                        a.S - i0);
    } else {
        for (int e = threadIdx.x; e < KILN_TILE * a.D; e += KILN_MMA_THREADS) {
            const int r = e / a.D, d = e - r * a.D, i = i0 + r;
            qs[r * QS + d] = i < a.S ? to_f32(q[((i64)i * a.heads + h) * a.D + d]) : 0.0f;
        }
    }
    // The first key and value tiles after the queries: the loop's first wait leaves only the values in flight.
    load_cache_tile(ks, kbase, kstride, a.D, lo, hi);
    load_cache_tile(vs, vbase, vstride, a.Dv, lo, hi);
    // This lane's two query rows: g and g + 8 of its warp's 16.
    int qi[2];
    i64 pos[2];
    float m[2], l[2], o[NO][4];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        qi[r] = i0 + 16 * warp + g + 8 * r;
        pos[r] = qi[r] < a.S ? a.positions[qi[r]] : 0;
        m[r] = NEG;
        l[r] = 0.0f;
    }
#pragma unroll
    for (int n = 0; n < NO; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[n][e] = 0.0f;
    const int out_tiles = a.Dv / 8;
    const float* qw = qs + 16 * warp * QS;
    for (int t0 = lo; t0 < hi; t0 += KILN_TILE) {
        copies_wait_all_but_newest();  // this key tile (its values may still be in flight)
        __syncthreads();
        // Scores: s[n] holds keys t0 + 8n + 2 t4 (+1) of rows g (s[n][0..1]) and g + 8 (s[n][2..3]).
        float s[8][4];
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[n][e] = 0.0f;
#pragma unroll 2
        for (int d = t4; d < a.D; d += 8) {
            const u32 a0 = __float_as_uint(qw[g * QS + d]), a1 = __float_as_uint(qw[(g + 8) * QS + d]);
            const u32 a2 = __float_as_uint(qw[g * QS + d + 4]), a3 = __float_as_uint(qw[(g + 8) * QS + d + 4]);
#pragma unroll
            for (int n = 0; n < 8; ++n) {
                const float* kr = ks + (8 * n + g) * QS + d;
                mma_tf32(s[n], a0, a1, a2, a3, __float_as_uint(kr[0]), __float_as_uint(kr[4]));
            }
        }
        __syncthreads();  // every warp has its scores: the key tile's space is free
        if (t0 + KILN_TILE < hi) load_cache_tile(ks, kbase, kstride, a.D, t0 + KILN_TILE, hi);
        else copies_commit();  // an empty group keeps the waits' counting uniform
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float rowmax = NEG;
#pragma unroll
            for (int n = 0; n < 8; ++n)
#pragma unroll
                for (int j = 0; j < 2; ++j) {
                    const int t = t0 + 8 * n + 2 * t4 + j;
                    float x = NEG;
                    if (qi[r] < a.S && t < hi && key_visible(a, past, qi[r], pos[r], t)) {
                        x = s[n][2 * r + j] * a.scale;
                        if (a.softcap > 0.0f) x = a.softcap * tanhf(x / a.softcap);
                    }
                    s[n][2 * r + j] = x;
                    rowmax = fmaxf(rowmax, x);
                }
            // The four lanes of a row are one quad: reduce within it.
            rowmax = fmaxf(rowmax, __shfl_xor_sync(0xffffffffu, rowmax, 1));
            rowmax = fmaxf(rowmax, __shfl_xor_sync(0xffffffffu, rowmax, 2));
            if (rowmax == NEG) {  // nothing visible in this tile: weights 0, the state is unchanged
#pragma unroll
                for (int n = 0; n < 8; ++n) s[n][2 * r] = s[n][2 * r + 1] = 0.0f;
                continue;
            }
            const float mn = fmaxf(m[r], rowmax);
            const float corr = m[r] == NEG ? 0.0f : expf(m[r] - mn);
            m[r] = mn;
            l[r] *= corr;
#pragma unroll
            for (int n = 0; n < NO; ++n) {
                o[n][2 * r] *= corr;
                o[n][2 * r + 1] *= corr;
            }
#pragma unroll
            for (int n = 0; n < 8; ++n)
#pragma unroll
                for (int j = 0; j < 2; ++j) {
                    const float x = s[n][2 * r + j];
                    // The weight as the product uses it (tf32), so that the sum matches the weighted values.
                    const float p = x == NEG ? 0.0f : __uint_as_float(tf32_bits(expf(x - mn)));
                    s[n][2 * r + j] = p;
                    l[r] += p;
                }
        }
        copies_wait_all_but_newest();  // this value tile
        __syncthreads();
        // o += p v over the tile's eight k-steps of eight keys.
#pragma unroll
        for (int kk = 0; kk < 8; ++kk) {
            const u32 a0 = __float_as_uint(s[kk][0]), a1 = __float_as_uint(s[kk][2]);
            const u32 a2 = __float_as_uint(s[kk][1]), a3 = __float_as_uint(s[kk][3]);
            const float* v0 = vs + (8 * kk + 2 * t4) * VS + g;
#pragma unroll
            for (int n = 0; n < NO; ++n)
                if (n < out_tiles)
                    mma_tf32(o[n], a0, a1, a2, a3, __float_as_uint(v0[8 * n]), __float_as_uint(v0[VS + 8 * n]));
        }
        __syncthreads();  // every warp has used the value tile
        if (t0 + KILN_TILE < hi) load_cache_tile(vs, vbase, vstride, a.Dv, t0 + KILN_TILE, hi);
        else copies_commit();
    }
    X* out = (X*)a.out;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float total = l[r];
        total += __shfl_xor_sync(0xffffffffu, total, 1);
        total += __shfl_xor_sync(0xffffffffu, total, 2);
        if (qi[r] >= a.S) continue;
        if (a.max_splits > 1) {
            // The split's running max, sum of weights and weighted values, for the merge.
            float* part = a.partial + (((i64)qi[r] * a.heads + h) * a.max_splits + split) * (a.Dv + 2);
            if (t4 == 0) { part[0] = m[r]; part[1] = total; }
#pragma unroll
            for (int n = 0; n < NO; ++n)
                if (n < out_tiles) {
                    part[2 + 8 * n + 2 * t4] = o[n][2 * r];
                    part[2 + 8 * n + 2 * t4 + 1] = o[n][2 * r + 1];
                }
            continue;
        }
        X* orow = out + ((i64)qi[r] * a.heads + h) * a.Dv;
#pragma unroll
        for (int n = 0; n < NO; ++n)
            if (n < out_tiles)
#pragma unroll
                for (int j = 0; j < 2; ++j)
                    orow[8 * n + 2 * t4 + j] = from_f32<X>(total > 0.0f ? o[n][2 * r + j] / total : 0.0f);
    }
}
#define KILN_ATTENTION_MMA_D(XN, XT, DN)                                                               \
    extern "C" __global__ void __launch_bounds__(KILN_MMA_THREADS)                                     \
        kiln_attention_mma_x##XN##_d##DN(const AttentionArgs a) { KILN_PDL_ENTRY();                    \
        attention_mma<XT, DN / 8>(a);                                                                  \
    }
#define KILN_ATTENTION_MMA(XN, XT)                                                                     \
    KILN_ATTENTION_MMA_D(XN, XT, 64) KILN_ATTENTION_MMA_D(XN, XT, 128) KILN_ATTENTION_MMA_D(XN, XT, 256)
KILN_FOR_FLOAT_TYPES(KILN_ATTENTION_MMA)

// Merges the splits of one (query, head) (block x) in split order: out = sum_s acc_s e^(m_s - M) /
// sum_s l_s e^(m_s - M). Splits with no visible key are skipped; a query with none gets zeros.
//
// The partial results are read KILN_COMBINE_BATCH splits at a time, every load of a batch requested before
// any is used: a decode step's merge is a chain of trips to L2 (the maxima, then each split's sum and values),
// and batching makes that one trip per batch instead of one or two per split. Up to one batch of splits (512
// keys), the maxima come with the sums and values: one trip in all. The arithmetic is the same sequence of max
// and fused multiply-adds in split order either way.
#define KILN_COMBINE_BATCH 8
template <typename X>
__device__ __forceinline__ void attention_combine(const AttentionArgs& a) {
    const int past = a.step[0];
    const int i = blockIdx.x / a.heads;
    const int end = (a.causal && !a.mask) ? past + i + 1 : past + a.S;
    const int splits = (end + a.chunk - 1) / a.chunk;
    const float NEG = -__int_as_float(0x7f800000);
    const i64 row = a.Dv + 2;
    const float* part = a.partial + (i64)blockIdx.x * a.max_splits * row;
    float M = NEG;
    if (splits > KILN_COMBINE_BATCH) {
        for (int s0 = 0; s0 < splits; s0 += KILN_COMBINE_BATCH) {
            float m[KILN_COMBINE_BATCH];
#pragma unroll
            for (int b = 0; b < KILN_COMBINE_BATCH; ++b) m[b] = s0 + b < splits ? part[(s0 + b) * row] : NEG;
#pragma unroll
            for (int b = 0; b < KILN_COMBINE_BATCH; ++b) M = fmaxf(M, m[b]);
        }
    }
    X* out = (X*)a.out + (i64)blockIdx.x * a.Dv;
    for (int d = threadIdx.x; d < a.Dv; d += blockDim.x) {
        float num = 0.0f, den = 0.0f, dM = M;
        for (int s0 = 0; s0 < splits; s0 += KILN_COMBINE_BATCH) {
            float m[KILN_COMBINE_BATCH], l[KILN_COMBINE_BATCH], v[KILN_COMBINE_BATCH];
#pragma unroll
            for (int b = 0; b < KILN_COMBINE_BATCH; ++b) {
                const float* ps = part + (s0 + b) * row;
                const bool in = s0 + b < splits;
                m[b] = in ? ps[0] : NEG;
                l[b] = in ? ps[1] : 0.0f;
                v[b] = in ? ps[2 + d] : 0.0f;
            }
            if (splits <= KILN_COMBINE_BATCH) {
#pragma unroll
                for (int b = 0; b < KILN_COMBINE_BATCH; ++b) dM = fmaxf(dM, m[b]);
            }
            if (dM == NEG) break;  // no split has a visible key
#pragma unroll
            for (int b = 0; b < KILN_COMBINE_BATCH; ++b) {
                if (m[b] == NEG) continue;
                const float f = expf(m[b] - dM);
                den = fmaf(l[b], f, den);
                num = fmaf(v[b], f, num);
            }
        }
        out[d] = from_f32<X>(dM == NEG ? 0.0f : num / den);
    }
}
// The merge launches the o projection before its own wait, so that o's blocks request their weights while the
// split kernel runs (1B shape on an H200: +0.4% decode; bench/gpu-decode.md).
#define KILN_ATTENTION_COMBINE(XN, XT)                                                                 \
    extern "C" __global__ void kiln_attention_combine_x##XN(const AttentionArgs a) {                  \
        KILN_PDL_ENTRY_LAUNCH_FIRST();                                                                 \
        attention_combine<XT>(a);                                                                      \
    }
KILN_FOR_FLOAT_TYPES(KILN_ATTENTION_COMBINE)

// Keeps cache slots keep[0..n) as slots 0..n of every layer's keys and values (tree speculation keeps the
// accepted path). keep is increasing with keep[i] >= i, so copying slots in increasing order in place is
// safe; one block per (layer, keys|values) walks the slots in order. `stride` is the elements between two
// layers' caches, `row` the elements of one slot, `first` the first slot that can move.
extern "C" __global__ void kiln_kv_compact(float* cache, const int* keep, int first, int n, i64 stride, int row) { KILN_PDL_ENTRY();
    float* base = cache + (i64)blockIdx.x * stride;
    for (int s = first; s < n; ++s) {
        const int from = keep[s];
        if (from != s)
            for (int e = threadIdx.x; e < row; e += blockDim.x) base[(i64)s * row + e] = base[(i64)from * row + e];
        __syncthreads();
    }
}
