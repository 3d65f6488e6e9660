// Thin torch bindings for the framework-free CUDA part-attention kernels (part_attention_cuda.cu).
// Registers the CUDA implementations of torch.ops.partgen.part_attention_fwd / _bwd.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "part_attention_cuda.h"

namespace partgen {
namespace {

int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return PG_F32;
    case at::kHalf:
      return PG_F16;
    case at::kBFloat16:
      return PG_BF16;
    default:
      TORCH_CHECK(false, "CUDA part attention takes float32, float16 or bfloat16, got ", t);
  }
}

at::Tensor last_dim_contiguous(const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

PgAttnArgs make_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& q_perm,
                     const at::Tensor& q_cu, const at::Tensor& k_perm, const at::Tensor& k_cu, int64_t max_q,
                     int64_t max_k, double scale) {
  TORCH_CHECK(q.is_cuda() && k.is_cuda() && v.is_cuda() && q_perm.is_cuda() && k_perm.is_cuda() && q_cu.is_cuda() &&
                  k_cu.is_cuda(),
              "all inputs must be CUDA tensors");
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, "q, k, v must be (tokens, heads, dim)");
  TORCH_CHECK(q.size(1) == k.size(1) && k.size(1) == v.size(1) && q.size(2) == k.size(2) && k.size(0) == v.size(0),
              "q, k, v shapes disagree");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && k.scalar_type() == v.scalar_type(), "q, k, v dtypes differ");
  TORCH_CHECK(q_perm.scalar_type() == at::kLong && k_perm.scalar_type() == at::kLong, "perms must be int64");
  TORCH_CHECK(q_cu.scalar_type() == at::kInt && k_cu.scalar_type() == at::kInt, "cu_seqlens must be int32");
  TORCH_CHECK(q_cu.numel() == k_cu.numel() && q_cu.numel() >= 1, "query and key group counts differ");
  TORCH_CHECK(q.size(2) <= 256 && v.size(2) <= 256, "head dims above 256 are not supported");
  PgAttnArgs a{};
  a.q = q.data_ptr();
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  a.q_s0 = q.stride(0);
  a.q_s1 = q.stride(1);
  a.k_s0 = k.stride(0);
  a.k_s1 = k.stride(1);
  a.v_s0 = v.stride(0);
  a.v_s1 = v.stride(1);
  a.q_perm = q_perm.data_ptr<int64_t>();
  a.q_cu = q_cu.data_ptr<int32_t>();
  a.k_perm = k_perm.data_ptr<int64_t>();
  a.k_cu = k_cu.data_ptr<int32_t>();
  a.num_groups = static_cast<int>(q_cu.numel() - 1);
  a.heads = static_cast<int>(q.size(1));
  a.head_dim = static_cast<int>(q.size(2));
  a.value_dim = static_cast<int>(v.size(2));
  a.max_q = static_cast<int>(max_q);
  a.max_k = static_cast<int>(max_k);
  a.scale = static_cast<float>(scale);
  a.dtype = dtype_code(q.scalar_type());
  return a;
}

std::tuple<at::Tensor, at::Tensor> part_attention_fwd_cuda(const at::Tensor& q_in, const at::Tensor& k_in,
                                                           const at::Tensor& v_in, const at::Tensor& q_perm,
                                                           const at::Tensor& q_cu, const at::Tensor& k_perm,
                                                           const at::Tensor& k_cu, int64_t max_q, int64_t max_k,
                                                           double scale) {
  const c10::cuda::CUDAGuard guard(q_in.device());
  const auto q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in), v = last_dim_contiguous(v_in);
  PgAttnArgs a = make_args(q, k, v, q_perm, q_cu, k_perm, k_cu, max_q, max_k, scale);
  auto out = at::empty({q.size(0), q.size(1), v.size(2)}, q.options());
  auto lse = at::empty({q.size(0), q.size(1)}, q.options().dtype(at::kFloat));
  a.out = out.data_ptr();
  a.lse = lse.data_ptr<float>();
  const cudaError_t err = pg_part_attention_fwd(&a, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "part_attention_fwd (CUDA): ", cudaGetErrorString(err));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> part_attention_bwd_cuda(
    const at::Tensor& dout_in, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const at::Tensor& out, const at::Tensor& lse, const at::Tensor& q_perm, const at::Tensor& q_cu,
    const at::Tensor& k_perm, const at::Tensor& k_cu, int64_t max_q, int64_t max_k, double scale) {
  const c10::cuda::CUDAGuard guard(q_in.device());
  const auto q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in), v = last_dim_contiguous(v_in);
  const auto dout = dout_in.contiguous();
  TORCH_CHECK(dout.sizes() == out.sizes(), "dout must match out");
  PgAttnArgs a = make_args(q, k, v, q_perm, q_cu, k_perm, k_cu, max_q, max_k, scale);
  const auto f32 = q.options().dtype(at::kFloat);
  auto delta = (dout.to(at::kFloat) * out.to(at::kFloat)).sum(-1).contiguous();  // (N_q, H)
  auto lse_c = lse.contiguous();
  auto dq = at::zeros({q.size(0), q.size(1), q.size(2)}, f32);
  auto dk_grouped = at::zeros({k_perm.numel(), k.size(1), k.size(2)}, f32);
  auto dv_grouped = at::zeros({k_perm.numel(), v.size(1), v.size(2)}, f32);
  a.dout = dout.data_ptr();
  a.lse = lse_c.data_ptr<float>();
  a.delta = delta.data_ptr<float>();
  a.dq = dq.data_ptr<float>();
  a.dk_grouped = dk_grouped.data_ptr<float>();
  a.dv_grouped = dv_grouped.data_ptr<float>();
  const cudaError_t err = pg_part_attention_bwd(&a, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "part_attention_bwd (CUDA): ", cudaGetErrorString(err));
  // keys back to token order; a key seen by several groups sums their contributions
  auto dk = at::zeros({k.size(0), k.size(1), k.size(2)}, f32).index_add_(0, k_perm, dk_grouped);
  auto dv = at::zeros({v.size(0), v.size(1), v.size(2)}, f32).index_add_(0, k_perm, dv_grouped);
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(partgen, CUDA, m) {
  m.impl("part_attention_fwd", &part_attention_fwd_cuda);
  m.impl("part_attention_bwd", &part_attention_bwd_cuda);
}

}  // namespace partgen
