// Microbenchmark of session 26 (bench/gpu-decode.md), not part of kiln:
//   nvcc -O3 -arch=sm_90 -o /tmp/cpa gemv-cp-async-ring.cu && /tmp/cpa
// Can a decode GEMV keep more weight bytes in flight than kiln_gemvp's two rounds in registers, without the
// registers? Here every lane copies its own 16-byte chunks of the coming columns into a ring of shared-memory
// stages with cp.async (no bulk copies, no barriers: a lane reads back only what it copied itself, after
// cp.async.wait_group), and keeps its part of x in registers. Compared with kiln_gemvp's pattern (a warp a column,
// the next column's chunks in registers, x in shared memory) on the Llama-1B decode shapes, in TB/s of weights.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)

// 16 bytes of weights into registers, evict-first in the L2 (kiln's load_weight_chunk).
__device__ __forceinline__ uint4 ld_weights(const uint4* p) {
    uint64_t policy;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    uint4 v;
    asm volatile("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p), "l"(policy));
    return v;
}
// 16 bytes of weights into shared memory, evict-first in the L2.
__device__ __forceinline__ void cp_weights(uint4* dst, const uint4* src) {
    uint64_t policy;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    const unsigned to = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"(to), "l"(src), "l"(policy) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

// Eight bf16 weights (a bf16 is the upper half of an f32) times eight x, in element order.
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

// Every shape here is CH = 8 chunks a lane a column: K = 2048 S for S warps a column.
#define CH 8

// kiln_gemvp's pattern, one warp a column (S = 1): the next column's chunks requested before this one is reduced;
// x staged in shared memory. Blocks of 8 warps take groups of 8 columns, striding by the grid.
__global__ void __launch_bounds__(256, 2) gemv_registers(const uint4* __restrict__ w, const float* __restrict__ xg,
                                                         int N, float* __restrict__ out) {
    constexpr int K = CH * 256;
    __shared__ float x[K];
    for (int i = threadIdx.x; i < K; i += 256) x[i] = xg[i];
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int groups = N / 8;
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

// The cp.async ring: W warps a block, S warps a column (W / S columns a group), D stages of one column a warp
// (D x 4 KB of shared memory a warp), x in registers (XREG) or in shared memory. Warp j-th column: group
// blockIdx.x + j gridDim.x. With S > 1 the column's warps add their sums through shared memory (block barriers).
template <int W, int S, int D, int MINB, bool XREG>
__global__ void __launch_bounds__(32 * W, MINB) gemv_ring(const uint4* __restrict__ w, const float* __restrict__ xg,
                                                          int N, float* __restrict__ out) {
    constexpr int K = CH * 256 * S;
    extern __shared__ uint4 smem[];
    __shared__ float red[W];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    constexpr int PER_BLOCK = W / S;
    const int slice = warp % S, colw = warp / S, vlane = slice * 32 + lane;
    const int groups = N / PER_BLOCK;
    const int mine = groups > (int)blockIdx.x ? (groups - 1 - (int)blockIdx.x) / (int)gridDim.x + 1 : 0;
    uint4* ring = smem + (size_t)warp * D * CH * 32 + lane;
    auto issue = [&](int j) {
        if (j < mine) {
            const int col = ((int)blockIdx.x + j * (int)gridDim.x) * PER_BLOCK + colw;
            const uint4* row = w + (size_t)col * (K / 8) + vlane;
            uint4* dst = ring + (j % D) * CH * 32;
#pragma unroll
            for (int u = 0; u < CH; ++u) cp_weights(dst + 32 * u, row + 32 * S * u);
        }
        cp_commit();  // an empty group past the end keeps wait_group's count uniform
    };
#pragma unroll
    for (int d = 0; d < D; ++d) issue(d);
    float xr[XREG ? 8 * CH : 1];
    float* xs = (float*)(smem + (size_t)W * D * CH * 32);
    if (XREG) {
#pragma unroll
        for (int u = 0; u < CH; ++u) {
            const float4* p = (const float4*)(xg + 8 * (vlane + 32 * S * u));
            const float4 a = p[0], b = p[1];
            xr[8 * u] = a.x; xr[8 * u + 1] = a.y; xr[8 * u + 2] = a.z; xr[8 * u + 3] = a.w;
            xr[8 * u + 4] = b.x; xr[8 * u + 5] = b.y; xr[8 * u + 6] = b.z; xr[8 * u + 7] = b.w;
        }
    } else {
        for (int i = threadIdx.x; i < K; i += 32 * W) xs[i] = xg[i];
        __syncthreads();
    }
    for (int j = 0; j < mine; ++j) {
        cp_wait<D - 1>();
        const uint4* src = ring + (j % D) * CH * 32;
        float acc = 0.0f;
#pragma unroll
        for (int u = 0; u < CH; ++u) {
            const uint4 v = src[32 * u];
            acc += dot8(v, XREG ? xr + 8 * u : xs + 8 * (vlane + 32 * S * u));
        }
        issue(j + D);
        acc = warp_sum(acc);
        const int col = ((int)blockIdx.x + j * (int)gridDim.x) * PER_BLOCK + colw;
        if (S > 1) {
            if (lane == 0) red[warp] = acc;
            __syncthreads();
            if (slice == 0 && lane == 0) {
                float v = red[warp];
                for (int s = 1; s < S; ++s) v += red[warp + s];
                out[col] = v;
            }
            __syncthreads();
        } else if (lane == 0) {
            out[col] = acc;
        }
    }
    cp_wait<0>();
}

int main() {
    int sms;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("%s, %d SMs\n", prop.name, sms);
    // Regions visited in turn so that no run finds its weights in the L2.
    const size_t region = 640ull << 20;
    const int regions = 6;
    char* buf;
    CHECK(cudaMalloc(&buf, region * regions));
    CHECK(cudaMemset(buf, 0x3c, region * regions));
    float *x, *out;
    CHECK(cudaMalloc(&x, 8192 * 4));
    CHECK(cudaMemset(x, 0, 8192 * 4));
    CHECK(cudaMalloc(&out, 1 << 20));
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    int it = 0;
    char name[160];
    auto measure = [&](double bytes, int reps, auto launch) -> int {
        std::vector<float> ms;
        for (int r = 0; r < reps + 2; ++r) {
            const uint4* p = (const uint4*)(buf + region * (it++ % regions));
            cudaEventRecord(e0);
            launch(p);
            cudaEventRecord(e1);
            cudaEventSynchronize(e1);
            float t;
            cudaEventElapsedTime(&t, e0, e1);
            if (r >= 2) ms.push_back(t);
        }
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) { printf("%-70s error: %s\n", name, cudaGetErrorString(e)); return 1; }
        std::sort(ms.begin(), ms.end());
        const float med = ms[ms.size() / 2];
        printf("%-70s %8.2f us  %6.3f TB/s\n", name, med * 1e3, bytes / (med * 1e-3) / 1e12);
        return 0;
    };
    struct Shape { const char* what; int N; int S; };
    const Shape shapes[] = {{"1B logits 128256x2048", 128256, 1}, {"1B gate/up 16384x2048", 16384, 1},
                            {"1B q/k/v 3072x2048", 3072, 1}, {"1B down 2048x8192", 2048, 4}};
    for (const Shape& s : shapes) {
        const double bytes = (double)s.N * CH * 256 * s.S * 2;
        if (s.S == 1) {
            snprintf(name, sizeof name, "%s: registers (kiln_gemvp's pattern), 2 blocks/SM", s.what);
            const int N = s.N / 8 * 8;
            measure(bytes, 20, [&](const uint4* p) { gemv_registers<<<2 * sms, 256>>>(p, x, N, out); });
        }
        auto ring = [&](auto kernel, int W, int S, int D, bool xreg, const char* note) {
            const int smem = W * D * CH * 32 * 16 + (xreg ? 0 : CH * 256 * S * 4);
            if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess) return;
            int per_sm = 0;
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 32 * W, smem);
            cudaFuncAttributes attr;
            cudaFuncGetAttributes(&attr, kernel);
            snprintf(name, sizeof name, "%s: ring W%d D%d%s %dKB, %d/SM, %d regs%s", s.what, W, D, xreg ? " xreg" : "",
                     smem >> 10, per_sm, attr.numRegs, note);
            if (per_sm == 0) { printf("%s: does not fit\n", name); return; }
            const int N = s.N / (W / S) * (W / S);
            measure(bytes, 20, [&](const uint4* p) { kernel<<<per_sm * sms, 32 * W, smem>>>(p, x, N, out); });
        };
        if (s.S == 1) {
            ring(gemv_ring<8, 1, 2, 2, true>, 8, 1, 2, true, "");
            ring(gemv_ring<8, 1, 3, 2, true>, 8, 1, 3, true, "");
            ring(gemv_ring<8, 1, 2, 2, false>, 8, 1, 2, false, "");
            ring(gemv_ring<8, 1, 4, 1, true>, 8, 1, 4, true, "");
            ring(gemv_ring<8, 1, 6, 1, true>, 8, 1, 6, true, "");
            ring(gemv_ring<16, 1, 2, 1, true>, 16, 1, 2, true, "");
            ring(gemv_ring<16, 1, 3, 1, true>, 16, 1, 3, true, "");
            ring(gemv_ring<4, 1, 4, 3, true>, 4, 1, 4, true, "");
            ring(gemv_ring<4, 1, 3, 4, true>, 4, 1, 3, true, "");
        } else {
            ring(gemv_ring<8, 4, 2, 2, true>, 8, 4, 2, true, "");
            ring(gemv_ring<8, 4, 3, 2, true>, 8, 4, 3, true, "");
            ring(gemv_ring<8, 4, 4, 1, true>, 8, 4, 4, true, "");
            ring(gemv_ring<8, 4, 6, 1, true>, 8, 4, 6, true, "");
            ring(gemv_ring<16, 4, 3, 1, true>, 16, 4, 3, true, "");
        }
    }
    return 0;
}
