// Choosing the next token on the device, so that only token ids cross to the host: the greedy argmax of
// every logits row, and a draw with temperature, top-k and top-p from one row.
//
// Both follow the CPU sampler (kiln_runtime::decoding::sampling) rule for rule: candidates are ordered by
// descending logit with ties to the lower id; top-k keeps the first k, top-p the shortest prefix whose mass
// reaches p, and the draw picks the first candidate whose cumulative weight exceeds u * total for the
// uniform u the host drew from its seeded generator. Weights are exp(l / t - l_max / t) in f64, as on the
// CPU, summed in fixed point (see the radix walk), so a draw differs from the CPU's only when u (or the
// top-p mass) falls within N * 2^-46 of a boundary between two candidates (2e-9 at 128k tokens at worst,
// about 1e-12 typically), and the same inputs always give the same draw.
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
// (CudaExecutor::decode_run), so the GPU does not idle while the host reads back and launches.
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
// target. The first digit is taken over the whole row by a grid of blocks (kiln_sample_hist_f32, which
// merges the blocks' histograms in the sampler's state), whose chosen bin's keys another grid compacts
// into a list (kiln_sample_compact_f32); one block then walks the remaining digits over that list
// (kiln_sample_finish_f32) and stops as soon as one key is left.
//
// Weights are summed in fixed point (u64, `frac_bits` fractional bits, as many as the vocabulary leaves
// room for: 45 for 128k tokens), so every sum is exact and the draw does not depend on the order of the
// atomic adds. A weight below 2^-frac_bits of the top token's counts as 0, which moves at most N * 2^-46 of
// probability; boundaries move by at most N * 2^-46 of the total relative to the CPU's f64 sums.
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

// A draw from one row of logits: softmax(logits / temperature) truncated to the top_k (0: all) most likely,
// then to the shortest prefix with mass >= top_p, picked by the uniform u in [0, 1). The runtime queues it
// as a sequence of launches (kiln-runtime's cuda/choose.rs, `launch_sample`):
//   prepare                     the row's largest key and whether the CPU would refuse it
//   hist, compact, finish       top-k (a count walk), when 0 < top_k < N
//   hist, compact, finish       top-p (a weight walk; its hist computes the weights), when top_p < 1
//   hist, compact, finish       the pick (a weight walk; its hist computes the weights if top-p did not)
// Each walk leaves the lowest candidate in `floor` for the next one; the last finish writes the token.
// The grid kernels take KILN_SAMPLE_SLICE logits a block (four a thread), so that one draw reads the row
// with every multiprocessor instead of one block's threads walking it again and again.
//
// The state lives in device scratch (KILN_SAMPLE_STATE_BYTES, then 3 * N u64: weights, list keys, list
// weights). What a draw accumulates (the histogram, the total, the largest key, the flags, the floor, the
// list's length, the ticket counter) is zero between draws: the runtime allocates the scratch zeroed (and
// zeroes it again when it fails to queue a whole draw), every hist's last block clears the histogram and the
// total it consumed, and the last finish clears the rest, also after a refused row. The fields a walk's hist
// sets for its compaction and finish (target, before, prefix) are written before they are read.
#define KILN_SAMPLE_THREADS 256
#define KILN_SAMPLE_SLICE 1024
static_assert(KILN_SAMPLE_SLICE == 4 * KILN_SAMPLE_THREADS, "a block's threads take four logits each");
#define KILN_SAMPLE_STATE_BYTES 24640
#define KILN_SAMPLE_FINISH_THREADS 1024
struct SampleState {
    u32 count[KILN_WALK_BINS];   // the first digit's histogram over the whole row, this walk
    u64 weight[KILN_WALK_BINS];
    u64 top;                     // the row's largest order key (atomicMax of the blocks')
    u64 floor;                   // candidates are the keys >= floor (0: every key)
    u64 total;                   // the candidates' weights summed by this walk's hist blocks
    u64 target;                  // the walk's target and the amount above its chosen first digit
    u64 before;
    u64 prefix;                  // the chosen first digit, in place (bits 53..63)
    u32 flags;                   // KILN_SAMPLE_BAD: a NaN or +inf logit; KILN_SAMPLE_FINITE: some logit above -inf
    u32 tickets;                 // the hist blocks' ticket counter (the last ticket wraps it to zero)
    u32 list_len;                // keys the compaction listed
};  // padded to a multiple of 8 bytes
static_assert(sizeof(SampleState) == KILN_SAMPLE_STATE_BYTES, "the runtime sizes the state with this number");
#define KILN_SAMPLE_BAD 1u
#define KILN_SAMPLE_FINITE 2u

// A row the CPU sampler refuses (a NaN or +inf logit, or nothing above -inf): every later launch of the draw
// skips its work, and the last one reports the error.
__device__ __forceinline__ bool refused(const SampleState* st) {
    const u32 f = __ldcg(&st->flags);
    return (f & KILN_SAMPLE_BAD) || !(f & KILN_SAMPLE_FINITE);
}

// This thread's four consecutive logits of the block's slice, from i0 on (one 16-byte load where the row
// allows it); entries past the row are -inf, and callers skip them.
__device__ __forceinline__ void load_slice(const float* row, int N, float (&v)[4], int& i0) {
    i0 = blockIdx.x * KILN_SAMPLE_SLICE + 4 * threadIdx.x;
    if ((((u64)row) & 15) == 0 && i0 + 3 < N) {
        const float4 f = *(const float4*)(row + i0);
        v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
    } else {
#pragma unroll
        for (int c = 0; c < 4; ++c) v[c] = i0 + c < N ? row[i0 + c] : -__int_as_float(0x7f800000);
    }
}

extern "C" __global__ void __launch_bounds__(KILN_SAMPLE_THREADS)
    kiln_sample_prepare_f32(const float* row, int N, SampleState* st) {
    KILN_PDL_ENTRY();
    __shared__ u64 scratch[32];
    float v[4];
    int i0;
    load_slice(row, N, v, i0);
    u64 best = 0;
    int bad = 0, finite = 0;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
        if (i0 + c >= N) continue;
        bad |= bad_logit(v[c]);
        finite |= v[c] != -__int_as_float(0x7f800000);
        const u64 k = order_key(v[c], i0 + c);
        best = k > best ? k : best;
    }
    bad = __syncthreads_or(bad);
    finite = __syncthreads_or(finite);
    best = block_max_u64(best, scratch);
    if (threadIdx.x == 0) {
        atomicMax(&st->top, best);
        const u32 f = (bad ? KILN_SAMPLE_BAD : 0u) | (finite ? KILN_SAMPLE_FINITE : 0u);
        if (f) atomicOr(&st->flags, f);
    }
}

// The walk's targets (`target_kind`): the k-th key by count (top-k), ceil(fraction * total) (top-p), or
// floor(fraction * total) for the uniform `fraction` (the pick).
#define KILN_SAMPLE_TARGET_COUNT 0
#define KILN_SAMPLE_TARGET_MASS 1
#define KILN_SAMPLE_TARGET_PICK 2

// The first digit of a walk over the keys >= st->floor: each block histograms its slice (counts, and weights
// when `weighted`), computing the weights first when `compute_weights` (exp(l / t - l_max / t) in f64, as
// the CPU does, then in fixed point; 0 below the floor) and storing them for the later launches. The
// blocks add their histograms and weight sums into the state; the last block to finish picks the bin where
// the target is crossed (choose_bin, as one block would over the whole row) and clears what it consumed.
extern "C" __global__ void __launch_bounds__(KILN_SAMPLE_THREADS)
    kiln_sample_hist_f32(const float* row, int N, float temperature, int compute_weights, int weighted,
                         int inclusive, int target_kind, long long count_target, double fraction, SampleState* st,
                         u64* weights) {
    KILN_PDL_ENTRY();
    __shared__ WalkState s;
    __shared__ u64 scratch[32];
    __shared__ bool last;
    const bool skip = refused(st);
    for (int b = threadIdx.x; b < KILN_WALK_BINS; b += blockDim.x) clear_bin(s, b);
    __syncthreads();
    u64 total = 0;
    if (!skip) {
        const u64 floor = __ldcg(&st->floor);
        float v[4];
        int i0;
        load_slice(row, N, v, i0);
        const u64 top = __ldcg(&st->top);
        const double t = (double)temperature;
        const double max_scaled = compute_weights ? (double)row[key_id(top)] / t : 0.0;
        // Fixed point with room for N weights of at most 1 (the top token's) in 63 bits.
        const double one = ldexp(1.0, 62 - (32 - __clz(N)));
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const int i = i0 + c;
            if (i >= N) continue;
            const u64 k = order_key(v[c], i);
            u64 w = 0;
            if (compute_weights) {
                w = k >= floor ? (u64)(exp((double)v[c] / t - max_scaled) * one + 0.5) : 0;
                weights[i] = w;
            } else if (weighted && k >= floor) {
                w = weights[i];
            }
            if (k < floor) continue;
            const int bin = (int)(k >> 53);
            atomicAdd(&s.count[bin], 1u);
            if (weighted) {
                add_bin_weight(s, bin, w);
                total += w;
            }
        }
    }
    __syncthreads();
    if (!skip) {
        for (int b = threadIdx.x; b < KILN_WALK_BINS; b += blockDim.x) {
            if (s.count[b] == 0) continue;
            atomicAdd(&st->count[b], s.count[b]);
            const u64 w = bin_weight(s, b);
            if (w) atomicAdd((unsigned long long*)&st->weight[b], (unsigned long long)w);
        }
    }
    // Each thread's additions are visible device-wide before the block takes its ticket (after the barrier
    // in block_sum_u64), so the last block reads the whole histogram.
    __threadfence();
    total = block_sum_u64(total, scratch);
    if (threadIdx.x == 0) {
        if (!skip && total) atomicAdd((unsigned long long*)&st->total, (unsigned long long)total);
        __threadfence();
        // atomicInc stores 0 when it hands out the last ticket, so the counter is ready for the next launch.
        last = atomicInc(&st->tickets, gridDim.x - 1) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    if (skip) return;
    // The last block: the merged histogram (from L2: other blocks added to it) into its own shared state.
    for (int b = threadIdx.x; b < KILN_WALK_BINS; b += blockDim.x) {
        s.count[b] = __ldcg(&st->count[b]);
        const u64 w = __ldcg((const unsigned long long*)&st->weight[b]);
        s.weight_lo[b] = (u32)w;
        s.weight_hi[b] = (u32)(w >> 32);
    }
    const u64 all = __ldcg((const unsigned long long*)&st->total);
    u64 target = (u64)count_target;
    if (target_kind == KILN_SAMPLE_TARGET_MASS) target = (u64)ceil(fraction * (double)all);
    if (target_kind == KILN_SAMPLE_TARGET_PICK) target = (u64)(fraction * (double)all);
    if (threadIdx.x == 0) s.before = 0;
    __syncthreads();
    choose_bin(s, KILN_WALK_BINS, weighted, target, inclusive);
    __syncthreads();
    if (threadIdx.x == 0) {
        st->target = target;
        st->before = s.before;
        st->prefix = (u64)s.chosen << 53;
        st->total = 0;
    }
    for (int b = threadIdx.x; b < KILN_WALK_BINS; b += blockDim.x) {
        st->count[b] = 0;
        st->weight[b] = 0;
    }
}

// Lists the keys >= floor whose first digit is the chosen one (with their weights when `weighted`): for
// each of its four logits a thread may keep, one atomic per warp reserves the warp's places. The order of the list is not fixed, and nothing depends on
// it: the walk over it sums exact integers and ends on a unique key.
extern "C" __global__ void __launch_bounds__(KILN_SAMPLE_THREADS)
    kiln_sample_compact_f32(const float* row, int N, int weighted, SampleState* st, const u64* weights,
                            u64* list_keys, u64* list_weights) {
    KILN_PDL_ENTRY();
    if (refused(st)) return;
    const u64 floor = __ldcg(&st->floor), prefix = __ldcg(&st->prefix), mask = (u64)0x7ff << 53;
    float v[4];
    int i0;
    load_slice(row, N, v, i0);
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
        const int i = i0 + c;
        const u64 k = i < N ? order_key(v[c], i) : 0;
        const bool keep = i < N && k >= floor && (k & mask) == prefix;
        const unsigned ballot = __ballot_sync(0xffffffffu, keep);
        if (!ballot) continue;
        u32 base = 0;
        if (lane == __ffs(ballot) - 1) base = atomicAdd(&st->list_len, (u32)__popc(ballot));
        base = __shfl_sync(0xffffffffu, base, __ffs(ballot) - 1);
        if (keep) {
            const u32 at = base + __popc(ballot & ((1u << lane) - 1u));
            list_keys[at] = k;
            list_weights[at] = weighted ? weights[i] : 0;
        }
    }
}

// One block walks the remaining digits (bits 42..52, 31..41, 20..30, 9..19, then 0..8) over the listed keys
// and ends on the walk's key. Not `last`: it becomes the next walk's floor. `last`: its id is the drawn token,
// written to `out` (0 and the error for a refused row) and, with `feed_ids`, fed to the next decode step on the
// device as the one-row argmax does; the state is cleared for the next draw.
extern "C" __global__ void __launch_bounds__(KILN_SAMPLE_FINISH_THREADS)
    kiln_sample_finish_f32(int weighted, int inclusive, int last, SampleState* st, const u64* list_keys,
                           const u64* list_weights, int* out, int* error, i64* feed_ids, i64* feed_positions,
                           int* feed_step) {
    KILN_PDL_ENTRY();
    __shared__ WalkState s;
    const bool skip = refused(st);
    u64 result = 0;
    if (!skip) {
        const u32 len = __ldcg(&st->list_len);
        const u64 target = __ldcg(&st->target);
        u64 prefix = __ldcg(&st->prefix), mask = (u64)0x7ff << 53;
        if (threadIdx.x == 0) s.before = __ldcg(&st->before);
        bool done = false;
        if (len == 1) {
            result = __ldcg(&list_keys[0]);
            done = true;
        }
        for (int pass = 0; pass < 5 && !done; ++pass) {
            const int sh = pass < 4 ? 42 - 11 * pass : 0;
            const int bins = pass < 4 ? KILN_WALK_BINS : 512;
            for (int b = threadIdx.x; b < bins; b += blockDim.x) clear_bin(s, b);
            __syncthreads();
            for (u32 j = threadIdx.x; j < len; j += blockDim.x) {
                const u64 k = __ldcg(&list_keys[j]);
                if ((k & mask) != prefix) continue;
                const int bin = (int)((k >> sh) & (u64)(bins - 1));
                atomicAdd(&s.count[bin], 1u);
                if (weighted) add_bin_weight(s, bin, __ldcg(&list_weights[j]));
            }
            __syncthreads();
            choose_bin(s, bins, weighted, target, inclusive);
            __syncthreads();
            prefix |= (u64)s.chosen << sh;
            mask |= (u64)(bins - 1) << sh;
            if (sh == 0) {
                result = prefix;
                done = true;
            } else if (s.chosen_count == 1) {
                for (u32 j = threadIdx.x; j < len; j += blockDim.x) {
                    const u64 k = __ldcg(&list_keys[j]);
                    if ((k & mask) == prefix) s.found = k;
                }
                __syncthreads();
                result = s.found;
                done = true;
            }
        }
    }
    __syncthreads();  // every thread has read the state
    if (threadIdx.x != 0) return;
    st->list_len = 0;
    if (!last) {
        st->floor = result;
        return;
    }
    if (skip) {
        out[0] = 0;
        report_error(error, KILN_ERROR_LOGITS);
    } else {
        const int id = key_id(result);
        out[0] = id;
        if (feed_ids) {
            feed_ids[0] = id;
            feed_positions[0] += 1;
            feed_step[0] += 1;
        }
    }
    st->top = 0;
    st->floor = 0;
    st->flags = 0;
}
