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

bool has_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

std::string isa() { return kernels().isa; }

}  // namespace gnnpipe
