// Part attention on CUDA: framework-free launch API (torch bindings live in
// part_attention_cuda_binding.cpp). Legend: N_q / N_k tokens, H heads, D head dim, Dv value dim,
// G groups, M_k gathered key rows.
//
// Group g's queries are tokens q_perm[q_cu[g] : q_cu[g+1]], its keys k_perm[k_cu[g] : k_cu[g+1]].
// q, k, v are token-order (tokens, heads, dim) with a contiguous last dim and element strides
// (s0 between tokens, s1 between heads). Outputs are written straight to token order.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum PgDtype { PG_F32 = 0, PG_F16 = 1, PG_BF16 = 2 };

typedef struct PgAttnArgs {
  const void* q;
  const void* k;
  const void* v;
  int64_t q_s0, q_s1, k_s0, k_s1, v_s0, v_s1;
  const int64_t* q_perm;
  const int32_t* q_cu;
  const int64_t* k_perm;
  const int32_t* k_cu;
  int num_groups, heads, head_dim, value_dim;
  int max_q, max_k;  // largest query / key group
  float scale;
  int dtype;  // PgDtype of q, k, v, out and dout
  // forward outputs
  void* out;  // (N_q, H, Dv) contiguous, dtype
  float* lse;  // (N_q, H) log-sum-exp of the scaled scores; -inf where a group has no key
  // backward inputs and outputs
  const void* dout;  // (N_q, H, Dv) contiguous, dtype
  const float* delta;  // (N_q, H) rowsum(dout * out)
  float* dq;  // (N_q, H, D) fp32, token order
  float* dk_grouped;  // (M_k, H, D) fp32, grouped key order
  float* dv_grouped;  // (M_k, H, Dv) fp32, grouped key order
} PgAttnArgs;

// Forward: fills out and lse. Returns cudaSuccess or the launch error.
cudaError_t pg_part_attention_fwd(const PgAttnArgs* args, cudaStream_t stream);

// Backward: fills dq, dk_grouped, dv_grouped (deterministic: no atomics). Needs lse and delta.
cudaError_t pg_part_attention_bwd(const PgAttnArgs* args, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
