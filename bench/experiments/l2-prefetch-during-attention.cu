// Microbenchmark of session 27 (bench/gpu-decode.md), not part of kiln:
//   nvcc -O3 -arch=sm_90 -o /tmp/l2p l2-prefetch-during-attention.cu && /tmp/l2p
// A decode layer's attention is a chain of L2 latencies during which the memory bandwidth is idle. Could the
// weights of the linears after it (the o projection, then gate/up) be asked into the L2 during that time, and
// would the GEMVs then run shorter? Modelled here on the Llama-1B shapes: a latency kernel (a chain of dependent
// loads from a buffer that stays in the L2, about as long as the 1B attention), then o (2048 x 2048 bf16), then
// gate/up (16384 x 2048), each a GEMV in kiln_gemvp's pattern with evict-first weight loads. Variants differ in
// who issues `cp.async.bulk.prefetch.L2` for the first F MB of those weights, and when.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)

__device__ __forceinline__ uint4 ld_weights(const uint4* p) {
    uint64_t policy;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    uint4 v;
    asm volatile("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p), "l"(policy));
    return v;
}
__device__ __forceinline__ float dot8(uint4 w, const float* x) {
    const unsigned h[4] = {w.x, w.y, w.z, w.w};
    float s = 0.0f;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        s = fmaf(__uint_as_float(h[e] << 16), x[2 * e], s);
        s = fmaf(__uint_as_float(h[e] & 0xffff0000u), x[2 * e + 1], s);
    }
    return s;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Share `part` of `parts` of [p, p + bytes) asked into the L2 in 64 KB pieces by one thread.
__device__ __forceinline__ void prefetch_share(const char* p, uint64_t bytes, uint64_t part, uint64_t parts) {
    constexpr uint64_t PIECE = 64 << 10;
    for (uint64_t k = part; k * PIECE < bytes; k += parts) {
        const uint32_t size = (uint32_t)min(PIECE, bytes - k * PIECE);
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + k * PIECE), "r"(size) : "memory");
    }
}

// K = 2048: a lane holds 8 chunks of 16 bytes of a column. kiln_gemvp's pattern: x staged in shared memory,
// the next column group's chunks in registers while this one is reduced.
__global__ void __launch_bounds__(256, 2) gemv(const uint4* __restrict__ w, const float* __restrict__ xg, int N,
                                               float* __restrict__ out) {
    constexpr int K = 2048, CH = 8;
    __shared__ float x[K];
    for (int i = threadIdx.x; i < K; i += 256) x[i] = xg[i];
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, groups = N / 8;
    uint4 cur[CH], nxt[CH];
#pragma unroll
    for (int u = 0; u < CH; ++u)
        cur[u] = (int)blockIdx.x < groups ? ld_weights(w + (size_t)(blockIdx.x * 8 + warp) * (K / 8) + lane + 32 * u)
                                          : make_uint4(0, 0, 0, 0);
    for (int g = blockIdx.x; g < groups; g += gridDim.x) {
        const int gn = g + gridDim.x;
#pragma unroll
        for (int u = 0; u < CH; ++u)
            nxt[u] = gn < groups ? ld_weights(w + (size_t)(gn * 8 + warp) * (K / 8) + lane + 32 * u) : make_uint4(0, 0, 0, 0);
        float acc = 0.0f;
#pragma unroll
        for (int u = 0; u < CH; ++u) acc += dot8(cur[u], x + 8 * (lane + 32 * u));
        acc = warp_sum(acc);
        if (lane == 0) out[g * 8 + warp] = acc;
#pragma unroll
        for (int u = 0; u < CH; ++u) cur[u] = nxt[u];
    }
}

// The attention's stand-in: every thread follows `steps` dependent loads through a table that stays in the L2.
// With `prefetch_bytes`, thread 0 of every block first asks the L2 for its share of the ranges (the split blocks
// issuing the prefetch themselves, without blocks of their own).
__global__ void __launch_bounds__(256) latency_chain(const unsigned* __restrict__ table, unsigned mask, int steps,
                                                     unsigned* __restrict__ sink, const char* pa, uint64_t na,
                                                     const char* pb, uint64_t nb) {
    if (threadIdx.x == 0 && (na | nb)) {
        prefetch_share(pa, na, blockIdx.x, gridDim.x);
        prefetch_share(pb, nb, blockIdx.x, gridDim.x);
    }
    unsigned i = (blockIdx.x * 256 + threadIdx.x) * 97u & mask;
    for (int s = 0; s < steps; ++s) i = __ldcg(table + i);
    if (i == 0xffffffffu) sink[0] = i;
}

// A separate prefetch grid (`blocks` blocks of 32 threads, every thread a share).
__global__ void prefetch_grid(const char* pa, uint64_t na, const char* pb, uint64_t nb) {
    const uint64_t part = blockIdx.x * 32 + threadIdx.x, parts = gridDim.x * 32;
    prefetch_share(pa, na, part, parts);
    prefetch_share(pb, nb, part, parts);
}

int main() {
    int sms;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("%s, %d SMs, L2 %d MB\n", prop.name, sms, prop.l2CacheSize >> 20);
    const size_t o_bytes = 2048ull * 2048 * 2;
    // Regions visited in turn so that no run finds its weights in the L2 from an earlier run.
    const size_t region = 256ull << 20;
    const int regions = 8;
    char* buf;
    CHECK(cudaMalloc(&buf, region * regions));
    CHECK(cudaMemset(buf, 0x3c, region * regions));
    float *x, *out;
    CHECK(cudaMalloc(&x, 8192 * 4));
    CHECK(cudaMemset(x, 0, 8192 * 4));
    CHECK(cudaMalloc(&out, 1 << 20));
    // A 1 MB chase table (a random cycle), L2-resident.
    const unsigned entries = 1 << 18, mask = entries - 1;
    std::vector<unsigned> perm(entries), next(entries);
    for (unsigned i = 0; i < entries; ++i) perm[i] = i;
    uint64_t r = 88172645463325252ull;
    for (unsigned i = entries - 1; i > 0; --i) {
        r ^= r << 13; r ^= r >> 7; r ^= r << 17;
        std::swap(perm[i], perm[r % (i + 1)]);
    }
    for (unsigned i = 0; i < entries; ++i) next[perm[i]] = perm[(i + 1) % entries];
    unsigned *table, *sink;
    CHECK(cudaMalloc(&table, entries * 4));
    CHECK(cudaMemcpy(table, next.data(), entries * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMalloc(&sink, 4));
    cudaStream_t s0, s1;
    CHECK(cudaStreamCreateWithFlags(&s0, cudaStreamNonBlocking));
    CHECK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
    cudaEvent_t e0, e1, e2, e3, fork;
    for (cudaEvent_t* ev : {&e0, &e1, &e2, &e3, &fork}) CHECK(cudaEventCreate(ev));
    int it = 0;
    const int chain_blocks = 192, steps = 24;  // 32 heads x 6 splits at 384 tokens of context
    // variant: 0 none, 1 the chain's blocks prefetch, 2 a separate grid beside the chain (stream s1, 32 blocks),
    // 3 the separate grid of 1 block, 4 prefetch then wait 20 us (everything resident) before o.
    auto run = [&](int variant, uint64_t mb, float* t_chain, float* t_o, float* t_gu) {
        char* base = buf + region * (it++ % regions);
        const char *o = base, *gu = base + o_bytes;
        const uint64_t fa = std::min<uint64_t>(mb << 20, o_bytes), fb = (mb << 20) - fa;
        cudaEventRecord(e0, s0);
        if (variant == 2 || variant == 3) {
            cudaEventRecord(fork, s0);
            cudaStreamWaitEvent(s1, fork, 0);
            prefetch_grid<<<variant == 2 ? 32 : 1, 32, 0, s1>>>(o, fa, gu, fb);
        }
        if (variant == 4) {
            prefetch_grid<<<32, 32, 0, s0>>>(o, fa, gu, fb);
            latency_chain<<<chain_blocks, 256, 0, s0>>>(table, mask, steps * 4, sink, nullptr, 0, nullptr, 0);
        }
        if (variant == 1)
            latency_chain<<<chain_blocks, 256, 0, s0>>>(table, mask, steps, sink, o, fa, gu, fb);
        else
            latency_chain<<<chain_blocks, 256, 0, s0>>>(table, mask, steps, sink, nullptr, 0, nullptr, 0);
        cudaEventRecord(e1, s0);
        gemv<<<2 * sms, 256, 0, s0>>>((const uint4*)o, x, 2048, out);
        cudaEventRecord(e2, s0);
        gemv<<<2 * sms, 256, 0, s0>>>((const uint4*)gu, x, 16384, out);
        cudaEventRecord(e3, s0);
        cudaEventSynchronize(e3);
        cudaEventElapsedTime(t_chain, e0, e1);
        cudaEventElapsedTime(t_o, e1, e2);
        cudaEventElapsedTime(t_gu, e2, e3);
    };
    const char* names[] = {"none", "chain blocks prefetch", "separate grid (32 blocks) beside the chain",
                           "separate grid (1 block) beside the chain", "prefetched long before (resident)"};
    printf("%-46s %5s %9s %9s %9s %9s\n", "variant", "MB", "chain us", "o us", "gu us", "total us");
    for (int variant : {0, 1, 2, 3, 4}) {
        for (uint64_t mb : {0, 8, 16, 24, 32}) {
            if ((variant == 0) != (mb == 0)) continue;
            std::vector<float> a, b, c, t;
            for (int rep = 0; rep < 25; ++rep) {
                float x1, x2, x3;
                run(variant, mb, &x1, &x2, &x3);
                if (rep < 3) continue;
                a.push_back(x1 * 1e3f); b.push_back(x2 * 1e3f); c.push_back(x3 * 1e3f); t.push_back((x1 + x2 + x3) * 1e3f);
            }
            for (auto* v : {&a, &b, &c, &t}) std::sort(v->begin(), v->end());
            const size_t m = a.size() / 2;
            printf("%-46s %5d %9.2f %9.2f %9.2f %9.2f\n", names[variant], (int)mb, a[m], b[m], c[m], t[m]);
        }
    }
    CHECK(cudaGetLastError());
    return 0;
}
