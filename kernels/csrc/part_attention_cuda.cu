// Part attention on CUDA: varlen group attention with fused gather/scatter, forward and backward.
// Framework-free (CUDA runtime only) so CI compile-checks it with plain `nvcc -c`.
//
// Legend: N_q / N_k tokens, H heads, D head dim, Dv value dim, G groups.
// Grids are (G, H, tiles over the largest group); a block whose tile lies past its group's end
// returns at once. Tiles are gathered from token order through the permutations into shared
// memory, and results are written straight back to token order (no permuted copies).
//
// Kernels:
//   fwd_mma   fp16/bf16, D = Dv in {64, 128}: flash-attention-2 forward on tensor cores (WMMA
//             16x16x16, fp32 accumulation), 4 warps x 16 query rows, 64-key tiles, online softmax.
//   fwd_fma   any dtype and head dim <= 256: one thread per query row on CUDA cores.
//   bwd_dkdv  one thread per key row: dK, dV over all the group's queries.
//   bwd_dq    one thread per query row: dQ over all the group's keys.
// The backward recomputes probabilities from the saved log-sum-exp and splits dK/dV and dQ into
// two kernels, so it needs no atomics and is deterministic.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <mma.h>

#include <type_traits>

#include "part_attention_cuda.h"

namespace {

constexpr float kNegInf = -INFINITY;

template <typename T>
__device__ __forceinline__ float to_f(T x);
template <>
__device__ __forceinline__ float to_f<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ float to_f<__half>(__half x) {
  return __half2float(x);
}
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_f<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// exp(a - b) where b may be -inf (an empty running max): 0 then, not NaN
__device__ __forceinline__ float exp_diff(float a, float b) { return b == kNegInf ? 0.f : __expf(a - b); }

struct Group {
  int q_begin, nq, k_begin, nk;
};

__device__ __forceinline__ Group group_of(const PgAttnArgs& a, int g) {
  Group gr;
  gr.q_begin = a.q_cu[g];
  gr.nq = a.q_cu[g + 1] - gr.q_begin;
  gr.k_begin = a.k_cu[g];
  gr.nk = a.k_cu[g + 1] - gr.k_begin;
  return gr;
}

// Copy rows [row0, row0 + n) of a group's keys (or values), head h, into smem[j * ld + d] as fp32.
template <typename T>
__device__ void gather_rows_f32(float* smem, int ld, const T* src, int64_t s0, int64_t s1, const int64_t* perm,
                                int row0, int n, int h, int dim) {
  for (int idx = threadIdx.x; idx < n * dim; idx += blockDim.x) {
    const int j = idx / dim, d = idx - j * dim;
    smem[j * ld + d] = to_f(src[perm[row0 + j] * s0 + h * s1 + d]);
  }
}

// ------------------------------------------------------------------------------------------------
// Forward on CUDA cores: one thread per query row.

constexpr int kFmaRows = 64;
constexpr int kFmaKeys = 32;

template <typename T>
__global__ void fwd_fma(PgAttnArgs a) {
  const int g = blockIdx.x, h = blockIdx.y;
  const Group gr = group_of(a, g);
  const int row0 = blockIdx.z * kFmaRows;
  if (row0 >= gr.nq) return;
  const int D = a.head_dim, Dv = a.value_dim, tid = threadIdx.x;
  extern __shared__ float smem[];
  float* Ks = smem;  // [kFmaKeys][D]
  float* Vs = Ks + kFmaKeys * D;  // [kFmaKeys][Dv]
  float* Qrow = Vs + kFmaKeys * Dv + tid * (D + 1);  // this thread's query, padded rows
  float* Orow = Vs + kFmaKeys * Dv + kFmaRows * (D + 1) + tid * (Dv + 1);

  const int r = row0 + tid;
  const bool active = r < gr.nq;
  const int64_t token = active ? a.q_perm[gr.q_begin + r] : 0;
  const T* q = static_cast<const T*>(a.q);
  for (int d = 0; d < D; ++d) Qrow[d] = active ? to_f(q[token * a.q_s0 + h * a.q_s1 + d]) * a.scale : 0.f;
  for (int d = 0; d < Dv; ++d) Orow[d] = 0.f;
  float m = kNegInf, l = 0.f;

  for (int k0 = 0; k0 < gr.nk; k0 += kFmaKeys) {
    const int nt = min(kFmaKeys, gr.nk - k0);
    __syncthreads();  // the previous tile is consumed
    gather_rows_f32(Ks, D, static_cast<const T*>(a.k), a.k_s0, a.k_s1, a.k_perm + gr.k_begin, k0, nt, h, D);
    gather_rows_f32(Vs, Dv, static_cast<const T*>(a.v), a.v_s0, a.v_s1, a.k_perm + gr.k_begin, k0, nt, h, Dv);
    __syncthreads();
    if (!active) continue;
    for (int j = 0; j < nt; ++j) {
      float s = 0.f;
      for (int d = 0; d < D; ++d) s += Qrow[d] * Ks[j * D + d];
      if (s > m) {
        const float alpha = exp_diff(m, s);
        l *= alpha;
        for (int d = 0; d < Dv; ++d) Orow[d] *= alpha;
        m = s;
      }
      const float p = __expf(s - m);
      l += p;
      for (int d = 0; d < Dv; ++d) Orow[d] += p * Vs[j * Dv + d];
    }
  }
  if (!active) return;
  T* out = static_cast<T*>(a.out) + (token * a.heads + h) * Dv;
  const float inv = l > 0.f ? 1.f / l : 0.f;
  for (int d = 0; d < Dv; ++d) out[d] = from_f<T>(Orow[d] * inv);
  a.lse[token * a.heads + h] = l > 0.f ? m + __logf(l) : kNegInf;
}

// ------------------------------------------------------------------------------------------------
// Forward on tensor cores (fp16 / bf16), flash-attention-2 style.

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define PG_HAS_BF16_MMA 1
#else
#define PG_HAS_BF16_MMA 0
#endif

constexpr int kMmaWarps = 4;
constexpr int kMmaRows = 16 * kMmaWarps;  // query rows per block
constexpr int kMmaKeys = 64;  // keys per tile
constexpr int kPadT = 8;  // 16-bit rows padded by 8 elements (WMMA ldm multiple of 8, fewer bank conflicts)
constexpr int kPadF = 4;  // fp32 rows padded by 4

template <typename T, int D>
struct MmaSmem {
  T q[kMmaRows][D + kPadT];
  T k[kMmaKeys][D + kPadT];
  T v[kMmaKeys][D + kPadT];
  float s[kMmaWarps][16][kMmaKeys + kPadF];
  T p[kMmaWarps][16][kMmaKeys + kPadT];
  float o[kMmaWarps][16][D + kPadF];
};

template <typename T, int D>
__global__ void __launch_bounds__(32 * kMmaWarps) fwd_mma(PgAttnArgs a) {
#if PG_HAS_BF16_MMA
  using namespace nvcuda;
  const int g = blockIdx.x, h = blockIdx.y;
  const Group gr = group_of(a, g);
  const int row0 = blockIdx.z * kMmaRows;
  if (row0 >= gr.nq) return;
  extern __shared__ __align__(128) unsigned char raw_smem[];
  auto& sm = *reinterpret_cast<MmaSmem<T, D>*>(raw_smem);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T zero = from_f<T>(0.f);
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);

  for (int idx = threadIdx.x; idx < kMmaRows * D; idx += blockDim.x) {  // gather this block's queries
    const int i = idx / D, d = idx - i * D;
    const int r = row0 + i;
    sm.q[i][d] = r < gr.nq ? q[a.q_perm[gr.q_begin + r] * a.q_s0 + h * a.q_s1 + d] : zero;
  }
  for (int idx = lane; idx < 16 * D; idx += 32) sm.o[warp][idx / D][idx % D] = 0.f;
  // lanes 2r and 2r+1 share warp row r: each keeps the row's running max and sum
  const int my_row = lane / 2, half = lane % 2;
  float m = kNegInf, l = 0.f;

  for (int k0 = 0; k0 < gr.nk; k0 += kMmaKeys) {
    const int nt = min(kMmaKeys, gr.nk - k0);
    __syncthreads();
    for (int idx = threadIdx.x; idx < kMmaKeys * D; idx += blockDim.x) {
      const int j = idx / D, d = idx - j * D;
      if (j < nt) {
        const int64_t t = a.k_perm[gr.k_begin + k0 + j];
        sm.k[j][d] = k[t * a.k_s0 + h * a.k_s1 + d];
        sm.v[j][d] = v[t * a.v_s0 + h * a.v_s1 + d];
      } else {
        sm.k[j][d] = zero;
        sm.v[j][d] = zero;
      }
    }
    __syncthreads();

    // S = Q K^T for this warp's 16 rows and the 64 keys
    for (int jb = 0; jb < kMmaKeys / 16; ++jb) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
      for (int kb = 0; kb < D / 16; ++kb) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, &sm.q[warp * 16][kb * 16], D + kPadT);
        wmma::load_matrix_sync(fb, &sm.k[jb * 16][kb * 16], D + kPadT);  // K^T, read column-major
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(&sm.s[warp][0][jb * 16], acc, kMmaKeys + kPadF, wmma::mem_row_major);
    }
    __syncwarp();

    // online softmax: each lane takes half of its row's 64 columns
    float* srow = sm.s[warp][my_row];
    float tile_max = kNegInf;
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      if (c < nt) tile_max = fmaxf(tile_max, srow[c] * a.scale);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);
    float sum = 0.f;
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      const float p = c < nt ? __expf(srow[c] * a.scale - m_new) : 0.f;
      sm.p[warp][my_row][c] = from_f<T>(p);
      sum += p;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    const float alpha = exp_diff(m, m_new);
    l = l * alpha + sum;
    m = m_new;
    for (int d = half * (D / 2); d < (half + 1) * (D / 2); ++d) sm.o[warp][my_row][d] *= alpha;
    __syncwarp();

    // O += P V
    for (int db = 0; db < D / 16; ++db) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, &sm.o[warp][0][db * 16], D + kPadF, wmma::mem_row_major);
      for (int jb = 0; jb < kMmaKeys / 16; ++jb) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, &sm.p[warp][0][jb * 16], kMmaKeys + kPadT);
        wmma::load_matrix_sync(fb, &sm.v[jb * 16][db * 16], D + kPadT);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(&sm.o[warp][0][db * 16], acc, D + kPadF, wmma::mem_row_major);
    }
    __syncwarp();
  }

  const int r = row0 + warp * 16 + my_row;
  if (r < gr.nq) {
    const int64_t token = a.q_perm[gr.q_begin + r];
    T* out = static_cast<T*>(a.out) + (token * a.heads + h) * D;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    for (int d = half * (D / 2); d < (half + 1) * (D / 2); ++d) out[d] = from_f<T>(sm.o[warp][my_row][d] * inv);
    if (half == 0) a.lse[token * a.heads + h] = l > 0.f ? m + __logf(l) : kNegInf;
  }
#else
  __trap();  // built for an architecture without bf16 tensor cores; the launcher never picks this
#endif
}

// ------------------------------------------------------------------------------------------------
// Backward on CUDA cores.

constexpr int kBwdRows = 32;  // threads (rows) per block
constexpr int kBwdTile = 32;  // rows of the other side per shared-memory tile

// dK, dV: one thread per key row, looping over the group's queries in tiles.
template <typename T>
__global__ void bwd_dkdv(PgAttnArgs a) {
  const int g = blockIdx.x, h = blockIdx.y;
  const Group gr = group_of(a, g);
  const int j0 = blockIdx.z * kBwdRows;
  if (j0 >= gr.nk || gr.nq == 0) return;
  const int D = a.head_dim, Dv = a.value_dim, tid = threadIdx.x;
  extern __shared__ float smem[];
  float* Qs = smem;  // [kBwdTile][D], scaled
  float* dOs = Qs + kBwdTile * D;  // [kBwdTile][Dv]
  float* Ls = dOs + kBwdTile * Dv;  // [kBwdTile]
  float* Dels = Ls + kBwdTile;  // [kBwdTile]
  float* base = Dels + kBwdTile;
  float* Krow = base + tid * (D + 1);
  float* Vrow = base + kBwdRows * (D + 1) + tid * (Dv + 1);
  float* dKrow = base + kBwdRows * (D + 1) + kBwdRows * (Dv + 1) + tid * (D + 1);
  float* dVrow = base + 2 * kBwdRows * (D + 1) + kBwdRows * (Dv + 1) + tid * (Dv + 1);

  const int j = j0 + tid;
  const bool active = j < gr.nk;
  const int64_t ktoken = active ? a.k_perm[gr.k_begin + j] : 0;
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  for (int d = 0; d < D; ++d) {
    Krow[d] = active ? to_f(k[ktoken * a.k_s0 + h * a.k_s1 + d]) : 0.f;
    dKrow[d] = 0.f;
  }
  for (int d = 0; d < Dv; ++d) {
    Vrow[d] = active ? to_f(v[ktoken * a.v_s0 + h * a.v_s1 + d]) : 0.f;
    dVrow[d] = 0.f;
  }
  const T* q = static_cast<const T*>(a.q);
  const T* dout = static_cast<const T*>(a.dout);
  const int64_t o_s0 = static_cast<int64_t>(a.heads) * Dv;

  for (int i0 = 0; i0 < gr.nq; i0 += kBwdTile) {
    const int nt = min(kBwdTile, gr.nq - i0);
    __syncthreads();
    for (int idx = tid; idx < nt * D; idx += blockDim.x) {
      const int i = idx / D, d = idx - i * D;
      Qs[i * D + d] = to_f(q[a.q_perm[gr.q_begin + i0 + i] * a.q_s0 + h * a.q_s1 + d]) * a.scale;
    }
    for (int idx = tid; idx < nt * Dv; idx += blockDim.x) {
      const int i = idx / Dv, d = idx - i * Dv;
      dOs[i * Dv + d] = to_f(dout[a.q_perm[gr.q_begin + i0 + i] * o_s0 + h * Dv + d]);
    }
    for (int i = tid; i < nt; i += blockDim.x) {
      const int64_t t = a.q_perm[gr.q_begin + i0 + i];
      Ls[i] = a.lse[t * a.heads + h];
      Dels[i] = a.delta[t * a.heads + h];
    }
    __syncthreads();
    if (!active) continue;
    for (int i = 0; i < nt; ++i) {
      float s = 0.f, dp = 0.f;
      for (int d = 0; d < D; ++d) s += Qs[i * D + d] * Krow[d];
      for (int d = 0; d < Dv; ++d) dp += dOs[i * Dv + d] * Vrow[d];
      const float p = __expf(s - Ls[i]);
      const float ds = p * (dp - Dels[i]);
      for (int d = 0; d < Dv; ++d) dVrow[d] += p * dOs[i * Dv + d];
      for (int d = 0; d < D; ++d) dKrow[d] += ds * Qs[i * D + d];  // Q is scaled: dK = scale dS^T Q
    }
  }
  if (!active) return;
  const int64_t row = gr.k_begin + j;
  for (int d = 0; d < D; ++d) a.dk_grouped[(row * a.heads + h) * D + d] = dKrow[d];
  for (int d = 0; d < Dv; ++d) a.dv_grouped[(row * a.heads + h) * Dv + d] = dVrow[d];
}

// dQ: one thread per query row, looping over the group's keys in tiles.
template <typename T>
__global__ void bwd_dq(PgAttnArgs a) {
  const int g = blockIdx.x, h = blockIdx.y;
  const Group gr = group_of(a, g);
  const int i0 = blockIdx.z * kBwdRows;
  if (i0 >= gr.nq) return;
  const int D = a.head_dim, Dv = a.value_dim, tid = threadIdx.x;
  extern __shared__ float smem[];
  float* Ks = smem;  // [kBwdTile][D]
  float* Vs = Ks + kBwdTile * D;  // [kBwdTile][Dv]
  float* base = Vs + kBwdTile * Dv;
  float* Qrow = base + tid * (D + 1);
  float* dOrow = base + kBwdRows * (D + 1) + tid * (Dv + 1);
  float* dQrow = base + kBwdRows * (D + 1) + kBwdRows * (Dv + 1) + tid * (D + 1);

  const int i = i0 + tid;
  const bool active = i < gr.nq;
  const int64_t token = active ? a.q_perm[gr.q_begin + i] : 0;
  const T* q = static_cast<const T*>(a.q);
  const T* dout = static_cast<const T*>(a.dout);
  for (int d = 0; d < D; ++d) {
    Qrow[d] = active ? to_f(q[token * a.q_s0 + h * a.q_s1 + d]) * a.scale : 0.f;
    dQrow[d] = 0.f;
  }
  for (int d = 0; d < Dv; ++d) dOrow[d] = active ? to_f(dout[(token * a.heads + h) * Dv + d]) : 0.f;
  const float L = active ? a.lse[token * a.heads + h] : 0.f;
  const float Del = active ? a.delta[token * a.heads + h] : 0.f;

  for (int k0 = 0; k0 < gr.nk; k0 += kBwdTile) {
    const int nt = min(kBwdTile, gr.nk - k0);
    __syncthreads();
    gather_rows_f32(Ks, D, static_cast<const T*>(a.k), a.k_s0, a.k_s1, a.k_perm + gr.k_begin, k0, nt, h, D);
    gather_rows_f32(Vs, Dv, static_cast<const T*>(a.v), a.v_s0, a.v_s1, a.k_perm + gr.k_begin, k0, nt, h, Dv);
    __syncthreads();
    if (!active) continue;
    for (int j = 0; j < nt; ++j) {
      float s = 0.f, dp = 0.f;
      for (int d = 0; d < D; ++d) s += Qrow[d] * Ks[j * D + d];
      for (int d = 0; d < Dv; ++d) dp += dOrow[d] * Vs[j * Dv + d];
      const float ds = __expf(s - L) * (dp - Del);
      for (int d = 0; d < D; ++d) dQrow[d] += ds * Ks[j * D + d];
    }
  }
  if (!active) return;
  for (int d = 0; d < D; ++d) a.dq[(token * a.heads + h) * D + d] = dQrow[d] * a.scale;
}

// ------------------------------------------------------------------------------------------------
// Launchers

cudaError_t launch_with_smem(const void* kernel, dim3 grid, dim3 block, size_t smem, const PgAttnArgs& a,
                             cudaStream_t stream) {
  int device = 0, limit = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) return err;
  if (smem > static_cast<size_t>(limit)) return cudaErrorInvalidValue;  // head dim too large for this GPU
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  PgAttnArgs copy = a;
  void* params[] = {&copy};
  err = cudaLaunchKernel(kernel, grid, block, params, smem, stream);
  return err != cudaSuccess ? err : cudaGetLastError();
}

dim3 grid_for(int max_rows, int rows_per_block, const PgAttnArgs& a) {
  // groups on x (up to 2^31 - 1 of them), heads on y, row tiles on z (up to 65535)
  return dim3(a.num_groups, a.heads, (max(max_rows, 1) + rows_per_block - 1) / rows_per_block);
}

template <typename T>
cudaError_t fwd_typed(const PgAttnArgs& a, cudaStream_t stream) {
  const int D = a.head_dim, Dv = a.value_dim;
  if constexpr (!std::is_same<T, float>::value) {
    int device = 0, major = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (major >= 8 && D == Dv && (D == 64 || D == 128)) {
      const void* kernel = D == 64 ? reinterpret_cast<const void*>(&fwd_mma<T, 64>)
                                   : reinterpret_cast<const void*>(&fwd_mma<T, 128>);
      const size_t smem = D == 64 ? sizeof(MmaSmem<T, 64>) : sizeof(MmaSmem<T, 128>);
      return launch_with_smem(kernel, grid_for(a.max_q, kMmaRows, a), dim3(32 * kMmaWarps), smem, a, stream);
    }
  }
  const size_t smem = sizeof(float) * (kFmaKeys * (D + Dv) + kFmaRows * (D + 1) + kFmaRows * (Dv + 1));
  return launch_with_smem(reinterpret_cast<const void*>(&fwd_fma<T>), grid_for(a.max_q, kFmaRows, a), dim3(kFmaRows),
                          smem, a, stream);
}

template <typename T>
cudaError_t bwd_typed(const PgAttnArgs& a, cudaStream_t stream) {
  const int D = a.head_dim, Dv = a.value_dim;
  const size_t smem_dkdv =
      sizeof(float) * (kBwdTile * (D + Dv) + 2 * kBwdTile + 2 * kBwdRows * (D + 1) + 2 * kBwdRows * (Dv + 1));
  cudaError_t err = launch_with_smem(reinterpret_cast<const void*>(&bwd_dkdv<T>), grid_for(a.max_k, kBwdRows, a),
                                     dim3(kBwdRows), smem_dkdv, a, stream);
  if (err != cudaSuccess) return err;
  const size_t smem_dq = sizeof(float) * (kBwdTile * (D + Dv) + 2 * kBwdRows * (D + 1) + kBwdRows * (Dv + 1));
  return launch_with_smem(reinterpret_cast<const void*>(&bwd_dq<T>), grid_for(a.max_q, kBwdRows, a), dim3(kBwdRows),
                          smem_dq, a, stream);
}

}  // namespace

extern "C" cudaError_t pg_part_attention_fwd(const PgAttnArgs* args, cudaStream_t stream) {
  if (args->num_groups == 0) return cudaSuccess;
  switch (args->dtype) {
    case PG_F32:
      return fwd_typed<float>(*args, stream);
    case PG_F16:
      return fwd_typed<__half>(*args, stream);
    case PG_BF16:
      return fwd_typed<__nv_bfloat16>(*args, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

extern "C" cudaError_t pg_part_attention_bwd(const PgAttnArgs* args, cudaStream_t stream) {
  if (args->num_groups == 0) return cudaSuccess;
  switch (args->dtype) {
    case PG_F32:
      return bwd_typed<float>(*args, stream);
    case PG_F16:
      return bwd_typed<__half>(*args, stream);
    case PG_BF16:
      return bwd_typed<__nv_bfloat16>(*args, stream);
    default:
      return cudaErrorInvalidValue;
  }
}
