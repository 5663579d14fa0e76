// Choosing the next token on the device, so that only token ids cross to the host: the greedy argmax of
// every logits row, and a draw with temperature, top-k and top-p from one row.
//
// Both follow the CPU sampler (kiln_runtime::decoding::sampling) rule for rule: candidates are ordered by
// descending logit with ties to the lower id; top-k keeps the first k, top-p the shortest prefix whose mass
// reaches p, and the draw picks the first candidate whose cumulative weight exceeds u * total for the
// uniform u the host drew from its seeded generator. Weights are exp(l / t - l_max / t) in f64, as on the
// CPU; only the order of the f64 sums differs, so a draw differs from the CPU's only when u falls within
// rounding of a boundary between two candidates.
//
// A row the CPU would refuse (a NaN or +inf logit, or every logit -inf) sets KILN_ERROR_LOGITS.

// The candidate order as one integer: larger = earlier. The high half orders floats by value (the IEEE
// bits made monotonic), the low half puts lower ids first among equal values.
__device__ __forceinline__ u64 order_key(float v, int i) {
    const u32 b = __float_as_uint(v);
    const u32 k = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((u64)k << 32) | (u64)(0xffffffffu - (u32)i);
}
__device__ __forceinline__ int key_id(u64 key) { return (int)(0xffffffffu - (u32)(key & 0xffffffffu)); }

__device__ __forceinline__ bool bad_logit(float v) { return v != v || v == __int_as_float(0x7f800000); }

// Reductions over a block of up to 1024 threads (a multiple of 32); every thread gets the result.
__device__ __forceinline__ double block_sum_f64(double v, double* scratch) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double total = 0.0;
    for (int w = 0; w < warps; ++w) total += scratch[w];  // the same order in every thread
    return total;
}
__device__ __forceinline__ u64 block_max_u64(u64 v, u64* scratch) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const u64 other = __shfl_xor_sync(0xffffffffu, v, o);
        v = other > v ? other : v;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    u64 best = 0;
    for (int w = 0; w < warps; ++w) best = scratch[w] > best ? scratch[w] : best;
    return best;
}

// The greedy token of each row of logits [M, N] (one block per row): the largest logit, the lowest id on
// ties. The largest order key is exactly that.
extern "C" __global__ void kiln_argmax_f32(const float* logits, int N, int* out, int* error) {
    __shared__ u64 scratch[32];
    const float* row = logits + (i64)blockIdx.x * N;
    u64 best = 0;
    int bad = 0, finite = 0;
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        const float v = row[i];
        bad |= bad_logit(v);
        finite |= v != -__int_as_float(0x7f800000);
        const u64 k = order_key(v, i);
        best = k > best ? k : best;
    }
    bad = __syncthreads_or(bad);
    finite = __syncthreads_or(finite);
    best = block_max_u64(best, scratch);
    if (threadIdx.x == 0) {
        out[blockIdx.x] = key_id(best);
        if (bad || !finite) report_error(error, KILN_ERROR_LOGITS);
    }
}

// Walks the radix digits of the order keys from the top, 8 bits at a time, to find one key among those
// >= `floor`: with `weighted` false, the `rank`-th largest (1-based); with it true, the first (in
// descending order) at which the running sum of weights exceeds `target` (`inclusive`: reaches it). Returns
// the key and, through `before`, the weight of the keys above it.
__device__ u64 radix_walk(const float* row, int N, u64 floor, bool weighted, u32 rank, double target,
                          bool inclusive, double t, double max_scaled, double* before) {
    __shared__ u32 hist_n[256];
    __shared__ double hist_w[256];
    __shared__ u64 s_prefix;
    __shared__ double s_before;
    __shared__ u32 s_rank;
    __syncthreads();  // the previous walk's results have been read
    if (threadIdx.x == 0) { s_prefix = 0; s_before = 0.0; s_rank = rank; }
    u64 mask = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) { hist_n[b] = 0; hist_w[b] = 0.0; }
        __syncthreads();
        const u64 prefix = s_prefix;
        for (int i = threadIdx.x; i < N; i += blockDim.x) {
            const float v = row[i];
            const u64 k = order_key(v, i);
            if (k < floor || (k & mask) != prefix) continue;
            const int bin = (int)((k >> shift) & 0xffu);
            if (weighted) {
                atomicAdd(&hist_w[bin], exp((double)v / t - max_scaled));
            } else {
                atomicAdd(&hist_n[bin], 1u);
            }
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int chosen = -1, lowest = -1;
            double acc = s_before;
            u32 left = s_rank;
            for (int b = 255; b >= 0; --b) {
                if (weighted) {
                    if (hist_w[b] > 0.0) lowest = b;
                    const double next = acc + hist_w[b];
                    if (hist_w[b] > 0.0 && (inclusive ? next >= target : next > target)) { chosen = b; break; }
                    acc = next;
                } else {
                    if (hist_n[b] >= left) { chosen = b; break; }
                    left -= hist_n[b];
                }
            }
            if (chosen < 0) {
                // Rounding left the target a hair above the total: the last candidate with weight, as on the CPU.
                chosen = lowest < 0 ? 0 : lowest;
                acc = s_before;
                for (int b = 255; b > chosen; --b) acc += hist_w[b];
            }
            s_before = acc;
            s_rank = left;
            s_prefix = prefix | ((u64)chosen << shift);
        }
        mask |= (u64)0xff << shift;
        __syncthreads();
    }
    *before = s_before;
    return s_prefix;
}

// Draws the next token from one row of logits: softmax(logits / temperature) truncated to the top_k
// (0: all) most likely, then to the shortest prefix with mass >= top_p, picked by the uniform u in [0, 1).
// One block (1024 threads) for the row.
extern "C" __global__ void kiln_sample_f32(const float* row, int N, float temperature, int top_k, float top_p,
                                           double u, int* out, int* error) {
    __shared__ u64 scratch_u[32];
    __shared__ double scratch_d[32];
    int bad = 0, finite = 0;
    u64 top = 0;
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        const float v = row[i];
        bad |= bad_logit(v);
        finite |= v != -__int_as_float(0x7f800000);
        const u64 k = order_key(v, i);
        top = k > top ? k : top;
    }
    bad = __syncthreads_or(bad);
    finite = __syncthreads_or(finite);
    top = block_max_u64(top, scratch_u);
    if (bad || !finite) {
        if (threadIdx.x == 0) { out[0] = 0; report_error(error, KILN_ERROR_LOGITS); }
        return;
    }
    const double t = (double)temperature;
    const double max_scaled = (double)row[key_id(top)] / t;
    double ignored;
    // Top-k: the k-th key is the lowest candidate.
    u64 floor = 0;
    if (top_k > 0 && top_k < N) floor = radix_walk(row, N, 0, false, (u32)top_k, 0.0, false, 0.0, 0.0, &ignored);
    double total = 0.0;
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        const float v = row[i];
        if (order_key(v, i) >= floor) total += exp((double)v / t - max_scaled);
    }
    total = block_sum_f64(total, scratch_d);
    // Top-p: the first key at which the mass reaches top_p becomes the lowest candidate.
    if (top_p < 1.0f) {
        double above;
        floor = radix_walk(row, N, floor, true, 0, (double)top_p * total, true, t, max_scaled, &above);
        total = 0.0;
        for (int i = threadIdx.x; i < N; i += blockDim.x) {
            const float v = row[i];
            if (order_key(v, i) >= floor) total += exp((double)v / t - max_scaled);
        }
        total = block_sum_f64(total, scratch_d);
    }
    const u64 pick = radix_walk(row, N, floor, true, 0, u * total, false, t, max_scaled, &ignored);
    if (threadIdx.x == 0) out[0] = key_id(pick);
}
