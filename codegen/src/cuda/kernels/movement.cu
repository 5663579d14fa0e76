// Data movement: embedding gathers and column slices (split along the last axis).

// out[t, :] = table[ids[t], :]; an id outside [0, V) writes zeros and records an error for the host.
template <typename T>
__device__ __forceinline__ void embedding_rows(const T* table, const i64* ids, T* out, int tokens, int V, int H,
                                               int* error) {
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (i64)tokens * H) return;
    const i64 t = idx / H, c = idx % H;
    const i64 id = ids[t];
    if (id < 0 || id >= V) {
        out[idx] = from_f32<T>(0.0f);
        report_error(error, KILN_ERROR_EMBEDDING_ID);
        return;
    }
    out[idx] = table[id * H + c];
}
#define KILN_EMBEDDING(XN, XT)                                                                                 \
    extern "C" __global__ void kiln_embedding_x##XN(const XT* table, const i64* ids, XT* out, int tokens, int V, \
                                                    int H, int* error) { KILN_PDL_ENTRY();                     \
        embedding_rows<XT>(table, ids, out, tokens, V, H, error);                                              \
    }
KILN_FOR_FLOAT_TYPES(KILN_EMBEDDING)

// out[r, c] = x[r, offset + c] for c < cols, with rows of `width` elements in x; any 2-, 4- or 8-byte type.
template <typename T>
__device__ __forceinline__ void slice_columns(const T* x, T* out, i64 rows, int width, int offset, int cols) {
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rows * cols) return;
    const i64 r = idx / cols, c = idx % cols;
    out[idx] = x[r * width + offset + c];
}
extern "C" __global__ void kiln_slice_columns_b2(const u16* x, u16* out, i64 rows, int width, int offset, int cols) { KILN_PDL_ENTRY();
    slice_columns<u16>(x, out, rows, width, offset, cols);
}
extern "C" __global__ void kiln_slice_columns_b4(const u32* x, u32* out, i64 rows, int width, int offset, int cols) { KILN_PDL_ENTRY();
    slice_columns<u32>(x, out, rows, width, offset, cols);
}
extern "C" __global__ void kiln_slice_columns_b8(const u64* x, u64* out, i64 rows, int width, int offset, int cols) { KILN_PDL_ENTRY();
    slice_columns<u64>(x, out, rows, width, offset, cols);
}

// Activations rounded to a weight's half-precision dtype, so that a prefill GEMM runs in cuBLAS with both
// operands in that dtype (accumulating in f32). A thread converts 8 values: two 16-byte loads and one 16-byte
// store where both buffers are 16-byte aligned (the arena's are), so that the launch streams at memory speed
// instead of issuing a 2-byte store per value (a 512 x 14336 conversion took 37 us that way on an H100).
template <typename H>
__device__ __forceinline__ void convert_f32_half(const float* x, H* y, i64 n) {
    const i64 i = ((i64)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i >= n) return;
    if (i + 8 <= n && (((u64)x | (u64)y) & 15) == 0) {
        const float4 a = *(const float4*)(x + i), b = *(const float4*)(x + i + 4);
        const float f[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        u32 w[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) w[j] = pack_half2<H>(f[2 * j], f[2 * j + 1]);
        *(uint4*)(y + i) = make_uint4(w[0], w[1], w[2], w[3]);
    } else {
        for (i64 j = i; j < min(i + 8, n); ++j) y[j] = from_f32<H>(x[j]);
    }
}
extern "C" __global__ void kiln_convert_f32_bf16(const float* x, bf16_t* y, i64 n) { KILN_PDL_ENTRY();
    convert_f32_half<bf16_t>(x, y, n);
}
extern "C" __global__ void kiln_convert_f32_f16(const float* x, f16_t* y, i64 n) { KILN_PDL_ENTRY();
    convert_f32_half<f16_t>(x, y, n);
}

// The epilogue of a cuBLAS linear: + bias[n], then the soft cap (0: none), over out[rows, N].
extern "C" __global__ void kiln_bias_softcap(float* out, const float* bias, i64 rows, int N, float softcap) { KILN_PDL_ENTRY();
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * N) return;
    float v = out[i];
    if (bias) v += bias[i % N];
    if (softcap > 0.0f) v = softcap * tanhf(v / softcap);
    out[i] = v;
}
