// Microbenchmark of session 24 (bench/gpu-decode.md, section "The norm's weights staged after the wait"), not part of
// kiln: nvcc -O3 -arch=sm_90 -o /tmp/pdl pdl-x-staging-loads-vs-bulk-copy.cu && /tmp/pdl (an H200 took 2-4 s).
// After griddepcontrol.wait, how long does a block's read of x (8 KB, in L2) take when the block's weight loads
// (issued before the wait) are still in flight: plain loads vs one bulk copy (TMA) into shared memory.
#include <cstdio>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>
__device__ __forceinline__ unsigned long long now() { unsigned long long t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t; }
__global__ void primary(unsigned long long spin, unsigned long long* end) {
    asm volatile("griddepcontrol.launch_dependents;");
    unsigned long long t0 = now();
    while (now() - t0 < spin) {}
    if (threadIdx.x == 0) end[blockIdx.x] = now();
}
__device__ __forceinline__ uint4 ldw(const uint4* p) {
    unsigned long long policy; asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    uint4 v; asm volatile("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p), "l"(policy));
    return v;
}
// xmode 0: x by plain float4 loads (all threads); 1: one bulk copy (thread 0) + mbarrier; weights: 0 none, 1 before the wait
__global__ void __launch_bounds__(256, 2) secondary(const uint4* w, const float* x, int K, int xmode, int weights, unsigned long long* rec, float* sink) {
    extern __shared__ __align__(128) float xs[];
    __shared__ __align__(8) unsigned long long bar;
    unsigned long long t0 = now();
    uint4 r[8];
    const uint4* p = w + (size_t)blockIdx.x * 256 * 8 + threadIdx.x;
    if (weights) {
#pragma unroll
        for (int u = 0; u < 8; ++u) r[u] = ldw(p + 256 * u);
    }
    unsigned int sbar = (unsigned int)__cvta_generic_to_shared(&bar);
    if (xmode == 1 && threadIdx.x == 0) {
        asm volatile("mbarrier.init.shared.b64 [%0], 1;" :: "r"(sbar));
        asm volatile("fence.mbarrier_init.release.cluster;");
    }
    __syncthreads();
    asm volatile("griddepcontrol.wait;" ::: "memory");
    unsigned long long t1 = now();
    if (xmode == 0) {
        for (int i = threadIdx.x; i < K / 4; i += 256) ((float4*)xs)[i] = ((const float4*)x)[i];
        __syncthreads();
    } else {
        if (threadIdx.x == 0) {
            unsigned int sx = (unsigned int)__cvta_generic_to_shared(xs);
            asm volatile("mbarrier.arrive.expect_tx.shared.b64 _, [%0], %1;" :: "r"(sbar), "r"(K * 4) : "memory");
            asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" :: "r"(sx), "l"(x), "r"(K * 4), "r"(sbar) : "memory");
        }
        unsigned int done = 0;
        while (!done) asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared.b64 p, [%1], 0; selp.u32 %0, 1, 0, p; }" : "=r"(done) : "r"(sbar) : "memory");
    }
    float s = xs[(threadIdx.x * 7) % K];
    unsigned long long t2 = now() + (s == 1.2345f);
    float q = 0;
    if (weights) {
#pragma unroll
        for (int u = 0; u < 8; ++u) q += __int_as_float(r[u].x ^ r[u].y ^ r[u].z ^ r[u].w);
    }
    unsigned long long t3 = now() + (q == 1.2345f);
    if (s + q == 1.2345f) sink[0] = s;
    __syncthreads();
    if (threadIdx.x == 0) { rec[blockIdx.x * 4 + 0] = t0; rec[blockIdx.x * 4 + 1] = t1; rec[blockIdx.x * 4 + 2] = t2; rec[blockIdx.x * 4 + 3] = t3; }
}
int main() {
    int sms; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    const int blocks = 2 * sms, K = 2048;
    size_t region = (size_t)blocks * 256 * 8 * 16;
    const int regions = 64;
    uint4* w; cudaMalloc(&w, region * regions); cudaMemset(w, 1, region * regions);
    float* x; cudaMalloc(&x, K * 4); cudaMemset(x, 0, K * 4);
    unsigned long long *end, *rec; float* sink;
    cudaMalloc(&end, 8 * 64); cudaMalloc(&rec, 8 * 4 * blocks); cudaMalloc(&sink, 4);
    cudaFuncSetAttribute(secondary, cudaFuncAttributeMaxDynamicSharedMemorySize, K * 4);
    std::vector<unsigned long long> h(4 * blocks), e(1);
    for (int spin_us : {4, 5, 6, 8, 20}) for (int weights = 0; weights < 2; ++weights) for (int xmode = 0; xmode < 2; ++xmode) {
        double d[4] = {0, 0, 0, 0}, lo = 0; int n = 0;
        for (int it = 0; it < 45; ++it) {
            const uint4* wr = (const uint4*)((char*)w + region * (it % regions));
            primary<<<1, 32>>>(spin_us * 1000ull, end);
            cudaLaunchConfig_t cfg = {};
            cfg.gridDim = blocks; cfg.blockDim = 256; cfg.dynamicSmemBytes = K * 4;
            cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization; at[0].val.programmaticStreamSerializationAllowed = 1;
            cfg.attrs = at; cfg.numAttrs = 1;
            cudaLaunchKernelEx(&cfg, secondary, wr, (const float*)x, K, xmode, weights, rec, sink);
            cudaDeviceSynchronize();
            cudaMemcpy(h.data(), rec, 8 * 4 * blocks, cudaMemcpyDeviceToHost);
            cudaMemcpy(e.data(), end, 8, cudaMemcpyDeviceToHost);
            if (it < 5) continue;
            unsigned long long m[4] = {0, 0, 0, 0}, first_entry = ~0ull;
            for (int b = 0; b < blocks; ++b) { for (int k = 0; k < 4; ++k) m[k] = std::max(m[k], h[4*b+k]); first_entry = std::min(first_entry, h[4*b]); }
            for (int k = 0; k < 4; ++k) d[k] += (double)m[k] - e[0];
            lo += (double)first_entry - e[0];
            ++n;
        }
        printf("spin %2d us, weights %d, x by %-5s: us after the primary's end (last block): entered %.2f (first %.2f), waited %.2f, x in smem %.2f, weights used %.2f\n",
               spin_us, weights, xmode ? "bulk" : "loads", d[0] / n / 1e3, lo / n / 1e3, d[1] / n / 1e3, d[2] / n / 1e3, d[3] / n / 1e3);
    }
    printf("err %s\n", cudaGetErrorString(cudaGetLastError()));
}
