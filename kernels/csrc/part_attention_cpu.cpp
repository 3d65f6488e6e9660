// Part attention on CPU: varlen group attention with fused gather/scatter, forward and backward.
//
// Legend: N_q / N_k query / key tokens (token order), H heads, D head dim, Dv value dim,
// G groups, M_k gathered key rows. Group g's queries are tokens q_perm[q_cu[g]:q_cu[g+1]],
// its keys k_perm[k_cu[g]:k_cu[g+1]] (keys may repeat across groups: cross-attention).
//
// Work is split into items (group, head, query tile) for the forward and (group, head) for the
// backward, sorted by cost and handed out dynamically to OpenMP threads. Each item gathers its
// tiles straight from the token-order inputs through the permutations into thread-local fp32
// buffers (no permuted copies of q, k, v), runs the tile products with ATen's brgemm (oneDNN
// ukernels; at::mm on builds without them), an online softmax with a vectorisable exp, and
// writes its rows straight back to token order. bf16 inputs are widened to fp32 on gather;
// accumulation is fp32 everywhere. The forward saves the log-sum-exp for the backward.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <vector>

namespace partgen {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------------------------
// Tile product: C[M x N] (+)= A[M x K] . B[K x N], row-major with leading dimensions.

bool brgemm_works() {
  static bool works = [] {
    // brgemm needs oneDNN's ukernels (x86 with AVX-512 here); check once on a known product.
    const float a[6] = {1, 2, 3, 4, 5, 6};        // 2 x 3
    const float b[6] = {1, 0, 0, 1, 1, 1};        // 3 x 2
    float c[4] = {10, 10, 10, 10};
    try {
      at::native::cpublas::brgemm(2, 2, 3, 3, 2, 2, false, a, b, c, false);
      at::native::cpublas::brgemm_release(false);
    } catch (const std::exception&) {
      return false;
    }
    return c[0] == 4 && c[1] == 5 && c[2] == 10 && c[3] == 11;
  }();
  return works;
}

void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
          int64_t ldc, bool add) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!add) for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.f);
    return;
  }
  if (brgemm_works()) {
    at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, add, A, B, C, false);
    return;
  }
  auto opts = at::TensorOptions().dtype(at::kFloat);
  auto a = at::from_blob(const_cast<float*>(A), {M, K}, {lda, 1}, opts);
  auto b = at::from_blob(const_cast<float*>(B), {K, N}, {ldb, 1}, opts);
  auto c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  if (add) c.addmm_(a, b); else at::mm_out(c, a, b);
}

// ---------------------------------------------------------------------------------------------
// exp for softmax: Cody-Waite range reduction and a degree-6 polynomial (rel. error ~2e-7),
// written so the compiler vectorises the loops that call it (the float -> int conversion needs
// -fno-trapping-math for that; build.py passes it). Inputs below -87 give ~0.

inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693145751953125f;  // ln2 high part
  r = r - n * 1.42860682030941723212e-6f;  // ln2 low part
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

// The reductions below carry `omp simd` so the compiler may reorder them into vector lanes.

inline float row_max(const float* x, int64_t n, float m) {
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// x[j] = exp(x[j] - sub); returns the sum of the new x
inline float exp_shift_sum(float* x, int64_t n, float sub) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) {
    x[j] = exp_approx(x[j] - sub);
    s += x[j];
  }
  return s;
}

inline void exp_shift(float* x, int64_t n, float sub) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) x[j] = exp_approx(x[j] - sub);
}

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += a[j] * b[j];
  return s;
}

// ---------------------------------------------------------------------------------------------
// Strided token-order tensors: row t, head h starts at data + t * s0 + h * s1 (last dim contiguous).

template <typename T>
struct Rows {
  const T* data;
  int64_t s0, s1;
  const T* row(int64_t token, int64_t head) const { return data + token * s0 + head * s1; }
};

template <typename T>
inline void load_row(float* dst, const T* src, int64_t n, float mult) {
  for (int64_t d = 0; d < n; ++d) dst[d] = static_cast<float>(src[d]) * mult;
}

struct Problem {
  const int64_t* q_perm;
  const int32_t* q_cu;
  const int64_t* k_perm;
  const int32_t* k_cu;
  int64_t G, H, D, Dv;
  float scale;
};

struct Item {
  int64_t g, h, q0, q1, cost;
};

// Run items in decreasing cost, dynamically shared by the threads; rethrow the first error.
template <typename Fn>
void run_items(std::vector<Item>& items, Fn&& fn) {
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.cost > b.cost; });
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_lock;
  const int64_t total = static_cast<int64_t>(items.size());
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), total)));
#pragma omp parallel num_threads(threads)
  {
    try {
      auto state = fn.make_state();
      for (int64_t i; (i = next.fetch_add(1)) < total;) fn(items[i], state);
    } catch (...) {
      std::lock_guard<std::mutex> guard(error_lock);
      if (!error) error = std::current_exception();
      next.store(total);
    }
    if (brgemm_works()) at::native::cpublas::brgemm_release(false);
  }
  if (error) std::rethrow_exception(error);
}

// ---------------------------------------------------------------------------------------------
// Forward. An item is (group, head, query chunk); the chunk's rows are processed in query tiles
// against each key tile, so every gathered key tile serves the whole chunk.

constexpr int64_t kFwdQChunk = 512;
constexpr int64_t kFwdQTile = 128;
constexpr int64_t kFwdKTile = 512;

struct FwdState {
  std::vector<float> q, kt, v, s, o, m, l;
};

template <typename T>
struct Forward {
  Problem p;
  Rows<T> q, k, v;
  T* out;  // (N_q, H, Dv) contiguous
  float* lse;  // (N_q, H)

  FwdState make_state() const {
    FwdState st;
    st.q.resize(kFwdQChunk * p.D);
    st.kt.resize(p.D * kFwdKTile);
    st.v.resize(kFwdKTile * p.Dv);
    st.s.resize(kFwdQTile * kFwdKTile);
    st.o.resize(kFwdQChunk * p.Dv);
    st.m.resize(kFwdQChunk);
    st.l.resize(kFwdQChunk);
    return st;
  }

  void operator()(const Item& it, FwdState& st) const {
    const int64_t D = p.D, Dv = p.Dv, h = it.h;
    const int64_t nq = it.q1 - it.q0;
    const int64_t* qtok = p.q_perm + p.q_cu[it.g] + it.q0;
    const int64_t* ktok = p.k_perm + p.k_cu[it.g];
    const int64_t nk_all = p.k_cu[it.g + 1] - p.k_cu[it.g];
    float *Q = st.q.data(), *KT = st.kt.data(), *V = st.v.data(), *S = st.s.data(), *O = st.o.data();
    float *m = st.m.data(), *l = st.l.data();

    for (int64_t i = 0; i < nq; ++i) load_row(Q + i * D, q.row(qtok[i], h), D, p.scale);
    std::fill(O, O + nq * Dv, 0.f);
    std::fill(m, m + nq, kNegInf);
    std::fill(l, l + nq, 0.f);

    for (int64_t k0 = 0; k0 < nk_all; k0 += kFwdKTile) {
      const int64_t nk = std::min(kFwdKTile, nk_all - k0);
      for (int64_t j = 0; j < nk; ++j) {  // K^T (D x nk) and V (nk x Dv), gathered
        const T* kr = k.row(ktok[k0 + j], h);
        for (int64_t d = 0; d < D; ++d) KT[d * nk + j] = static_cast<float>(kr[d]);
        load_row(V + j * Dv, v.row(ktok[k0 + j], h), Dv, 1.f);
      }
      for (int64_t i0 = 0; i0 < nq; i0 += kFwdQTile) {
        const int64_t mq = std::min(kFwdQTile, nq - i0);
        gemm(mq, nk, D, Q + i0 * D, D, KT, nk, S, nk, false);  // scores (mq x nk), already scaled
        for (int64_t i = 0; i < mq; ++i) {
          float* s = S + i * nk;
          const int64_t r = i0 + i;
          const float mx = row_max(s, nk, m[r]);
          const float sum = exp_shift_sum(s, nk, mx);
          const float alpha = m[r] == kNegInf ? 0.f : exp_approx(m[r] - mx);
          l[r] = l[r] * alpha + sum;
          m[r] = mx;
          if (alpha != 1.f) {
            float* o = O + r * Dv;
#pragma omp simd
            for (int64_t d = 0; d < Dv; ++d) o[d] *= alpha;
          }
        }
        gemm(mq, Dv, nk, S, nk, V, Dv, O + i0 * Dv, Dv, true);  // O += P V
      }
    }

    for (int64_t i = 0; i < nq; ++i) {
      const int64_t t = qtok[i];
      T* dst = out + (t * p.H + h) * Dv;
      const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
      for (int64_t d = 0; d < Dv; ++d) dst[d] = static_cast<T>(O[i * Dv + d] * inv);
      lse[t * p.H + h] = l[i] > 0.f ? m[i] + std::log(l[i]) : kNegInf;
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Backward (flash-attention-2 recurrences). An item is one (group, head), so dQ needs no atomics.
// Every product is arranged so no tile is transposed inside the loops: Q^T and dO^T are gathered
// once per item, K^T and V^T once per key tile, and dK, dV are accumulated transposed.

constexpr int64_t kBwdQTile = 128;
constexpr int64_t kBwdKTile = 256;

struct BwdState {
  std::vector<float> q, qt, dout, doutt, dq, lse, delta, o, k, kt, vt, p, dp, dkt, dvt;
};

template <typename T>
struct Backward {
  Problem p;
  Rows<T> q, k, v, out, dout;
  const float* lse;  // (N_q, H)
  float* dq;  // (N_q, H, D) fp32, token order
  float* dk_grouped;  // (M_k, H, D) fp32, grouped key order
  float* dv_grouped;  // (M_k, H, Dv) fp32

  BwdState make_state() const {
    BwdState st;
    st.o.resize(p.Dv);
    st.k.resize(kBwdKTile * p.D);
    st.kt.resize(p.D * kBwdKTile);
    st.vt.resize(p.Dv * kBwdKTile);
    st.p.resize(kBwdQTile * kBwdKTile);
    st.dp.resize(kBwdQTile * kBwdKTile);
    st.dkt.resize(p.D * kBwdKTile);
    st.dvt.resize(p.Dv * kBwdKTile);
    return st;
  }

  void operator()(const Item& it, BwdState& st) const {
    const int64_t D = p.D, Dv = p.Dv, H = p.H, h = it.h;
    const int64_t nq = it.q1 - it.q0;
    const int64_t* qtok = p.q_perm + p.q_cu[it.g];
    const int64_t kbase = p.k_cu[it.g];
    const int64_t* ktok = p.k_perm + kbase;
    const int64_t nk_all = p.k_cu[it.g + 1] - kbase;
    st.q.resize(nq * D);
    st.qt.resize(D * nq);
    st.dout.resize(nq * Dv);
    st.doutt.resize(Dv * nq);
    st.dq.assign(nq * D, 0.f);
    st.lse.resize(nq);
    st.delta.resize(nq);
    float *Q = st.q.data(), *QT = st.qt.data(), *dO = st.dout.data(), *dOT = st.doutt.data();
    float *dQ = st.dq.data(), *L = st.lse.data(), *Dl = st.delta.data(), *O = st.o.data();

    for (int64_t i = 0; i < nq; ++i) {
      const int64_t t = qtok[i];
      float* qi = Q + i * D;
      float* doi = dO + i * Dv;
      load_row(qi, q.row(t, h), D, p.scale);
      load_row(doi, dout.row(t, h), Dv, 1.f);
      load_row(O, out.row(t, h), Dv, 1.f);
      for (int64_t d = 0; d < D; ++d) QT[d * nq + i] = qi[d];
      for (int64_t d = 0; d < Dv; ++d) dOT[d * nq + i] = doi[d];
      Dl[i] = dot(doi, O, Dv);
      L[i] = lse[t * H + h];
    }

    float *K = st.k.data(), *KT = st.kt.data(), *VT = st.vt.data(), *P = st.p.data(), *dP = st.dp.data();
    float *dKT = st.dkt.data(), *dVT = st.dvt.data();
    for (int64_t k0 = 0; k0 < nk_all; k0 += kBwdKTile) {
      const int64_t nk = std::min(kBwdKTile, nk_all - k0);
      for (int64_t j = 0; j < nk; ++j) {
        const T* kr = k.row(ktok[k0 + j], h);
        const T* vr = v.row(ktok[k0 + j], h);
        load_row(K + j * D, kr, D, 1.f);
        for (int64_t d = 0; d < D; ++d) KT[d * nk + j] = K[j * D + d];
        for (int64_t d = 0; d < Dv; ++d) VT[d * nk + j] = static_cast<float>(vr[d]);
      }
      std::fill(dKT, dKT + D * nk, 0.f);
      std::fill(dVT, dVT + Dv * nk, 0.f);
      for (int64_t i0 = 0; i0 < nq; i0 += kBwdQTile) {
        const int64_t mq = std::min(kBwdQTile, nq - i0);
        gemm(mq, nk, D, Q + i0 * D, D, KT, nk, P, nk, false);  // scaled scores
        for (int64_t i = 0; i < mq; ++i) exp_shift(P + i * nk, nk, L[i0 + i]);  // P
        gemm(Dv, nk, mq, dOT + i0, nq, P, nk, dVT, nk, true);  // dV^T += dO^T P
        gemm(mq, nk, Dv, dO + i0 * Dv, Dv, VT, nk, dP, nk, false);  // dP = dO V^T
        for (int64_t i = 0; i < mq; ++i) {
          const float di = Dl[i0 + i];
          float* pr = P + i * nk;
          const float* dpr = dP + i * nk;
#pragma omp simd
          for (int64_t j = 0; j < nk; ++j) pr[j] = pr[j] * (dpr[j] - di);  // dS, in place
        }
        gemm(mq, D, nk, P, nk, K, D, dQ + i0 * D, D, true);  // dQ += dS K  (scaled at the end)
        gemm(D, nk, mq, QT + i0, nq, P, nk, dKT, nk, true);  // dK^T += (scale Q)^T dS
      }
      for (int64_t j = 0; j < nk; ++j) {
        float* dkr = dk_grouped + ((kbase + k0 + j) * H + h) * D;
        float* dvr = dv_grouped + ((kbase + k0 + j) * H + h) * Dv;
        for (int64_t d = 0; d < D; ++d) dkr[d] = dKT[d * nk + j];
        for (int64_t d = 0; d < Dv; ++d) dvr[d] = dVT[d * nk + j];
      }
    }
    for (int64_t i = 0; i < nq; ++i) {
      float* dst = dq + (qtok[i] * H + h) * D;
      for (int64_t d = 0; d < D; ++d) dst[d] = dQ[i * D + d] * p.scale;
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Op entry points (inputs were validated in Python; these checks guard the memory accesses).

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& q_perm,
                  const at::Tensor& q_cu, const at::Tensor& k_perm, const at::Tensor& k_cu) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, "q, k, v must be (tokens, heads, dim)");
  TORCH_CHECK(q.size(1) == k.size(1) && k.size(1) == v.size(1), "head counts differ");
  TORCH_CHECK(q.size(2) == k.size(2) && k.size(0) == v.size(0), "q/k head dims or k/v token counts differ");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && k.scalar_type() == v.scalar_type(), "q, k, v dtypes differ");
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16, "CPU part attention takes float32 or bfloat16");
  TORCH_CHECK(q.stride(2) == 1 && k.stride(2) == 1 && v.stride(2) == 1, "the last dim must be contiguous");
  TORCH_CHECK(q_perm.scalar_type() == at::kLong && k_perm.scalar_type() == at::kLong, "perms must be int64");
  TORCH_CHECK(q_cu.scalar_type() == at::kInt && k_cu.scalar_type() == at::kInt, "cu_seqlens must be int32");
  TORCH_CHECK(q_perm.is_contiguous() && k_perm.is_contiguous() && q_cu.is_contiguous() && k_cu.is_contiguous(),
              "perms and cu_seqlens must be contiguous");
  TORCH_CHECK(q_cu.numel() == k_cu.numel() && q_cu.numel() >= 1, "query and key group counts differ");
  TORCH_CHECK(q_perm.numel() == q.size(0), "q_perm must order every query");
}

Problem make_problem(const at::Tensor& q, const at::Tensor& v, const at::Tensor& q_perm, const at::Tensor& q_cu,
                     const at::Tensor& k_perm, const at::Tensor& k_cu, double scale) {
  return Problem{q_perm.data_ptr<int64_t>(), q_cu.data_ptr<int32_t>(), k_perm.data_ptr<int64_t>(),
                 k_cu.data_ptr<int32_t>(), q_cu.numel() - 1, q.size(1), q.size(2), v.size(2),
                 static_cast<float>(scale)};
}

template <typename T>
Rows<T> rows(const at::Tensor& t) {
  return Rows<T>{t.data_ptr<T>(), t.stride(0), t.stride(1)};
}

std::tuple<at::Tensor, at::Tensor> part_attention_fwd_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                          const at::Tensor& q_perm, const at::Tensor& q_cu,
                                                          const at::Tensor& k_perm, const at::Tensor& k_cu,
                                                          int64_t /*max_q*/, int64_t /*max_k*/, double scale) {
  check_inputs(q, k, v, q_perm, q_cu, k_perm, k_cu);
  const Problem p = make_problem(q, v, q_perm, q_cu, k_perm, k_cu, scale);
  auto out = at::empty({q.size(0), p.H, p.Dv}, q.options());
  auto lse = at::empty({q.size(0), p.H}, q.options().dtype(at::kFloat));
  std::vector<Item> items;
  const int32_t* qc = p.q_cu;
  const int32_t* kc = p.k_cu;
  for (int64_t g = 0; g < p.G; ++g) {
    const int64_t nq = qc[g + 1] - qc[g], nk = kc[g + 1] - kc[g];
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t i0 = 0; i0 < nq; i0 += kFwdQChunk) {
        const int64_t i1 = std::min(nq, i0 + kFwdQChunk);
        items.push_back({g, h, i0, i1, (i1 - i0) * (nk + 1)});
      }
  }
  AT_DISPATCH_SWITCH(q.scalar_type(), "part_attention_fwd_cpu",
    AT_DISPATCH_CASE(at::kFloat, [&] {
      Forward<float> fwd{p, rows<float>(q), rows<float>(k), rows<float>(v), out.data_ptr<float>(), lse.data_ptr<float>()};
      run_items(items, fwd);
    })
    AT_DISPATCH_CASE(at::kBFloat16, [&] {
      using T = at::BFloat16;
      Forward<T> fwd{p, rows<T>(q), rows<T>(k), rows<T>(v), out.data_ptr<T>(), lse.data_ptr<float>()};
      run_items(items, fwd);
    }));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> part_attention_bwd_cpu(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& q_perm, const at::Tensor& q_cu, const at::Tensor& k_perm,
    const at::Tensor& k_cu, int64_t /*max_q*/, int64_t /*max_k*/, double scale) {
  check_inputs(q, k, v, q_perm, q_cu, k_perm, k_cu);
  TORCH_CHECK(dout.sizes() == out.sizes() && dout.scalar_type() == q.scalar_type(), "dout must match out");
  TORCH_CHECK(dout.stride(2) == 1 && out.stride(2) == 1, "dout and out need a contiguous last dim");
  TORCH_CHECK(lse.scalar_type() == at::kFloat && lse.is_contiguous(), "lse must be contiguous float32");
  const Problem p = make_problem(q, v, q_perm, q_cu, k_perm, k_cu, scale);
  const int64_t Mk = k_perm.numel();
  auto f32 = q.options().dtype(at::kFloat);
  auto dq = at::zeros({q.size(0), p.H, p.D}, f32);
  auto dk_grouped = at::zeros({Mk, p.H, p.D}, f32);
  auto dv_grouped = at::zeros({Mk, p.H, p.Dv}, f32);
  std::vector<Item> items;
  for (int64_t g = 0; g < p.G; ++g) {
    const int64_t nq = p.q_cu[g + 1] - p.q_cu[g], nk = p.k_cu[g + 1] - p.k_cu[g];
    if (nq == 0 || nk == 0) continue;  // nothing flows back (zero outputs, or keys nobody sees)
    for (int64_t h = 0; h < p.H; ++h) items.push_back({g, h, 0, nq, nq * nk});
  }
  AT_DISPATCH_SWITCH(q.scalar_type(), "part_attention_bwd_cpu",
    AT_DISPATCH_CASE(at::kFloat, [&] {
      Backward<float> bwd{p, rows<float>(q), rows<float>(k), rows<float>(v), rows<float>(out), rows<float>(dout),
                          lse.data_ptr<float>(), dq.data_ptr<float>(), dk_grouped.data_ptr<float>(),
                          dv_grouped.data_ptr<float>()};
      run_items(items, bwd);
    })
    AT_DISPATCH_CASE(at::kBFloat16, [&] {
      using T = at::BFloat16;
      Backward<T> bwd{p, rows<T>(q), rows<T>(k), rows<T>(v), rows<T>(out), rows<T>(dout), lse.data_ptr<float>(),
                      dq.data_ptr<float>(), dk_grouped.data_ptr<float>(), dv_grouped.data_ptr<float>()};
      run_items(items, bwd);
    }));
  // keys back to token order; a key seen by several groups sums their contributions
  auto dk = at::zeros({k.size(0), p.H, p.D}, f32).index_add_(0, k_perm, dk_grouped);
  auto dv = at::zeros({v.size(0), p.H, p.Dv}, f32).index_add_(0, k_perm, dv_grouped);
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(partgen, CPU, m) {
  m.impl("part_attention_fwd", &part_attention_fwd_cpu);
  m.impl("part_attention_bwd", &part_attention_bwd_cpu);
}

}  // namespace partgen
