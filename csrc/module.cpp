// Python bindings of gnnpipe._C (the only source that includes pybind11).
#include <torch/python.h>

#include "kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "GNNPipe CPU kernels: weighted CSR SpMM, byte dropout masks from torch's random stream, masked scale";
  m.def("spmm", &gnnpipe::spmm, "out = A @ x for CSR A (indptr int64, indices int32/int64, values) and x [K, d]",
        py::arg("indptr"), py::arg("indices"), py::arg("values"), py::arg("x"), py::arg("num_rows"));
  m.def("add_blocks", &gnnpipe::add_blocks, "out[rows_b] += alpha * (A_b @ g_b) for every CSR block b, in order",
        py::arg("out"), py::arg("indptrs"), py::arg("indices"), py::arg("values"), py::arg("gs"), py::arg("rows"),
        py::arg("alpha"));
  m.def("keep_mask", &gnnpipe::keep_mask, "torch.rand(numel, generator=manual_seed(seed)) >= p, as bool",
        py::arg("seed"), py::arg("numel"), py::arg("p"));
  m.def("masked_scale", &gnnpipe::masked_scale, "x * (mask ? scale : 0)", py::arg("x"), py::arg("mask"),
        py::arg("scale"));
  m.def("isa", &gnnpipe::isa, "instruction set the SpMM kernels run with");
  m.def("has_openmp", &gnnpipe::has_openmp, "whether the extension was compiled with OpenMP");
}
