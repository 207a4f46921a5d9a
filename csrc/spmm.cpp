// Weighted CSR SpMM for GNN aggregation: out = A @ x, parallel over rows, vectorised over the feature dimension.
//
// spmm(indptr, indices, values, x, num_rows) -> out [num_rows, d], A the CSR matrix (indptr int64 [R+1],
// indices int32 or int64 [nnz], values [nnz] of x's dtype), x [K, d] contiguous. Work is split into parts of
// about equal (nonzeros + rows), run by OpenMP threads (torch's thread count, dynamic schedule: power-law hub
// rows and empty rows both balance). Each row is written by one thread, so the backward (A^T @ g) is the same
// kernel on a transposed CSR, or on A itself when A is symmetric (gnnpipe/models/ops.py decides).
// The row kernels (spmm_kernel.inc) are compiled for AVX-512, AVX2 and baseline x86-64 and picked at run time.
#include "kernels.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GNNPIPE_X86_MULTIVERSION 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx2,fma")
namespace k_avx512 {
#include "spmm_kernel.inc"
}  // namespace k_avx512
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace k_avx2 {
#include "spmm_kernel.inc"
}  // namespace k_avx2
#pragma GCC pop_options
#endif
namespace k_base {
#include "spmm_kernel.inc"
}  // namespace k_base

namespace gnnpipe {
namespace {

template <typename S, typename I>
using RowsFn = void (*)(const int64_t*, const I*, const S*, const S*, S*, int64_t, int64_t, int64_t);

struct Kernels {
  RowsFn<float, int32_t> f32_i32;
  RowsFn<float, int64_t> f32_i64;
  RowsFn<double, int32_t> f64_i32;
  RowsFn<double, int64_t> f64_i64;
  const char* isa;
};

#define GNNPIPE_KERNELS(ns, name) \
  Kernels { ns::rows_f32_i32, ns::rows_f32_i64, ns::rows_f64_i32, ns::rows_f64_i64, name }

Kernels pick_kernels() {
#ifdef GNNPIPE_X86_MULTIVERSION
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return GNNPIPE_KERNELS(k_avx512, "avx512");
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GNNPIPE_KERNELS(k_avx2, "avx2");
#endif
  return GNNPIPE_KERNELS(k_base, "baseline");
}

const Kernels& kernels() {
  static const Kernels k = pick_kernels();
  return k;
}

int num_threads() {
#ifdef _OPENMP
  return std::max(1, at::get_num_threads());
#else
  return 1;
#endif
}

// Row boundaries of `parts` pieces of about equal cost (nonzeros + rows): bounds[p] .. bounds[p+1].
std::vector<int64_t> balanced_rows(const int64_t* indptr, int64_t num_rows, int64_t parts) {
  const int64_t base = indptr[0];
  const int64_t total = (indptr[num_rows] - base) + num_rows;
  std::vector<int64_t> bounds(parts + 1);
  bounds[0] = 0;
  bounds[parts] = num_rows;
  for (int64_t p = 1; p < parts; ++p) {
    const int64_t target = total * p / parts;
    int64_t lo = bounds[p - 1], hi = num_rows;  // first row r with cost(r) >= target
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if ((indptr[mid] - base) + mid < target)
        lo = mid + 1;
      else
        hi = mid;
    }
    bounds[p] = lo;
  }
  return bounds;
}

template <typename S, typename I>
void run_rows(RowsFn<S, I> fn, const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& values,
              const at::Tensor& x, at::Tensor& out) {
  const int64_t num_rows = out.size(0), d = out.size(1);
  const int64_t* p = indptr.data_ptr<int64_t>();
  const I* idx = indices.data_ptr<I>();
  const S* val = values.data_ptr<S>();
  const S* xp = x.data_ptr<S>();
  S* op = out.data_ptr<S>();
  const int threads = num_threads();
  const int64_t work = (p[num_rows] - p[0]) * std::max<int64_t>(d, 1);
  if (threads == 1 || work < (int64_t{1} << 15)) {  // small blocks (chunk sub-operators): no fork
    fn(p, idx, val, xp, op, 0, num_rows, d);
    return;
  }
  const int64_t parts = std::min<int64_t>(num_rows, int64_t{16} * threads);
  const std::vector<int64_t> b = balanced_rows(p, num_rows, parts);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t q = 0; q < parts; ++q) fn(p, idx, val, xp, op, b[q], b[q + 1], d);
}

}  // namespace

at::Tensor spmm(const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& values,
                   const at::Tensor& x, int64_t num_rows) {
  TORCH_CHECK(indptr.device().is_cpu() && indices.device().is_cpu() && values.device().is_cpu() &&
                  x.device().is_cpu(),
              "gnnpipe._C.spmm: CPU tensors only");
  TORCH_CHECK(indptr.dim() == 1 && indptr.scalar_type() == at::kLong && indptr.is_contiguous(),
              "gnnpipe._C.spmm: indptr must be a contiguous int64 vector");
  TORCH_CHECK(indptr.numel() == num_rows + 1, "gnnpipe._C.spmm: indptr has ", indptr.numel(), " entries, expected ",
              num_rows + 1);
  TORCH_CHECK(indices.dim() == 1 && indices.is_contiguous() &&
                  (indices.scalar_type() == at::kInt || indices.scalar_type() == at::kLong),
              "gnnpipe._C.spmm: indices must be a contiguous int32/int64 vector");
  TORCH_CHECK(values.dim() == 1 && values.is_contiguous() && values.numel() == indices.numel(),
              "gnnpipe._C.spmm: values must be a contiguous vector as long as indices");
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "gnnpipe._C.spmm: x must be a contiguous matrix");
  TORCH_CHECK(values.scalar_type() == x.scalar_type(), "gnnpipe._C.spmm: values and x dtypes differ");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "gnnpipe._C.spmm: float32/float64 only");
  auto out = at::empty({num_rows, x.size(1)}, x.options());
  if (num_rows == 0 || x.size(1) == 0) return out;
  const Kernels& k = kernels();
  const bool i32 = indices.scalar_type() == at::kInt;
  if (x.scalar_type() == at::kFloat) {
    if (i32)
      run_rows<float, int32_t>(k.f32_i32, indptr, indices, values, x, out);
    else
      run_rows<float, int64_t>(k.f32_i64, indptr, indices, values, x, out);
  } else {
    if (i32)
      run_rows<double, int32_t>(k.f64_i32, indptr, indices, values, x, out);
    else
      run_rows<double, int64_t>(k.f64_i64, indptr, indices, values, x, out);
  }
  return out;
}

namespace {

template <typename S, typename I>
void add_block(RowsFn<S, I> fn, S* __restrict__ out, int64_t d, const at::Tensor& indptr, const at::Tensor& indices,
               const at::Tensor& values, const at::Tensor& g, const at::Tensor& rows, S alpha, std::vector<S>& tmp) {
  // the block's rows of A_b @ g_b by the SpMM row kernel (indptr may be a view: the kernel reads rows through it),
  // then each scaled into its output row, as spmm + index_add_ would
  const int64_t n = rows.numel();
  if (static_cast<int64_t>(tmp.size()) < n * d) tmp.resize(n * d);
  fn(indptr.data_ptr<int64_t>(), indices.data_ptr<I>(), values.data_ptr<S>(), g.data_ptr<S>(), tmp.data(), 0, n, d);
  const int64_t* r = rows.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    S* __restrict__ o = out + r[i] * d;
    const S* __restrict__ a = tmp.data() + i * d;
#pragma omp simd
    for (int64_t k = 0; k < d; ++k) o[k] += alpha * a[k];
  }
}

}  // namespace

void add_blocks(at::Tensor& out, const std::vector<at::Tensor>& indptrs, const std::vector<at::Tensor>& indices,
                const std::vector<at::Tensor>& values, const std::vector<at::Tensor>& gs,
                const std::vector<at::Tensor>& rows, double alpha) {
  const size_t nb = indptrs.size();
  TORCH_CHECK(indices.size() == nb && values.size() == nb && gs.size() == nb && rows.size() == nb,
              "gnnpipe._C.add_blocks: the block lists differ in length");
  TORCH_CHECK(out.device().is_cpu() && out.dim() == 2 && out.is_contiguous() &&
                  (out.scalar_type() == at::kFloat || out.scalar_type() == at::kDouble),
              "gnnpipe._C.add_blocks: out must be a contiguous float32/float64 CPU matrix");
  const int64_t d = out.size(1), num_out = out.size(0);
  for (size_t b = 0; b < nb; ++b) {
    const at::Tensor &p = indptrs[b], &ix = indices[b], &v = values[b], &g = gs[b], &r = rows[b];
    TORCH_CHECK(p.device().is_cpu() && ix.device().is_cpu() && v.device().is_cpu() && g.device().is_cpu() &&
                    r.device().is_cpu(),
                "gnnpipe._C.add_blocks: CPU tensors only");
    TORCH_CHECK(p.dim() == 1 && p.scalar_type() == at::kLong && p.is_contiguous() && p.numel() == r.numel() + 1,
                "gnnpipe._C.add_blocks: block ", b, ": indptr must be contiguous int64 with rows + 1 entries");
    TORCH_CHECK(r.dim() == 1 && r.scalar_type() == at::kLong && r.is_contiguous(),
                "gnnpipe._C.add_blocks: block ", b, ": rows must be a contiguous int64 vector");
    TORCH_CHECK(ix.dim() == 1 && ix.is_contiguous() && (ix.scalar_type() == at::kInt || ix.scalar_type() == at::kLong),
                "gnnpipe._C.add_blocks: block ", b, ": indices must be contiguous int32/int64");
    TORCH_CHECK(v.dim() == 1 && v.is_contiguous() && v.numel() == ix.numel() && v.scalar_type() == out.scalar_type(),
                "gnnpipe._C.add_blocks: block ", b, ": values must be contiguous, as long as indices, of out's dtype");
    TORCH_CHECK(g.dim() == 2 && g.is_contiguous() && g.size(1) == d && g.scalar_type() == out.scalar_type(),
                "gnnpipe._C.add_blocks: block ", b, ": g must be a contiguous [*, d] matrix of out's dtype");
    if (r.numel() == 0) continue;
    const int64_t* pp = p.data_ptr<int64_t>();
    TORCH_CHECK(pp[0] >= 0 && pp[r.numel()] <= ix.numel(), "gnnpipe._C.add_blocks: block ", b,
                ": indptr points outside indices");
    const int64_t* rp = r.data_ptr<int64_t>();
    for (int64_t i = 0; i < r.numel(); ++i)
      TORCH_CHECK(rp[i] >= 0 && rp[i] < num_out, "gnnpipe._C.add_blocks: block ", b, ": row ", rp[i], " outside out");
    const int64_t lo = pp[0], hi = pp[r.numel()], gr = g.size(0);
    bool ok = true;
    if (ix.scalar_type() == at::kInt) {
      const int32_t* q = ix.data_ptr<int32_t>();
      for (int64_t j = lo; j < hi; ++j) ok &= q[j] >= 0 && q[j] < gr;
    } else {
      const int64_t* q = ix.data_ptr<int64_t>();
      for (int64_t j = lo; j < hi; ++j) ok &= q[j] >= 0 && q[j] < gr;
    }
    TORCH_CHECK(ok, "gnnpipe._C.add_blocks: block ", b, ": an index is outside g's ", gr, " rows");
  }
  const Kernels& k = kernels();
  if (out.scalar_type() == at::kFloat) {
    std::vector<float> tmp;
    for (size_t b = 0; b < nb; ++b) {
      if (indices[b].scalar_type() == at::kInt)
        add_block<float, int32_t>(k.f32_i32, out.data_ptr<float>(), d, indptrs[b], indices[b], values[b], gs[b],
                                  rows[b], static_cast<float>(alpha), tmp);
      else
        add_block<float, int64_t>(k.f32_i64, out.data_ptr<float>(), d, indptrs[b], indices[b], values[b], gs[b],
                                  rows[b], static_cast<float>(alpha), tmp);
    }
  } else {
    std::vector<double> tmp;
    for (size_t b = 0; b < nb; ++b) {
      if (indices[b].scalar_type() == at::kInt)
        add_block<double, int32_t>(k.f64_i32, out.data_ptr<double>(), d, indptrs[b], indices[b], values[b], gs[b],
                                   rows[b], alpha, tmp);
      else
        add_block<double, int64_t>(k.f64_i64, out.data_ptr<double>(), d, indptrs[b], indices[b], values[b], gs[b],
                                   rows[b], alpha, tmp);
    }
  }
}

bool has_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

std::string isa() { return kernels().isa; }

}  // namespace gnnpipe
