// Dropout without float masks: the keep-mask is drawn straight into bytes from torch's own random stream, and
// applied (forward and backward) in one pass.
//
// keep_mask reproduces torch.rand(n, generator=g, dtype=float32) >= p for a CPU generator seeded with
// g.manual_seed(seed): torch's CPU generator is the standard MT19937 seeded with the low 32 bits of the seed;
// a float32 uniform is (r & 0xFFFFFF) * 2^-24 for each 32-bit draw r, in memory order; the comparison is in
// float32. So keep <=> (r & 0xFFFFFF) >= ceil(float(p) * 2^24), an integer test. gnnpipe/models/ops.py checks
// this equality against torch at first use and falls back to torch.rand if it ever fails (another torch).
#include "kernels.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

namespace gnnpipe {
namespace {

constexpr int kN = 624, kM = 397;
constexpr uint32_t kMatrixA = 0x9908b0dfu, kUpper = 0x80000000u, kLower = 0x7fffffffu;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GNNPIPE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GNNPIPE_CLONES
#endif

// One MT19937 twist: regenerates all 624 state words (loops written so that they vectorise).
GNNPIPE_CLONES void twist(uint32_t* __restrict__ mt) {
  for (int i = 0; i < kN - kM; ++i) {
    const uint32_t y = (mt[i] & kUpper) | (mt[i + 1] & kLower);
    mt[i] = mt[i + kM] ^ (y >> 1) ^ ((0u - (y & 1u)) & kMatrixA);
  }
  for (int i = kN - kM; i < kN - 1; ++i) {
    const uint32_t y = (mt[i] & kUpper) | (mt[i + 1] & kLower);
    mt[i] = mt[i + kM - kN] ^ (y >> 1) ^ ((0u - (y & 1u)) & kMatrixA);
  }
  const uint32_t y = (mt[kN - 1] & kUpper) | (mt[0] & kLower);
  mt[kN - 1] = mt[kM - 1] ^ (y >> 1) ^ ((0u - (y & 1u)) & kMatrixA);
}

// Temper n <= 624 state words and write keep = (24 low bits >= threshold).
GNNPIPE_CLONES void temper_compare(const uint32_t* __restrict__ mt, uint8_t* __restrict__ out, int n,
                                   uint32_t threshold) {
  for (int i = 0; i < n; ++i) {
    uint32_t y = mt[i];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    out[i] = static_cast<uint8_t>((y & 0xFFFFFFu) >= threshold);
  }
}

GNNPIPE_CLONES void masked_scale_f32(const float* __restrict__ x, const uint8_t* __restrict__ m, float* __restrict__ o,
                                     int64_t n, float scale) {
  for (int64_t i = 0; i < n; ++i) o[i] = x[i] * (static_cast<float>(m[i]) * scale);  // 1*s == s, 0*s == 0
}

GNNPIPE_CLONES void masked_scale_f64(const double* __restrict__ x, const uint8_t* __restrict__ m,
                                     double* __restrict__ o, int64_t n, double scale) {
  for (int64_t i = 0; i < n; ++i) o[i] = x[i] * (static_cast<double>(m[i]) * scale);
}

}  // namespace

at::Tensor keep_mask(int64_t seed, int64_t numel, double p) {
  TORCH_CHECK(numel >= 0, "gnnpipe._C.keep_mask: numel must be >= 0");
  TORCH_CHECK(p >= 0.0 && p < 1.0, "gnnpipe._C.keep_mask: p must lie in [0, 1)");
  auto out = at::empty({numel}, at::TensorOptions().dtype(at::kBool));
  auto* o = reinterpret_cast<uint8_t*>(out.data_ptr<bool>());
  // uniform u = k * 2^-24 (k < 2^24) is >= float(p) iff k >= ceil(float(p) * 2^24): exact in double
  const uint32_t threshold = static_cast<uint32_t>(std::ceil(static_cast<double>(static_cast<float>(p)) * 16777216.0));
  alignas(64) uint32_t mt[kN];
  mt[0] = static_cast<uint32_t>(static_cast<uint64_t>(seed) & 0xffffffffu);
  for (int i = 1; i < kN; ++i) mt[i] = 1812433253u * (mt[i - 1] ^ (mt[i - 1] >> 30)) + static_cast<uint32_t>(i);
  for (int64_t done = 0; done < numel; done += kN) {
    twist(mt);
    const int n = static_cast<int>(std::min<int64_t>(kN, numel - done));
    temper_compare(mt, o + done, n, threshold);
  }
  return out;
}

at::Tensor masked_scale(const at::Tensor& x, const at::Tensor& mask, double scale) {
  TORCH_CHECK(x.device().is_cpu() && mask.device().is_cpu(), "gnnpipe._C.masked_scale: CPU tensors only");
  TORCH_CHECK(mask.scalar_type() == at::kBool && mask.sizes() == x.sizes(),
              "gnnpipe._C.masked_scale: mask must be a bool tensor of x's shape");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "gnnpipe._C.masked_scale: float32/float64 only");
  const at::Tensor xc = x.contiguous();
  const at::Tensor mc = mask.contiguous();
  at::Tensor out = at::empty_like(xc);
  const auto* m = reinterpret_cast<const uint8_t*>(mc.data_ptr<bool>());
  const int64_t n = xc.numel();
  if (x.scalar_type() == at::kFloat) {
    const float* xp = xc.data_ptr<float>();
    float* op = out.data_ptr<float>();
    const float s = static_cast<float>(scale);  // torch rounds a Python scalar to the tensor's dtype
    at::parallel_for(0, n, int64_t{1} << 16,
                     [&](int64_t lo, int64_t hi) { masked_scale_f32(xp + lo, m + lo, op + lo, hi - lo, s); });
  } else {
    const double* xp = xc.data_ptr<double>();
    double* op = out.data_ptr<double>();
    at::parallel_for(0, n, int64_t{1} << 16,
                     [&](int64_t lo, int64_t hi) { masked_scale_f64(xp + lo, m + lo, op + lo, hi - lo, scale); });
  }
  return out;
}

}  // namespace gnnpipe
