// The component codecs of vLLM's TurboQuant KV-cache presets (DESIGN.md §2.5), reproduced from
// vLLM's sources (vllm/model_executor/layers/quantization/turboquant/{config,centroids}.py,
// vllm/v1/attention/backends/turboquant_attn.py, vllm/v1/attention/ops/
// triton_turboquant_{store,decode}.py, read 2026-11). The presets themselves (which K and V
// codec, boundary layers) are in codecs/presets.{h,cpp}.
//
// vllm-k8   — keys cast to FP8 E4M3FN with no scale at all (vLLM's k_vals.to(float8e4nv):
//             round to nearest even, saturating at ±448; no rotation). d bytes: 8.0 bpv.
// vllm-k4nc, vllm-k3nc — "MSE" keys with norm correction:
//             n = ‖k‖ (fp32), x̂ = k/(n + 1e-8), y = H x̂ with H the orthonormal Sylvester
//             Hadamard matrix (no random signs, the same for every layer and head, so d must be
//             a power of two), idx_j = number of codebook midpoints ≤ y_j, where the codebook is
//             vLLM's Lloyd-Max solution for N(0, 1/d) (its own iteration, reproduced below).
//             Decode with norm correction: c = centroids[idx], x̃ = n · Hᵀ (c / √(‖c‖² + 1e-16)).
//             Token layout: [⌈d·b/8⌉ bytes of b-bit indices, LSB-first (vLLM packs 4-bit pairs
//             low nibble first and 3-bit groups of 8 into 24 bits — the same stream)]
//             [fp16 n]. bpv = b + 16/d (4.25/4.125 and 3.25/3.125 at d = 64/128).
// vllm-v4, vllm-v3 — values, uniform per token: mn = min, s = max((max − mn)/(2^b − 1), 1e-8)
//             (fp32), q_j = clamp(trunc((v_j − mn)/s + 0.5), 0, 2^b − 1), stored fp16 s and mn,
//             v_j ≈ s·q_j + mn. Token layout: [⌈d·b/8⌉ bytes of codes, LSB-first][fp16 s]
//             [fp16 mn]. bpv = b + 32/d (4.5/4.25 and 3.5/3.25 at d = 64/128). d % 8 == 0.
// vLLM puts K and V of one token and head into one slot rounded up to an even byte count; for
// the four presets that padding is zero at every allowed head dimension ≥ 16.
#include "codecs/vllm_tq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "codecs/common.h"
#include "codecs/fp8.h"
#include "core/bitpack.h"
#include "core/half.h"
#include "core/rotation.h"

namespace tq {
namespace {



// vLLM's centroids.py: Lloyd-Max for N(0, σ² = 1/d), centroids started uniformly over ±3.5σ,
// cells integrated by the trapezoid rule (200 intervals) over [−10.5σ, 10.5σ], at most 200
// iterations, stopping (without taking the last update) once no centroid moves by 1e-10.
// Returned as float32, like the torch tensor vLLM uses, with float32 midpoints.
VllmCodebook solve_vllm_lloyd_max(int d, int bits) {
  const int n = 1 << bits;
  const double sigma2 = 1.0 / d, sigma = std::sqrt(sigma2);
  auto pdf = [&](double x) {
    return (1.0 / std::sqrt(2 * M_PI * sigma2)) * std::exp(-x * x / (2 * sigma2));
  };
  auto trapz = [](auto f, double a, double b) {
    const int m = 200;
    const double h = (b - a) / m;
    double r = 0.5 * (f(a) + f(b));
    for (int i = 1; i < m; ++i) r += f(a + i * h);
    return r * h;
  };
  const double lo = -3.5 * sigma, hi = 3.5 * sigma;
  std::vector<double> c(n);
  for (int i = 0; i < n; ++i) c[i] = lo + (hi - lo) * (i + 0.5) / n;
  for (int it = 0; it < 200; ++it) {
    std::vector<double> edges{lo * 3};
    for (int i = 0; i + 1 < n; ++i) edges.push_back((c[i] + c[i + 1]) / 2.0);
    edges.push_back(hi * 3);
    std::vector<double> nc(n);
    double moved = 0;
    for (int i = 0; i < n; ++i) {
      const double num = trapz([&](double x) { return x * pdf(x); }, edges[i], edges[i + 1]);
      const double den = trapz(pdf, edges[i], edges[i + 1]);
      nc[i] = den > 1e-15 ? num / den : c[i];
      moved = std::max(moved, std::fabs(nc[i] - c[i]));
    }
    if (moved < 1e-10) break;
    c = nc;
  }
  VllmCodebook cb;
  for (double v : c) cb.centroids.push_back(float(v));
  for (int i = 0; i + 1 < n; ++i)
    cb.midpoints.push_back((cb.centroids[i] + cb.centroids[i + 1]) / 2.0f);
  return cb;
}

}  // namespace

const VllmCodebook& vllm_codebook(int d, int bits) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, VllmCodebook> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find({d, bits});
  if (it == cache.end())
    it = cache.emplace(std::make_pair(d, bits), solve_vllm_lloyd_max(d, bits)).first;
  return it->second;
}

namespace {

// Orthonormal Sylvester Hadamard: y = H x / √d (H symmetric, so it is its own inverse).
void hadamard(const float* x, float* y, int d) {
  if (x != y) std::memcpy(y, x, sizeof(float) * d);
  fwht_ref(y, d);
  const float s = 1.0f / std::sqrt(float(d));
  for (int i = 0; i < d; ++i) y[i] *= s;
}

// ---------------------------------------------------------------- FP8 keys
class VllmFp8KeyCodec final : public Codec {
 public:
  explicit VllmFp8KeyCodec(int dim) : dim_(dim) {}
  std::string name() const override { return "vllm-k8"; }
  int dim() const override { return dim_; }
  size_t block_bytes() const override { return size_t(dim_); }
  void encode(const float* x, size_t n, uint8_t* codes) const override {
    check_finite(x, n * dim_, "encode");
    for (size_t i = 0; i < n * dim_; ++i) codes[i] = f32_to_e4m3fn_sat(x[i]);
  }
  void decode(const uint8_t* codes, size_t n, float* x) const override {
    for (size_t i = 0; i < n * dim_; ++i) x[i] = e4m3fn_to_f32(codes[i]);
  }
  std::unique_ptr<QueryState> prepare_query(const float* q) const override {
    return plain_query(q, dim_);
  }
  void score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const override {
    const float* q = plain_query_data(qs);
    for (size_t t = 0; t < n; ++t) {
      float a = 0;
      for (int j = 0; j < dim_; ++j) a += q[j] * e4m3fn_to_f32(codes[t * dim_ + j]);
      out[t] = a;
    }
  }
  void accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const override {
    for (size_t t = 0; t < n; ++t)
      for (int j = 0; j < dim_; ++j) acc[j] += w[t] * e4m3fn_to_f32(codes[t * dim_ + j]);
  }
  void finish(const float* acc, float* out) const override {
    std::memcpy(out, acc, sizeof(float) * dim_);
  }

 private:
  int dim_;
};

// ---------------------------------------------------------------- MSE keys, norm correction
class VllmMseKeyCodec final : public Codec {
 public:
  VllmMseKeyCodec(int dim, int bits)
      : dim_(dim), bits_(bits), idx_bytes_(packed_bytes(dim, bits)),
        cb_(vllm_codebook(dim, bits)) {}
  std::string name() const override { return "vllm-k" + std::to_string(bits_) + "nc"; }
  int dim() const override { return dim_; }
  size_t block_bytes() const override { return idx_bytes_ + 2; }

  void encode(const float* x, size_t n, uint8_t* codes) const override {
    check_finite(x, n * dim_, "encode");
    check_fp16_range(x, n * dim_, name());
    std::vector<float> y(dim_);
    std::vector<uint8_t> idx(dim_);
    for (size_t t = 0; t < n; ++t) {
      const float* xt = x + t * dim_;
      uint8_t* blk = codes + t * block_bytes();
      double n2 = 0;
      for (int j = 0; j < dim_; ++j) n2 += double(xt[j]) * xt[j];
      const float nrm = float(std::sqrt(n2));
      const float inv = nrm + 1e-8f;
      for (int j = 0; j < dim_; ++j) y[j] = xt[j] / inv;
      hadamard(y.data(), y.data(), dim_);
      for (int j = 0; j < dim_; ++j) {
        int k = 0;  // number of midpoints ≤ y_j (vLLM's bucketize with y ≥ mid → upper)
        while (k < int(cb_.midpoints.size()) && y[j] >= cb_.midpoints[k]) ++k;
        idx[j] = uint8_t(k);
      }
      pack_bits(idx.data(), dim_, bits_, blk);
      store_f16(blk + idx_bytes_, nrm);
    }
  }
  // The unit-norm centroid vector of a token times its stored norm: the decoded token in the
  // rotated domain.
  void rotated_token(const uint8_t* blk, float* c) const {
    std::vector<uint8_t> idx(dim_);
    unpack_bits(blk, dim_, bits_, idx.data());
    float c2 = 0;
    for (int j = 0; j < dim_; ++j) {
      c[j] = cb_.centroids[idx[j]];
      c2 += c[j] * c[j];
    }
    const float a = load_f16(blk + idx_bytes_) / std::sqrt(c2 + 1e-16f);
    for (int j = 0; j < dim_; ++j) c[j] *= a;
  }
  void decode(const uint8_t* codes, size_t n, float* x) const override {
    for (size_t t = 0; t < n; ++t) {
      rotated_token(codes + t * block_bytes(), x + t * dim_);
      hadamard(x + t * dim_, x + t * dim_, dim_);
    }
  }
  std::unique_ptr<QueryState> prepare_query(const float* q) const override {
    auto s = std::make_unique<VecQuery>();
    s->q.resize(dim_);
    hadamard(q, s->q.data(), dim_);
    return s;
  }
  void score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const override {
    const float* q = plain_query_data(qs);
    for (size_t t = 0; t < n; ++t) out[t] = vllm_mse_dot_ref(codes + t * block_bytes(), q);
  }
  void accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const override {
    std::vector<float> c(dim_);
    for (size_t t = 0; t < n; ++t) {
      rotated_token(codes + t * block_bytes(), c.data());
      for (int j = 0; j < dim_; ++j) acc[j] += w[t] * c[j];
    }
  }
  void finish(const float* acc, float* out) const override { hadamard(acc, out, dim_); }

  // Scalar reference score of one token against the rotated query q' = Hq/√d:
  // n/√(‖c‖² + 1e-16) · Σ_j q'_j·c_j.
  float vllm_mse_dot_ref(const uint8_t* blk, const float* qrot) const {
    std::vector<uint8_t> idx(dim_);
    unpack_bits(blk, dim_, bits_, idx.data());
    float a = 0, c2 = 0;
    for (int j = 0; j < dim_; ++j) {
      const float c = cb_.centroids[idx[j]];
      a += qrot[j] * c;
      c2 += c * c;
    }
    return load_f16(blk + idx_bytes_) / std::sqrt(c2 + 1e-16f) * a;
  }

 private:
  int dim_, bits_;
  size_t idx_bytes_;
  const VllmCodebook& cb_;
};

// ---------------------------------------------------------------- uniform values
class VllmValueCodec final : public Codec {
 public:
  VllmValueCodec(int dim, int bits)
      : dim_(dim), bits_(bits), code_bytes_(packed_bytes(dim, bits)) {}
  std::string name() const override { return "vllm-v" + std::to_string(bits_); }
  int dim() const override { return dim_; }
  size_t block_bytes() const override { return code_bytes_ + 4; }

  void encode(const float* x, size_t n, uint8_t* codes) const override {
    check_finite(x, n * dim_, "encode");
    check_fp16_range(x, n * dim_, name());
    const int qmax = (1 << bits_) - 1;
    std::vector<uint8_t> q(dim_);
    for (size_t t = 0; t < n; ++t) {
      const float* v = x + t * dim_;
      uint8_t* blk = codes + t * block_bytes();
      const float mn = *std::min_element(v, v + dim_), mx = *std::max_element(v, v + dim_);
      float s = (mx - mn) / float(qmax);
      s = s > 1e-8f ? s : 1e-8f;
      for (int j = 0; j < dim_; ++j)
        q[j] = uint8_t(std::clamp(int((v[j] - mn) / s + 0.5f), 0, qmax));
      pack_bits(q.data(), dim_, bits_, blk);
      store_f16(blk + code_bytes_, s);
      store_f16(blk + code_bytes_ + 2, mn);
    }
  }
  void decode(const uint8_t* codes, size_t n, float* x) const override {
    std::vector<uint8_t> q(dim_);
    for (size_t t = 0; t < n; ++t) {
      const uint8_t* blk = codes + t * block_bytes();
      unpack_bits(blk, dim_, bits_, q.data());
      const float s = load_f16(blk + code_bytes_), m = load_f16(blk + code_bytes_ + 2);
      for (int j = 0; j < dim_; ++j) x[t * dim_ + j] = float(q[j]) * s + m;
    }
  }
  std::unique_ptr<QueryState> prepare_query(const float* q) const override {
    return plain_query(q, dim_);
  }
  void score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const override {
    const float* q = plain_query_data(qs);
    for (size_t t = 0; t < n; ++t) out[t] = vllm_value_dot_ref(codes + t * block_bytes(), q);
  }
  void accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const override {
    std::vector<uint8_t> q(dim_);
    for (size_t t = 0; t < n; ++t) {
      const uint8_t* blk = codes + t * block_bytes();
      unpack_bits(blk, dim_, bits_, q.data());
      const float s = w[t] * load_f16(blk + code_bytes_);
      const float m = w[t] * load_f16(blk + code_bytes_ + 2);
      for (int j = 0; j < dim_; ++j) acc[j] += float(q[j]) * s + m;
    }
  }
  void finish(const float* acc, float* out) const override {
    std::memcpy(out, acc, sizeof(float) * dim_);
  }

  // Scalar reference score of one token: s·Σ_j q_j·c_j + mn·Σ_j q_j.
  float vllm_value_dot_ref(const uint8_t* blk, const float* q) const {
    std::vector<uint8_t> c(dim_);
    unpack_bits(blk, dim_, bits_, c.data());
    float a = 0, qsum = 0;
    for (int j = 0; j < dim_; ++j) {
      a += q[j] * float(c[j]);
      qsum += q[j];
    }
    return load_f16(blk + code_bytes_) * a + load_f16(blk + code_bytes_ + 2) * qsum;
  }

 private:
  int dim_, bits_;
  size_t code_bytes_;
};

}  // namespace

void register_vllm_codecs() {
  register_codec({"vllm-k8",
                  "vLLM TurboQuant FP8 keys: E4M3FN cast, no scale, no rotation (8.0 bpv)",
                  [](std::string_view, int d, const CodecOptions&) -> std::unique_ptr<Codec> {
                    return std::make_unique<VllmFp8KeyCodec>(d);
                  },
                  200});
  auto mse = [](int bits) {
    return [bits](std::string_view t, int d, const CodecOptions&) -> std::unique_ptr<Codec> {
      if (!is_pow2(d))
        unsupported_dim(t, d, "vLLM's Sylvester Hadamard rotation needs a power of two");
      return std::make_unique<VllmMseKeyCodec>(d, bits);
    };
  };
  register_codec({"vllm-k4nc",
                  "vLLM TurboQuant keys: Hadamard + 4-bit Lloyd-Max (Gaussian), fp16 norm, "
                  "norm correction at decode",
                  mse(4), 201});
  register_codec({"vllm-k3nc",
                  "vLLM TurboQuant keys: Hadamard + 3-bit Lloyd-Max (Gaussian), fp16 norm, "
                  "norm correction at decode",
                  mse(3), 202});
  auto val = [](int bits) {
    return [bits](std::string_view t, int d, const CodecOptions&) -> std::unique_ptr<Codec> {
      if (d % 8 != 0) unsupported_dim(t, d, "vLLM's value packing needs a multiple of 8");
      return std::make_unique<VllmValueCodec>(d, bits);
    };
  };
  register_codec({"vllm-v4",
                  "vLLM TurboQuant values: 4-bit uniform per token, fp16 scale and zero",
                  val(4), 203});
  register_codec({"vllm-v3",
                  "vLLM TurboQuant values: 3-bit uniform per token, fp16 scale and zero",
                  val(3), 204});
}

}  // namespace tq
