// Microbenchmark of session 25 (bench/gpu-decode.md), not part of kiln:
//   nvcc -O3 -arch=sm_90 -o /tmp/rb read-bandwidth-patterns.cu && /tmp/rb
// How fast can a kernel only *read* device memory, against the device-to-device copy rate the roofline uses, and
// how close do GEMV-shaped access patterns (a warp streaming one weight row of K bf16, the next row's loads in
// flight, as kiln_gemvp does) come to it? Every variant reads the same bytes from buffers far larger than the L2.
#include <cstdio>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>
#include <cuda_bf16.h>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)

enum Hint { PLAIN = 0, EVICT_FIRST = 1, NO_ALLOC_256B = 2 };

template <int HINT>
__device__ __forceinline__ uint4 ld16(const uint4* p) {
    uint4 v;
    if (HINT == EVICT_FIRST) {
        uint64_t policy;
        asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
        asm volatile("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p), "l"(policy));
    } else if (HINT == NO_ALLOC_256B) {
        asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    } else {
        asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    }
    return v;
}

// Streaming read: each thread keeps U 16-byte loads in flight, the grid strides over the buffer.
template <int U, int HINT>
__global__ void __launch_bounds__(256) stream_read(const uint4* __restrict__ p, size_t n, unsigned* sink) {
    unsigned acc = 0;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i0 = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i0 < n; i0 += stride * U) {
        uint4 r[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const size_t i = i0 + stride * u;
            r[u] = i < n ? ld16<HINT>(p + i) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) acc ^= r[u].x ^ r[u].y ^ r[u].z ^ r[u].w;
    }
    if (acc == 0x12345678u) sink[0] = acc;
}

__device__ __forceinline__ float dot8(uint4 w, const float* x) {
    const __nv_bfloat162* h = (const __nv_bfloat162*)&w;
    float s = 0.0f;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const float2 f = __bfloat1622float2(h[e]);
        s = fmaf(f.x, x[2 * e], s);
        s = fmaf(f.y, x[2 * e + 1], s);
    }
    return s;
}

// x (K floats) copied to shared memory by the block's 256 threads.
__device__ __forceinline__ void stage_x(float* x, const float* __restrict__ xg, int K) {
    for (int i = threadIdx.x; i < K; i += 256) x[i] = xg[i];
    __syncthreads();
}

// kiln_gemvp's shape: a warp computes one column (a weight row of K bf16 = K/8 chunks, CH = K/256 chunks a lane, one
// round) and requests the next column's chunks before it reduces the current one. Blocks of 8 warps take groups of
// 8 consecutive columns, striding over the groups by the grid (CONTIG: each block takes one contiguous range of
// groups instead). x (K floats) is staged in shared memory.
template <int CH, int HINT, bool CONTIG>
__global__ void __launch_bounds__(256, 2) gemv_rows(const uint4* __restrict__ w, const float* __restrict__ xg, int N,
                                                    float* __restrict__ out) {
    constexpr int K = CH * 256;
    __shared__ float x[K];
    stage_x(x, xg, K);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int groups = N / 8;
    int g0, g1, gs;
    if (CONTIG) {
        g0 = (int)((long long)groups * blockIdx.x / gridDim.x);
        g1 = (int)((long long)groups * (blockIdx.x + 1) / gridDim.x);
        gs = 1;
    } else {
        g0 = blockIdx.x; g1 = groups; gs = gridDim.x;
    }
    uint4 cur[CH], nxt[CH];
    {
        const uint4* row = w + (size_t)(g0 * 8 + warp) * (K / 8);
#pragma unroll
        for (int u = 0; u < CH; ++u) cur[u] = g0 < g1 ? ld16<HINT>(row + lane + 32 * u) : make_uint4(0, 0, 0, 0);
    }
    for (int g = g0; g < g1; g += gs) {
        const int gn = g + gs;
        const uint4* row = w + (size_t)(gn * 8 + warp) * (K / 8);
#pragma unroll
        for (int u = 0; u < CH; ++u) nxt[u] = gn < g1 ? ld16<HINT>(row + lane + 32 * u) : make_uint4(0, 0, 0, 0);
        float acc = 0.0f;
#pragma unroll
        for (int u = 0; u < CH; ++u) acc += dot8(cur[u], x + 8 * (lane + 32 * u));
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (lane == 0) out[g * 8 + warp] = acc;
#pragma unroll
        for (int u = 0; u < CH; ++u) cur[u] = nxt[u];
    }
}

// The same with two columns a warp at once (both rows' chunks in flight, then the next two rows').
template <int CH, int HINT>
__global__ void __launch_bounds__(256, 2) gemv_rows2(const uint4* __restrict__ w, const float* __restrict__ xg, int N,
                                                     float* __restrict__ out) {
    constexpr int K = CH * 256;
    __shared__ float x[K];
    stage_x(x, xg, K);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int groups = N / 16;
    uint4 cur[2][CH], nxt[2][CH];
    const int g0 = blockIdx.x, gs = gridDim.x;
#pragma unroll
    for (int c = 0; c < 2; ++c) {
        const uint4* row = w + (size_t)(g0 * 16 + 2 * warp + c) * (K / 8);
#pragma unroll
        for (int u = 0; u < CH; ++u) cur[c][u] = g0 < groups ? ld16<HINT>(row + lane + 32 * u) : make_uint4(0, 0, 0, 0);
    }
    for (int g = g0; g < groups; g += gs) {
        const int gn = g + gs;
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            const uint4* row = w + (size_t)(gn * 16 + 2 * warp + c) * (K / 8);
#pragma unroll
            for (int u = 0; u < CH; ++u) nxt[c][u] = gn < groups ? ld16<HINT>(row + lane + 32 * u) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            float acc = 0.0f;
#pragma unroll
            for (int u = 0; u < CH; ++u) acc += dot8(cur[c][u], x + 8 * (lane + 32 * u));
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
            if (lane == 0) out[g * 16 + 2 * warp + c] = acc;
        }
#pragma unroll
        for (int c = 0; c < 2; ++c)
#pragma unroll
            for (int u = 0; u < CH; ++u) cur[c][u] = nxt[c][u];
    }
}

// A ring of weight pieces a warp: a column's row of K = P * CHP * 256 bf16 is P pieces of CHP chunks a lane (lane l's
// chunks of piece j: l + 32 (j CHP + u), so a lane meets its chunks in the order kiln_gemvp does). DEPTH pieces are
// in flight: the warp consumes a piece, then requests the one DEPTH pieces later into its slot. MINB: blocks a
// multiprocessor (the register cap). Columns as gemv_rows: groups of 8, blocks striding over the groups.
template <int CHP, int P, int DEPTH, int MINB, int HINT>
__global__ void __launch_bounds__(256, MINB) gemv_ring(const uint4* __restrict__ w, const float* __restrict__ xg, int N,
                                                       float* __restrict__ out) {
    constexpr int K = P * CHP * 256;
    __shared__ float x[K];
    stage_x(x, xg, K);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int groups = N / 8;
    // Pieces of this warp: q -> column (blockIdx.x + (q / P) gridDim.x) 8 + warp, piece q % P.
    const int mine = groups > (int)blockIdx.x ? (groups - 1 - (int)blockIdx.x) / (int)gridDim.x + 1 : 0;
    const int pieces = mine * P;
    auto piece_ptr = [&](int q) {
        const int col = ((int)blockIdx.x + (q / P) * (int)gridDim.x) * 8 + warp;
        return w + (size_t)col * (K / 8) + (size_t)(q % P) * CHP * 32 + lane;
    };
    uint4 r[DEPTH][CHP];
#pragma unroll
    for (int d = 0; d < DEPTH; ++d)
#pragma unroll
        for (int u = 0; u < CHP; ++u) r[d][u] = d < pieces ? ld16<HINT>(piece_ptr(d) + 32 * u) : make_uint4(0, 0, 0, 0);
    float acc = 0.0f;
    for (int q0 = 0; q0 < pieces; q0 += DEPTH) {
#pragma unroll
        for (int d = 0; d < DEPTH; ++d) {
            const int q = q0 + d;
            if (q >= pieces) break;
            const int j = q % P;
#pragma unroll
            for (int u = 0; u < CHP; ++u) acc += dot8(r[d][u], x + 8 * (lane + 32 * (j * CHP + u)));
            const int qn = q + DEPTH;
#pragma unroll
            for (int u = 0; u < CHP; ++u) r[d][u] = qn < pieces ? ld16<HINT>(piece_ptr(qn) + 32 * u) : make_uint4(0, 0, 0, 0);
            if (j == P - 1) {
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
                if (lane == 0) out[((int)blockIdx.x + (q / P) * (int)gridDim.x) * 8 + warp] = acc;
                acc = 0.0f;
            }
        }
    }
}

int main() {
    int sms;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("%s, %d SMs\n", prop.name, sms);
    // Eight 1 GiB regions, visited in turn so that no run finds its bytes in the L2.
    const size_t region = 1ull << 30;
    const int regions = 8;
    char* buf;
    CHECK(cudaMalloc(&buf, region * regions));
    CHECK(cudaMemset(buf, 0x3c, region * regions));
    float *x, *out;
    unsigned* sink;
    CHECK(cudaMalloc(&x, 8192 * 4));
    CHECK(cudaMemset(x, 0, 8192 * 4));
    CHECK(cudaMalloc(&out, 1 << 24));
    CHECK(cudaMalloc(&sink, 4));
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    int it = 0;
    auto next_region = [&]() { return buf + region * (it++ % regions); };
    // Median over `reps` runs of `launch(ptr)`, as TB/s of `bytes`.
    auto measure = [&](const char* name, double bytes, int reps, auto launch) {
        std::vector<float> ms;
        for (int r = 0; r < reps + 2; ++r) {
            char* p = next_region();
            cudaEventRecord(e0);
            launch(p);
            cudaEventRecord(e1);
            cudaEventSynchronize(e1);
            float t;
            cudaEventElapsedTime(&t, e0, e1);
            if (r >= 2) ms.push_back(t);
        }
        std::sort(ms.begin(), ms.end());
        const float med = ms[ms.size() / 2];
        printf("%-64s %8.1f us  %6.3f TB/s\n", name, med * 1e3, bytes / (med * 1e-3) / 1e12);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) printf("  error: %s\n", cudaGetErrorString(e));
    };
    const size_t half = region / 2;
    measure("cudaMemcpy D2D 512 MiB (read + write)", 2.0 * half, 20,
            [&](char* p) { cudaMemcpyAsync(p + half, p, half, cudaMemcpyDeviceToDevice); });
    const size_t n16 = region / 16;
    char name[128];
#define STREAM(U, H, BPS)                                                                                     \
    snprintf(name, sizeof name, "stream read 1 GiB, %d loads/thread, hint %d, %d blocks/SM", U, H, BPS);   \
    measure(name, (double)region, 10, [&](char* p) { stream_read<U, H><<<sms * BPS, 256>>>((const uint4*)p, n16, sink); });
    STREAM(4, 0, 4) STREAM(8, 0, 2) STREAM(8, 0, 4) STREAM(16, 0, 2) STREAM(8, 1, 4) STREAM(8, 2, 4)
    // GEMV shapes: the 1B logits (128256 x 2048 bf16), the 1B gate/up (16384 x 2048), the 8B logits (128256 x 4096).
    struct Shape { const char* what; int N; int CH; };
    for (Shape s : {Shape{"1B logits 128256x2048", 128256, 8}, Shape{"1B gate/up 16384x2048", 16384, 8},
                    Shape{"1B q/k/v 3072x2048", 3072, 8}, Shape{"8B logits 128256x4096", 128256, 16}}) {
        const double bytes = (double)s.N * s.CH * 256 * 2;
        const int N = s.N / 16 * 16;
        auto run = [&](const char* variant, auto kernel, int grid) {
            snprintf(name, sizeof name, "%s: %s", s.what, variant);
            measure(name, bytes, 20, [&](char* p) { kernel<<<grid, 256>>>((const uint4*)p, x, N, out); });
        };
        if (s.CH == 8) {
            run("rows, evict-first (kiln_gemvp)", gemv_rows<8, 1, false>, 2 * sms);
            run("ring 8x1 depth 2, 2 blocks/SM", gemv_ring<8, 1, 2, 2, 1>, 2 * sms);
            run("ring 8x1 depth 3, 2 blocks/SM", gemv_ring<8, 1, 3, 2, 1>, 2 * sms);
            run("ring 8x1 depth 2, 3 blocks/SM", gemv_ring<8, 1, 2, 3, 1>, 3 * sms);
            run("ring 4x2 depth 3, 3 blocks/SM", gemv_ring<4, 2, 3, 3, 1>, 3 * sms);
            run("ring 4x2 depth 4, 3 blocks/SM", gemv_ring<4, 2, 4, 3, 1>, 3 * sms);
            run("ring 4x2 depth 4, 2 blocks/SM", gemv_ring<4, 2, 4, 2, 1>, 2 * sms);
            run("ring 4x2 depth 2, 4 blocks/SM", gemv_ring<4, 2, 2, 4, 1>, 4 * sms);
            run("ring 4x2 depth 3, 4 blocks/SM", gemv_ring<4, 2, 3, 4, 1>, 4 * sms);
            run("ring 2x4 depth 4, 4 blocks/SM", gemv_ring<2, 4, 4, 4, 1>, 4 * sms);
            run("ring 2x4 depth 6, 3 blocks/SM", gemv_ring<2, 4, 6, 3, 1>, 3 * sms);
            run("ring 4x2 depth 6, 2 blocks/SM", gemv_ring<4, 2, 6, 2, 1>, 2 * sms);
            run("rows, no hint", gemv_rows<8, 0, false>, 2 * sms);
            run("rows, evict-first, contiguous ranges", gemv_rows<8, 1, true>, 2 * sms);
            run("two rows a warp, evict-first", gemv_rows2<8, 1>, 2 * sms);
        } else {
            run("rows, evict-first (one warp a row)", gemv_rows<16, 1, false>, 2 * sms);
            run("rows, no hint", gemv_rows<16, 0, false>, 2 * sms);
        }
    }
    return 0;
}
