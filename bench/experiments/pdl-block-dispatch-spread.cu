// Microbenchmark of session 25 (bench/gpu-decode.md), not part of kiln:
//   nvcc -O3 -arch=sm_90 -o /tmp/bd pdl-block-dispatch-spread.cu && /tmp/bd
// When a kernel's blocks fill every multiprocessor and exit at about the same moment, how long does the next
// (programmatically launched) kernel take to get all its blocks resident, and does that depend on how many
// blocks it has? In the decode step's trace, the gate/up linear's last blocks pass their wait about 2.2 us
// after its first, right after the o projection, whose blocks all exit together.
#include <cstdio>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>

__device__ __forceinline__ unsigned long long now() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

// Fills the multiprocessors (its dynamic shared memory leaves no room for a block of `secondary`), lets the
// dependent grid launch at once, and exits at `deadline` plus `stagger` ns times its block's share of the grid.
__global__ void primary(unsigned long long deadline, unsigned long long stagger, unsigned long long* exit_at) {
    asm volatile("griddepcontrol.launch_dependents;");
    const unsigned long long until = deadline + stagger * blockIdx.x / gridDim.x;
    while (now() < until) {}
    __syncthreads();
    if (threadIdx.x == 0) exit_at[blockIdx.x] = now();
}

// Records when each block became resident and when its wait returned.
__global__ void secondary(unsigned long long* rec) {
    const unsigned long long t0 = now();
    asm volatile("griddepcontrol.wait;" ::: "memory");
    const unsigned long long t1 = now();
    if (threadIdx.x == 0) {
        rec[2 * blockIdx.x] = t0;
        rec[2 * blockIdx.x + 1] = t1;
    }
}

int main() {
    int sms;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("%s, %d SMs\n", prop.name, sms);
    const int primary_smem = 110 * 1024, secondary_smem = 16 * 1024;
    cudaFuncSetAttribute(primary, cudaFuncAttributeMaxDynamicSharedMemorySize, primary_smem);
    cudaFuncSetAttribute(secondary, cudaFuncAttributeMaxDynamicSharedMemorySize, secondary_smem);
    unsigned long long *exit_at, *rec, *d_now;
    cudaMalloc(&exit_at, 8 * 4096);
    cudaMalloc(&rec, 16 * 4096);
    cudaMalloc(&d_now, 8);
    struct Case { int blocks, threads; unsigned long long stagger; };
    std::vector<Case> cases;
    for (unsigned long long stagger : {0ull, 2000ull})
        for (Case c : {Case{2 * sms, 256, 0}, Case{sms, 512, 0}, Case{4 * sms, 128, 0}, Case{2 * sms, 128, 0}})
            cases.push_back(Case{c.blocks, c.threads, stagger});
    printf("%-44s %10s %10s %10s %10s\n", "secondary grid (primary: 2 blocks/SM exiting together or over 2 us)",
           "first in", "last in", "last wait", "spread");
    for (const Case& c : cases) {
        std::vector<double> first, last, lastwait;
        for (int it = 0; it < 30; ++it) {
            // A deadline 200 us ahead of the device's clock (a one-block primary with a past deadline just
            // records the time).
            primary<<<1, 1>>>(0, 0, d_now);
            unsigned long long t;
            cudaMemcpy(&t, d_now, 8, cudaMemcpyDeviceToHost);
            const unsigned long long deadline = t + 200000;
            primary<<<2 * sms, 256, primary_smem>>>(deadline, c.stagger, exit_at);
            cudaLaunchConfig_t cfg = {};
            cfg.gridDim = dim3(c.blocks);
            cfg.blockDim = dim3(c.threads);
            cfg.dynamicSmemBytes = secondary_smem;
            cudaLaunchAttribute attr;
            attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
            attr.val.programmaticStreamSerializationAllowed = 1;
            cfg.attrs = &attr;
            cfg.numAttrs = 1;
            cudaLaunchKernelEx(&cfg, secondary, rec);
            cudaError_t e = cudaDeviceSynchronize();
            if (e != cudaSuccess) { printf("error %s\n", cudaGetErrorString(e)); return 1; }
            std::vector<unsigned long long> ex(2 * sms), r(2 * c.blocks);
            cudaMemcpy(ex.data(), exit_at, 8 * ex.size(), cudaMemcpyDeviceToHost);
            cudaMemcpy(r.data(), rec, 8 * r.size(), cudaMemcpyDeviceToHost);
            const unsigned long long last_exit = *std::max_element(ex.begin(), ex.end());
            unsigned long long in0 = ~0ull, in1 = 0, w1 = 0;
            for (int b = 0; b < c.blocks; ++b) {
                in0 = std::min(in0, r[2 * b]);
                in1 = std::max(in1, r[2 * b]);
                w1 = std::max(w1, r[2 * b + 1]);
            }
            if (it < 5) continue;
            first.push_back(((double)in0 - (double)last_exit) / 1e3);
            last.push_back(((double)in1 - (double)last_exit) / 1e3);
            lastwait.push_back(((double)w1 - (double)last_exit) / 1e3);
        }
        auto med = [](std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; };
        char name[96];
        snprintf(name, sizeof name, "%d blocks x %d threads, primary stagger %llu ns", c.blocks, c.threads, c.stagger);
        printf("%-44s %10.2f %10.2f %10.2f %10.2f\n", name, med(first), med(last), med(lastwait), med(last) - med(first));
    }
    printf("(us after the primary's last block exited; medians of 25 launches)\n");
    return 0;
}
