// Choosing the next token on the device, so that only token ids cross to the host: the greedy argmax of
// every logits row, and a draw with temperature, top-k and top-p from one row.
//
// Both follow the CPU sampler (kiln_runtime::decoding::sampling) rule for rule: candidates are ordered by
// descending logit with ties to the lower id; top-k keeps the first k, top-p the shortest prefix whose mass
// reaches p, and the draw picks the first candidate whose cumulative weight exceeds u * total for the
// uniform u the host drew from its seeded generator. Weights are exp(l / t - l_max / t) in f64, as on the
// CPU, summed in fixed point (see the radix walk), so a draw differs from the CPU's only when u falls
// within about 1e-12 of a boundary between two candidates, and the same inputs always give the same draw.
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

// The largest value over a block of up to 1024 threads (a multiple of 32); every thread gets it.
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
extern "C" __global__ void __launch_bounds__(1024) kiln_argmax_f32(const float* logits, int N, int* out, int* error) { KILN_PDL_ENTRY();
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

// The greedy token of one row of logits, split over blocks of KILN_ARGMAX_THREADS threads: block b takes the
// KILN_ARGMAX_SLICE logits from b * KILN_ARGMAX_SLICE on (two 16-byte loads a thread, one round trip) and
// writes its largest order key to partial[b]; the last block to finish (a ticket counter, which the last
// ticket wraps back to zero) takes the largest of the partials. The runtime sizes the grid and the scratch
// with the same numbers (ARGMAX_SLICE and ARGMAX_THREADS in kiln-runtime's cuda/choose.rs). One block walking a 128k-token row (kiln_argmax_f32) needs
// dozens of round trips, which made it a decode step's slowest launch after the weights.
//
// With `feed_ids` (not null) the kernel also sets up the next decode step on the device: the chosen id becomes
// its input, and its position and the count of cached tokens (`feed_step`, the step info every kernel reads)
// advance by one. A greedy run then queues step k + 1 before the host has read step k's token
// (CudaExecutor::greedy_run), so the GPU does not idle while the host reads back and launches.
#define KILN_ARGMAX_THREADS 256
#define KILN_ARGMAX_SLICE (KILN_ARGMAX_THREADS * 8)
extern "C" __global__ void __launch_bounds__(KILN_ARGMAX_THREADS)
    kiln_argmax_split_f32(const float* row, int N, int* out, int* error, u64* partial, u32* tickets, i64* feed_ids,
                          i64* feed_positions, int* feed_step) {
    KILN_PDL_ENTRY();
    __shared__ u64 scratch[32];
    __shared__ bool last;
    const int lo = blockIdx.x * KILN_ARGMAX_SLICE, hi = min(N, lo + KILN_ARGMAX_SLICE);
    const bool aligned = (((u64)row) & 15) == 0;
    float v[2][4];
#pragma unroll
    for (int u = 0; u < 2; ++u) {
        const int i = lo + 4 * (threadIdx.x + u * KILN_ARGMAX_THREADS);
        if (aligned && i + 3 < hi) {
            const float4 f = *(const float4*)(row + i);
            v[u][0] = f.x; v[u][1] = f.y; v[u][2] = f.z; v[u][3] = f.w;
        } else {
#pragma unroll
            for (int j = 0; j < 4; ++j) v[u][j] = i + j < hi ? row[i + j] : 0.0f;
        }
    }
    u64 best = 0;
    bool bad = false;
#pragma unroll
    for (int u = 0; u < 2; ++u) {
        const int i = lo + 4 * (threadIdx.x + u * KILN_ARGMAX_THREADS);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            if (i + j >= hi) continue;
            bad |= bad_logit(v[u][j]);
            const u64 k = order_key(v[u][j], i + j);
            best = k > best ? k : best;
        }
    }
    if (bad) report_error(error, KILN_ERROR_LOGITS);
    best = block_max_u64(best, scratch);
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = best;
        __threadfence();
        // atomicInc stores 0 when it hands out the last ticket, so the counter is ready for the next launch.
        last = atomicInc(tickets, gridDim.x - 1) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    u64 top = 0;
    for (int b = threadIdx.x; b < (int)gridDim.x; b += blockDim.x) {
        const u64 k = __ldcg(partial + b);  // from L2: another block wrote it
        top = k > top ? k : top;
    }
    top = block_max_u64(top, scratch);
    if (threadIdx.x == 0) {
        const int id = key_id(top);
        out[0] = id;
        // The largest key is -inf's when every logit is -inf (a NaN was reported above).
        if ((u32)(top >> 32) <= 0x007fffffu) report_error(error, KILN_ERROR_LOGITS);
        if (feed_ids) {
            feed_ids[0] = id;
            feed_positions[0] += 1;
            feed_step[0] += 1;
        }
    }
}

// The radix walk over order keys: digits of 11 bits from the top (the last one 9), each pass a histogram
// of counts and weights over the keys still in play, then the bin where the running amount crosses the
// target. The first pass reads the whole row and compacts the keys of its chosen bin into a list (with
// their weights), which the later passes read; the walk stops as soon as one key is left.
//
// Weights are summed in fixed point (u64, `frac_bits` fractional bits, as many as the vocabulary leaves
// room for: 45 for 128k tokens), so every sum is exact and the draw does not depend on the order of the
// atomic adds. A weight below 2^-frac_bits of the top token's counts as 0, which moves at most N * 2^-46 of
// probability; boundaries move by about 1e-12 relative to the CPU's f64 sums.
#define KILN_WALK_BINS 2048

struct WalkState {
    u32 count[KILN_WALK_BINS];
    // A bin's weight (a u64) as two u32 halves, the high one taking the carries out of the low one: an atomic
    // add on 64 bits in shared memory is a compare-and-swap loop, which spins when many logits fall into the
    // same bin (as a language model's do), while one on 32 bits is a single instruction.
    u32 weight_lo[KILN_WALK_BINS];
    u32 weight_hi[KILN_WALK_BINS];
    u64 before;  // the amount of the keys above the chosen prefix
    int chosen;
    u32 chosen_count;
    u32 list_len;
    u64 found;
};

// Adds w to bin b's weight. The low halves' additions carry exactly as often as their sum overflows, in any
// order, so the two halves hold the exact u64 sum (which the fixed point keeps below 2^63).
__device__ __forceinline__ void add_bin_weight(WalkState& s, int b, u64 w) {
    const u32 lo = (u32)w;
    const u32 before = atomicAdd(&s.weight_lo[b], lo);
    const u32 hi = (u32)(w >> 32) + (before + lo < before ? 1u : 0u);
    if (hi) atomicAdd(&s.weight_hi[b], hi);
}
__device__ __forceinline__ u64 bin_weight(const WalkState& s, int b) {
    return ((u64)s.weight_hi[b] << 32) | s.weight_lo[b];
}
__device__ __forceinline__ void clear_bin(WalkState& s, int b) {
    s.count[b] = 0;
    s.weight_lo[b] = 0;
    s.weight_hi[b] = 0;
}

// Warp 0 picks the bin (of `bins`, scanned from the top) where before + running amount first crosses
// `target` (>= when `inclusive`, else >); the amount is a count, or a weight when `weighted`. If nothing
// crosses (only for a target at the total), the lowest bin with an amount, as the CPU then takes the last
// candidate with weight.
__device__ void choose_bin(WalkState& s, int bins, bool weighted, u64 target, bool inclusive) {
    if (threadIdx.x >= 32) return;
    const int lane = threadIdx.x, per = bins / 32, top = bins - 1 - lane * per;
    u64 sum = 0;
    int lowest = -1;
    for (int j = 0; j < per; ++j) {
        const int b = top - j;
        const u64 a = weighted ? bin_weight(s, b) : (u64)s.count[b];
        sum += a;
        if (a > 0) lowest = b;
    }
    u64 incl = sum;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const u64 y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
    const u64 base = s.before + incl - sum;
    const u64 end = base + sum;
    const bool crosses = sum > 0 && (inclusive ? end >= target : end > target);
    const unsigned crossing = __ballot_sync(0xffffffffu, crosses);
    const unsigned nonempty = __ballot_sync(0xffffffffu, lowest >= 0);
    if (!nonempty) {  // nothing left in play: cannot happen for a walk over candidates, but stay defined
        if (lane == 0) { s.chosen = 0; s.chosen_count = 0; }
        return;
    }
    const int owner = crossing ? __ffs(crossing) - 1 : 31 - __clz(nonempty);
    if (lane != owner) return;
    u64 acc = base, chosen_before = base;
    int chosen = -1;
    for (int j = 0; j < per; ++j) {
        const int b = top - j;
        const u64 a = weighted ? bin_weight(s, b) : (u64)s.count[b];
        if (a > 0) {
            chosen = b;
            chosen_before = acc;
            if (crossing && (inclusive ? acc + a >= target : acc + a > target)) break;
        }
        acc += a;
    }
    s.chosen = chosen;
    s.before = chosen_before;
    s.chosen_count = s.count[chosen];
}

// Returns the key, among those >= `floor`, that the walk lands on: with `weighted` false the `target`-th
// largest (counts, inclusive); with it true the first in descending order at which the running weight
// crosses `target`. `weights[i]` is key i's fixed-point weight; `list_keys`/`list_weights` hold room for
// N entries.
__device__ u64 radix_walk(const float* row, const u64* weights, int N, u64 floor, bool weighted, u64 target,
                          bool inclusive, u64* list_keys, u64* list_weights, WalkState& s) {
    __syncthreads();  // the previous walk's results have been read
    if (threadIdx.x == 0) { s.before = 0; s.list_len = 0; }
    for (int b = threadIdx.x; b < KILN_WALK_BINS; b += blockDim.x) clear_bin(s, b);
    __syncthreads();
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        const u64 k = order_key(row[i], i);
        if (k < floor) continue;
        const int bin = (int)(k >> 53);
        atomicAdd(&s.count[bin], 1u);
        if (weighted) add_bin_weight(s, bin, weights[i]);
    }
    __syncthreads();
    choose_bin(s, KILN_WALK_BINS, weighted, target, inclusive);
    __syncthreads();
    u64 prefix = (u64)s.chosen << 53, mask = (u64)0x7ff << 53;
    const bool single = s.chosen_count == 1;
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        const u64 k = order_key(row[i], i);
        if (k < floor || (k & mask) != prefix) continue;
        if (single) {
            s.found = k;
        } else {
            const u32 at = atomicAdd(&s.list_len, 1u);
            list_keys[at] = k;
            list_weights[at] = weighted ? weights[i] : 0;
        }
    }
    __syncthreads();
    if (single) return s.found;
    const u32 len = s.list_len;
    for (int pass = 0; pass < 5; ++pass) {
        // Bits 42..52, 31..41, 20..30, 9..19, then 0..8.
        const int sh = pass < 4 ? 42 - 11 * pass : 0;
        const int bins = pass < 4 ? KILN_WALK_BINS : 512;
        for (int b = threadIdx.x; b < bins; b += blockDim.x) clear_bin(s, b);
        __syncthreads();
        for (u32 j = threadIdx.x; j < len; j += blockDim.x) {
            const u64 k = list_keys[j];
            if ((k & mask) != prefix) continue;
            const int bin = (int)((k >> sh) & (u64)(bins - 1));
            atomicAdd(&s.count[bin], 1u);
            if (weighted) add_bin_weight(s, bin, list_weights[j]);
        }
        __syncthreads();
        choose_bin(s, bins, weighted, target, inclusive);
        __syncthreads();
        prefix |= (u64)s.chosen << sh;
        mask |= (u64)(bins - 1) << sh;
        if (sh == 0) break;
        if (s.chosen_count == 1) {
            for (u32 j = threadIdx.x; j < len; j += blockDim.x) {
                if ((list_keys[j] & mask) == prefix) s.found = list_keys[j];
            }
            __syncthreads();
            return s.found;
        }
    }
    return prefix;
}

__device__ __forceinline__ u64 block_sum_u64(u64 v, u64* scratch) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    u64 total = 0;
    for (int w = 0; w < warps; ++w) total += scratch[w];
    return total;
}

// Draws the next token from one row of logits: softmax(logits / temperature) truncated to the top_k
// (0: all) most likely, then to the shortest prefix with mass >= top_p, picked by the uniform u in [0, 1).
// One block (1024 threads) for the row; `scratch` holds 3 * N u64 (weights, then the walk's list).
extern "C" __global__ void __launch_bounds__(1024) kiln_sample_f32(const float* row, int N, float temperature,
                                                                   int top_k, float top_p, double u, int* out,
                                                                   int* error, u64* scratch) { KILN_PDL_ENTRY();
    __shared__ u64 scratch_u[32];
    __shared__ WalkState s;
    u64* weights = scratch;
    u64* list_keys = scratch + N;
    u64* list_weights = scratch + 2 * (i64)N;
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
    // Fixed point with room for N weights of at most 1 (the top token's) in 63 bits.
    const double one = ldexp(1.0, 62 - (32 - __clz(N)));
    // Top-k: the k-th key is the lowest candidate.
    u64 floor = 0;
    if (top_k > 0 && top_k < N) {
        floor = radix_walk(row, weights, N, 0, false, (u64)top_k, true, list_keys, list_weights, s);
    }
    // The weights, as the CPU computes them (exp(l / t - l_max / t) in f64), then in fixed point.
    u64 total = 0;
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        const float v = row[i];
        const u64 w = order_key(v, i) >= floor ? (u64)(exp((double)v / t - max_scaled) * one + 0.5) : 0;
        weights[i] = w;
        total += w;
    }
    total = block_sum_u64(total, scratch_u);
    // Top-p: the first key at which the mass reaches top_p becomes the lowest candidate.
    if (top_p < 1.0f) {
        const u64 target = (u64)ceil((double)top_p * (double)total);
        floor = radix_walk(row, weights, N, floor, true, target, true, list_keys, list_weights, s);
        total = 0;
        for (int i = threadIdx.x; i < N; i += blockDim.x) {
            if (order_key(row[i], i) >= floor) total += weights[i];
        }
        total = block_sum_u64(total, scratch_u);
    }
    const u64 target = (u64)(u * (double)total);
    const u64 pick = radix_walk(row, weights, N, floor, true, target, false, list_keys, list_weights, s);
    if (threadIdx.x == 0) out[0] = key_id(pick);
}
