// Microbenchmark of session 24 (bench/gpu-decode.md, section "The norm's weights staged after the wait"), not part of
// kiln: nvcc -O3 -arch=sm_90 -o /tmp/pdl pdl-wait-with-loads-in-flight.cu && /tmp/pdl (an H200 took 2-4 s).
// Does griddepcontrol.wait return before the thread's own outstanding loads have arrived?
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
    __syncthreads();
    if (threadIdx.x == 0) end[blockIdx.x] = now();
}
// mode 0: loads before the wait; 1: loads after the wait; 2: no loads
__global__ void __launch_bounds__(256, 2) secondary(const uint4* w, int mode, unsigned long long* rec, float* sink) {
    unsigned long long t0 = now();
    uint4 r[8];
    const uint4* p = w + (size_t)blockIdx.x * 256 * 8 + threadIdx.x;
    if (mode == 0) {
#pragma unroll
        for (int u = 0; u < 8; ++u) r[u] = __ldg(p + 256 * u);
    }
    unsigned long long t1 = now();
    asm volatile("griddepcontrol.wait;" ::: "memory");
    unsigned long long t2 = now();
    if (mode == 1) {
#pragma unroll
        for (int u = 0; u < 8; ++u) r[u] = __ldg(p + 256 * u);
    }
    float s = 0;
    if (mode != 2) {
#pragma unroll
        for (int u = 0; u < 8; ++u) s += __int_as_float(r[u].x ^ r[u].y ^ r[u].z ^ r[u].w);
    }
    unsigned long long t3 = now();
    if (s == 1.2345f) sink[0] = s;
    __syncthreads();
    unsigned long long t4 = now();
    if (threadIdx.x == 0) { rec[blockIdx.x * 5 + 0] = t0; rec[blockIdx.x * 5 + 1] = t1; rec[blockIdx.x * 5 + 2] = t2; rec[blockIdx.x * 5 + 3] = t3; rec[blockIdx.x * 5 + 4] = t4; }
}
int main() {
    int sms; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    const int blocks = 2 * sms;
    size_t region = (size_t)blocks * 256 * 8 * 16;  // bytes one launch reads
    const int regions = 64;
    uint4* w; cudaMalloc(&w, region * regions);
    cudaMemset(w, 1, region * regions);
    unsigned long long *end, *rec; float* sink;
    cudaMalloc(&end, 8 * 64); cudaMalloc(&rec, 8 * 5 * blocks); cudaMalloc(&sink, 4);
    std::vector<unsigned long long> h(5 * blocks), e(1);
    const char* names[] = {"loads before wait", "loads after wait", "no loads"};
    for (int spin_us : {2, 20}) for (int mode = 0; mode < 3; ++mode) {
        double d_first = 0, d_last = 0, d_loaded = 0, d_done = 0; int n = 0;
        for (int it = 0; it < 40; ++it) {
            const uint4* wr = (const uint4*)((char*)w + region * (it % regions));
            primary<<<1, 32>>>(spin_us * 1000ull, end);
            cudaLaunchConfig_t cfg = {};
            cfg.gridDim = blocks; cfg.blockDim = 256;
            cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization; at[0].val.programmaticStreamSerializationAllowed = 1;
            cfg.attrs = at; cfg.numAttrs = 1;
            cudaLaunchKernelEx(&cfg, secondary, wr, mode, rec, sink);
            cudaDeviceSynchronize();
            cudaMemcpy(h.data(), rec, 8 * 5 * blocks, cudaMemcpyDeviceToHost);
            cudaMemcpy(e.data(), end, 8, cudaMemcpyDeviceToHost);
            if (it < 5) continue;
            unsigned long long first = ~0ull, last = 0, loaded = 0, done = 0;
            for (int b = 0; b < blocks; ++b) { first = std::min(first, h[5*b+2]); last = std::max(last, h[5*b+2]); loaded = std::max(loaded, h[5*b+3]); done = std::max(done, h[5*b+4]); }
            d_first += (double)first - e[0]; d_last += (double)last - e[0]; d_loaded += (double)loaded - e[0]; d_done += (double)done - e[0]; ++n;
        }
        printf("spin %2d us, %-18s: wait returns %.2f .. %.2f us after the primary's end; data used by %.2f; block done %.2f\n", spin_us, names[mode], d_first / n / 1e3, d_last / n / 1e3, d_loaded / n / 1e3, d_done / n / 1e3);
    }
    printf("err %s\n", cudaGetErrorString(cudaGetLastError()));
}
