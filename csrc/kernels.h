// gnnpipe._C: declarations shared by the kernel sources and the Python bindings (module.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace gnnpipe {

// out = A @ x for CSR A (indptr int64 [R+1], indices int32/int64 [nnz], values [nnz]), x [K, d]: out [R, d].
at::Tensor spmm(const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& values, const at::Tensor& x,
                int64_t num_rows);

// For every block b in order: out[rows_b[i], :] += alpha * (A_b @ g_b)[i, :], A_b in CSR (indptr_b int64 [n_b+1],
// possibly a view starting past 0; indices_b int32/int64 into g_b's rows; values_b), rows_b int64 [n_b].
// The cross-chunk gradient pulls of one unit and layer in one call (gnnpipe/models/sparse.py: add_blocks).
void add_blocks(at::Tensor& out, const std::vector<at::Tensor>& indptrs, const std::vector<at::Tensor>& indices,
                const std::vector<at::Tensor>& values, const std::vector<at::Tensor>& gs,
                const std::vector<at::Tensor>& rows, double alpha);

// Bool keep-mask of `numel` elements, equal to torch.rand(numel, generator=g) >= p for a CPU generator g
// after g.manual_seed(seed): torch's mt19937 stream, 24 random bits per float32 draw, compared in float32.
at::Tensor keep_mask(int64_t seed, int64_t numel, double p);

// x * (mask ? scale : 0) with the rounding of x * (mask.to(x.dtype) * scale).
at::Tensor masked_scale(const at::Tensor& x, const at::Tensor& mask, double scale);

std::string isa();   // instruction set the SpMM kernels run with
bool has_openmp();   // compiled with OpenMP

}  // namespace gnnpipe
