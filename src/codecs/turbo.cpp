#include "codecs/turbo.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "codecs/turbo_layout.h"
#include "core/bitpack.h"
#include "core/half.h"
#include "core/rng.h"

namespace tq {
namespace {

using turbo_layout::kRotationTag, turbo_layout::kSketchTag, turbo_layout::kSplitHiTag,
    turbo_layout::kSplitLoTag;

struct TurboQuery : QueryState {
  std::vector<float> q;   // Π q
  std::vector<float> sq;  // S Π q (prod only)
};

}  // namespace

// ---------------------------------------------------------------- TurboQuant_mse
TurboMseCodec::TurboMseCodec(int dim, int bits, uint64_t seed, bool nc)
    : dim_(dim), bits_(bits), nc_(nc), code_bytes_(packed_bytes(dim, bits)),
      cb_(&lloyd_max_codebook(dim, bits)), rot_(dim, derive_seed(seed, kRotationTag)) {}

std::string TurboMseCodec::name() const {
  return "turbo" + std::to_string(bits_) + (nc_ ? "nc" : "");
}

float TurboMseCodec::encode_one(const float* x, uint8_t* idx) const {
  const int d = dim_;
  double n2 = 0;
  for (int j = 0; j < d; ++j) n2 += double(x[j]) * x[j];
  const float n = float(std::sqrt(n2));
  if (n == 0.0f) {
    std::fill(idx, idx + d, uint8_t(0));
    return 0.0f;
  }
  std::vector<float> u(d);
  const float inv = 1.0f / n;
  for (int j = 0; j < d; ++j) u[j] = x[j] * inv;
  rot_.forward(u.data(), u.data());
  for (int j = 0; j < d; ++j) idx[j] = uint8_t(cb_->quantize(u[j]));
  if (!nc_) return n;
  double c2 = 0;
  for (int j = 0; j < d; ++j) c2 += double(cb_->centroids[idx[j]]) * cb_->centroids[idx[j]];
  return c2 > 0 ? float(n / std::sqrt(c2)) : 0.0f;
}

void TurboMseCodec::encode(const float* x, size_t n, uint8_t* codes) const {
  if (rot_.kind() != Rotation::Kind::kHadamard || dim_ > 1024) return encode_ref(x, n, codes);
  check_finite(x, n * dim_, "encode");
  cpu::kernels().encode_mse(x, n, dim_, rot_.signs().data(), bits_, cb_->boundaries.data(),
                            cb_->centroids.data(), nc_, codes, block_bytes(), 0, 2);
}

void TurboMseCodec::encode_ref(const float* x, size_t n, uint8_t* codes) const {
  check_finite(x, n * dim_, "encode");
  std::vector<uint8_t> idx(dim_);
  for (size_t t = 0; t < n; ++t) {
    uint8_t* blk = codes + t * block_bytes();
    const float nrm = encode_one(x + t * dim_, idx.data());
    store_f16(blk, nrm);
    pack_bits(idx.data(), dim_, bits_, blk + 2);
  }
}

void TurboMseCodec::decode(const uint8_t* codes, size_t n, float* x) const {
  std::vector<uint8_t> idx(dim_);
  for (size_t t = 0; t < n; ++t) {
    const uint8_t* blk = codes + t * block_bytes();
    const float nrm = load_f16(blk);
    unpack_bits(blk + 2, dim_, bits_, idx.data());
    float* y = x + t * dim_;
    for (int j = 0; j < dim_; ++j) y[j] = nrm * cb_->centroids[idx[j]];
    rot_.inverse(y, y);
  }
}

std::unique_ptr<QueryState> TurboMseCodec::prepare_query(const float* q) const {
  auto s = std::make_unique<TurboQuery>();
  s->q.resize(dim_);
  rot_.forward(q, s->q.data());
  return s;
}

cpu::CodeRows TurboMseCodec::rows(const uint8_t* base, size_t stride, size_t off) const {
  return {base, stride, off, off + 2, dim_, bits_, 1.0f, cb_->centroids.data()};
}

const std::vector<float>& TurboMseCodec::rotated_query(const QueryState& qs) {
  return static_cast<const TurboQuery&>(qs).q;
}

void TurboMseCodec::score(const QueryState& qs, const uint8_t* codes, size_t n,
                          float* out) const {
  cpu::kernels().score_rows(rows(codes, block_bytes()), n, rotated_query(qs).data(), 1, out, n,
                            false);
}

void TurboMseCodec::accumulate(const uint8_t* codes, size_t n, const float* w,
                               float* acc) const {
  cpu::kernels().acc_rows(rows(codes, block_bytes()), n, w, n, 1, acc, size_t(dim_));
}

void TurboMseCodec::score_ref(const QueryState& qs, const uint8_t* codes, size_t n,
                              float* out) const {
  const auto& q = static_cast<const TurboQuery&>(qs).q;
  std::vector<uint8_t> idx(dim_);
  for (size_t t = 0; t < n; ++t) {
    const uint8_t* blk = codes + t * block_bytes();
    unpack_bits(blk + 2, dim_, bits_, idx.data());
    double s = 0;
    for (int j = 0; j < dim_; ++j) s += double(q[j]) * cb_->centroids[idx[j]];
    out[t] = float(load_f16(blk) * s);
  }
}

void TurboMseCodec::accumulate_ref(const uint8_t* codes, size_t n, const float* w,
                                   float* acc) const {
  std::vector<uint8_t> idx(dim_);
  for (size_t t = 0; t < n; ++t) {
    const uint8_t* blk = codes + t * block_bytes();
    unpack_bits(blk + 2, dim_, bits_, idx.data());
    const float a = w[t] * load_f16(blk);
    for (int j = 0; j < dim_; ++j) acc[j] += a * cb_->centroids[idx[j]];
  }
}

void TurboMseCodec::finish(const float* acc, float* out) const { rot_.inverse(acc, out); }

// ---------------------------------------------------------------- TurboQuant_prod
TurboProdCodec::TurboProdCodec(int dim, int bits, uint64_t seed)
    : dim_(dim), bits_(bits), mse_bytes_(packed_bytes(dim, bits - 1)),
      sign_bytes_(packed_bytes(dim, 1)), cb_(&lloyd_max_codebook(dim, bits - 1)),
      rot_(dim, derive_seed(seed, kRotationTag)) {
  Rng rng(derive_seed(seed, kSketchTag));
  s_.resize(size_t(dim) * dim);
  for (auto& v : s_) v = float(rng.normal());
}

std::string TurboProdCodec::name() const { return "turbo" + std::to_string(bits_) + "p"; }

void TurboProdCodec::encode(const float* x, size_t n, uint8_t* codes) const {
  check_finite(x, n * dim_, "encode");
  const int d = dim_;
  std::vector<float> u(d), r(d);
  std::vector<uint8_t> idx(d), z(d);
  for (size_t t = 0; t < n; ++t) {
    uint8_t* blk = codes + t * block_bytes();
    const float* xt = x + t * d;
    double n2 = 0;
    for (int j = 0; j < d; ++j) n2 += double(xt[j]) * xt[j];
    const float nrm = float(std::sqrt(n2));
    if (nrm == 0.0f) {
      std::memset(blk, 0, block_bytes());
      continue;
    }
    for (int j = 0; j < d; ++j) u[j] = xt[j] / nrm;
    rot_.forward(u.data(), u.data());
    const float nrm16 = round_f16(nrm);  // the residual is taken against what decode will see
    double g2 = 0;
    for (int j = 0; j < d; ++j) {
      idx[j] = uint8_t(cb_->quantize(u[j]));
      r[j] = nrm * u[j] - nrm16 * cb_->centroids[idx[j]];
      g2 += double(r[j]) * r[j];
    }
    for (int i = 0; i < d; ++i) {
      const float* si = &s_[size_t(i) * d];
      double acc = 0;
      for (int j = 0; j < d; ++j) acc += double(si[j]) * r[j];
      z[i] = acc >= 0 ? 1 : 0;
    }
    store_f16(blk, nrm);
    store_f16(blk + 2, float(std::sqrt(g2)));
    pack_bits(idx.data(), d, bits_ - 1, blk + 4);
    pack_bits(z.data(), d, 1, blk + 4 + mse_bytes_);
  }
}

void TurboProdCodec::decode(const uint8_t* codes, size_t n, float* x) const {
  std::vector<float> acc(2 * dim_);
  const float one = 1.0f;
  for (size_t t = 0; t < n; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    accumulate_ref(codes + t * block_bytes(), 1, &one, acc.data());
    finish(acc.data(), x + t * dim_);
  }
}

void TurboProdCodec::prepare_vectors(const float* q, float* rq, float* sq) const {
  const int d = dim_;
  rot_.forward(q, rq);
  for (int i = 0; i < d; ++i) sq[i] = float(dot(&s_[size_t(i) * d], rq, d));
}

double TurboProdCodec::qjl_factor(int d) { return std::sqrt(M_PI / 2) / d; }

std::unique_ptr<QueryState> TurboProdCodec::prepare_query(const float* q) const {
  auto s = std::make_unique<TurboQuery>();
  s->q.resize(dim_);
  s->sq.resize(dim_);
  prepare_vectors(q, s->q.data(), s->sq.data());
  return s;
}

namespace {
const float kSignTable[2] = {-1.0f, 1.0f};
}

cpu::CodeRows TurboProdCodec::mse_rows(const uint8_t* base, size_t stride) const {
  return {base, stride, 0, 4, dim_, bits_ - 1, 1.0f, cb_->centroids.data()};
}

cpu::CodeRows TurboProdCodec::sign_rows(const uint8_t* base, size_t stride,
                                        float scale_mul) const {
  return {base, stride, 2, 4 + mse_bytes_, dim_, 1, scale_mul, kSignTable};
}

void TurboProdCodec::score(const QueryState& qs, const uint8_t* codes, size_t n,
                           float* out) const {
  const auto& st = static_cast<const TurboQuery&>(qs);
  const auto& k = cpu::kernels();
  k.score_rows(mse_rows(codes, block_bytes()), n, st.q.data(), 1, out, n, false);
  k.score_rows(sign_rows(codes, block_bytes(), float(qjl_factor(dim_))), n, st.sq.data(), 1,
               out, n, true);
}

void TurboProdCodec::accumulate(const uint8_t* codes, size_t n, const float* w,
                                float* acc) const {
  const auto& k = cpu::kernels();
  k.acc_rows(mse_rows(codes, block_bytes()), n, w, n, 1, acc, size_t(dim_));
  k.acc_rows(sign_rows(codes, block_bytes(), 1.0f), n, w, n, 1, acc + dim_, size_t(dim_));
}

void TurboProdCodec::score_ref(const QueryState& qs, const uint8_t* codes, size_t n,
                               float* out) const {
  const auto& st = static_cast<const TurboQuery&>(qs);
  const int d = dim_;
  const double qjl = std::sqrt(M_PI / 2) / d;
  std::vector<uint8_t> idx(d), z(d);
  for (size_t t = 0; t < n; ++t) {
    const uint8_t* blk = codes + t * block_bytes();
    unpack_bits(blk + 4, d, bits_ - 1, idx.data());
    unpack_bits(blk + 4 + mse_bytes_, d, 1, z.data());
    double a = 0, b = 0;
    for (int j = 0; j < d; ++j) {
      a += double(st.q[j]) * cb_->centroids[idx[j]];
      b += z[j] ? st.sq[j] : -st.sq[j];
    }
    out[t] = float(load_f16(blk) * a + load_f16(blk + 2) * qjl * b);
  }
}

void TurboProdCodec::accumulate_ref(const uint8_t* codes, size_t n, const float* w,
                                    float* acc) const {
  const int d = dim_;
  std::vector<uint8_t> idx(d), z(d);
  for (size_t t = 0; t < n; ++t) {
    const uint8_t* blk = codes + t * block_bytes();
    unpack_bits(blk + 4, d, bits_ - 1, idx.data());
    unpack_bits(blk + 4 + mse_bytes_, d, 1, z.data());
    const float a = w[t] * load_f16(blk), g = w[t] * load_f16(blk + 2);
    for (int j = 0; j < d; ++j) {
      acc[j] += a * cb_->centroids[idx[j]];
      acc[d + j] += z[j] ? g : -g;
    }
  }
}

void TurboProdCodec::finish(const float* acc, float* out) const {
  // v = acc_mse + √(π/2)/d · Sᵀ acc_z, then out = Πᵀ v.
  const int d = dim_;
  const double qjl = std::sqrt(M_PI / 2) / d;
  std::vector<double> v(acc, acc + d);
  for (int i = 0; i < d; ++i) {
    const double zi = qjl * acc[d + i];
    const float* si = &s_[size_t(i) * d];
    for (int j = 0; j < d; ++j) v[j] += zi * si[j];
  }
  std::vector<float> vf(v.begin(), v.end());
  rot_.inverse(vf.data(), out);
}

// ---------------------------------------------------------------- fractional split
TurboSplitCodec::TurboSplitCodec(std::string name, int dim, int bits_hi, int bits_lo,
                                 uint64_t seed, std::vector<int> outliers)
    : name_(std::move(name)), dim_(dim), n_hi_(turbo_layout::split_outlier_dims(dim)) {
  if (outliers.empty())
    for (int j = 0; j < n_hi_; ++j) outliers.push_back(j);
  if (int(outliers.size()) != n_hi_)
    throw Error(name_ + ": expected " + std::to_string(n_hi_) + " outlier channels, got " +
                std::to_string(outliers.size()));
  std::vector<char> used(dim, 0);
  for (int c : outliers) {
    if (c < 0 || c >= dim || used[c]) throw Error(name_ + ": invalid or repeated outlier channel");
    used[c] = 1;
  }
  perm_ = outliers;
  for (int j = 0; j < dim; ++j)
    if (!used[j]) perm_.push_back(j);
  hi_ = std::make_unique<TurboMseCodec>(n_hi_, bits_hi, derive_seed(seed, kSplitHiTag), false);
  lo_ = std::make_unique<TurboMseCodec>(dim - n_hi_, bits_lo, derive_seed(seed, kSplitLoTag),
                                        false);
}

void TurboSplitCodec::encode(const float* x, size_t n, uint8_t* codes) const {
  check_finite(x, n * dim_, "encode");
  std::vector<float> g(dim_);
  for (size_t t = 0; t < n; ++t) {
    for (int j = 0; j < dim_; ++j) g[j] = x[t * dim_ + perm_[j]];
    uint8_t* blk = codes + t * block_bytes();
    hi_->encode(g.data(), 1, blk);
    lo_->encode(g.data() + n_hi_, 1, blk + hi_->block_bytes());
  }
}

void TurboSplitCodec::decode(const uint8_t* codes, size_t n, float* x) const {
  std::vector<float> g(dim_);
  for (size_t t = 0; t < n; ++t) {
    const uint8_t* blk = codes + t * block_bytes();
    hi_->decode(blk, 1, g.data());
    lo_->decode(blk + hi_->block_bytes(), 1, g.data() + n_hi_);
    for (int j = 0; j < dim_; ++j) x[t * dim_ + perm_[j]] = g[j];
  }
}

namespace {
struct SplitQuery : QueryState {
  std::unique_ptr<QueryState> hi, lo;
};
}  // namespace

std::unique_ptr<QueryState> TurboSplitCodec::prepare_query(const float* q) const {
  std::vector<float> g(dim_);
  for (int j = 0; j < dim_; ++j) g[j] = q[perm_[j]];
  auto s = std::make_unique<SplitQuery>();
  s->hi = hi_->prepare_query(g.data());
  s->lo = lo_->prepare_query(g.data() + n_hi_);
  return s;
}

void TurboSplitCodec::score(const QueryState& qs, const uint8_t* codes, size_t n,
                            float* out) const {
  const auto& s = static_cast<const SplitQuery&>(qs);
  const auto& k = cpu::kernels();
  k.score_rows(hi_->rows(codes, block_bytes()), n,
               TurboMseCodec::rotated_query(*s.hi).data(), 1, out, n, false);
  k.score_rows(lo_->rows(codes, block_bytes(), hi_->block_bytes()), n,
               TurboMseCodec::rotated_query(*s.lo).data(), 1, out, n, true);
}

void TurboSplitCodec::accumulate(const uint8_t* codes, size_t n, const float* w,
                                 float* acc) const {
  const auto& k = cpu::kernels();
  k.acc_rows(hi_->rows(codes, block_bytes()), n, w, n, 1, acc, size_t(n_hi_));
  k.acc_rows(lo_->rows(codes, block_bytes(), hi_->block_bytes()), n, w, n, 1, acc + n_hi_,
             size_t(dim_ - n_hi_));
}

void TurboSplitCodec::score_ref(const QueryState& qs, const uint8_t* codes, size_t n,
                                float* out) const {
  const auto& s = static_cast<const SplitQuery&>(qs);
  for (size_t t = 0; t < n; ++t) {
    const uint8_t* blk = codes + t * block_bytes();
    float a, b;
    hi_->score_ref(*s.hi, blk, 1, &a);
    lo_->score_ref(*s.lo, blk + hi_->block_bytes(), 1, &b);
    out[t] = a + b;
  }
}

void TurboSplitCodec::accumulate_ref(const uint8_t* codes, size_t n, const float* w,
                                     float* acc) const {
  for (size_t t = 0; t < n; ++t) {
    const uint8_t* blk = codes + t * block_bytes();
    hi_->accumulate_ref(blk, 1, w + t, acc);
    lo_->accumulate_ref(blk + hi_->block_bytes(), 1, w + t, acc + n_hi_);
  }
}

void TurboSplitCodec::finish(const float* acc, float* out) const {
  std::vector<float> g(dim_);
  hi_->finish(acc, g.data());
  lo_->finish(acc + n_hi_, g.data() + n_hi_);
  for (int j = 0; j < dim_; ++j) out[perm_[j]] = g[j];
}

// ---------------------------------------------------------------- registration
void register_turbo_codecs() {
  // Every TurboQuant type runs the decode driver's SIMD kernels (turbo_attn.cpp); the CUDA
  // backend stores turbo2/3/4, turbo3p (keys) and the split types.
  auto traits = [](GpuFormat gpu, bool split = false) {
    TypeTraits t;
    t.simd_attention = true;
    t.gpu = gpu;
    t.outliers_from_prefill = split;  // the split types take their outlier set from prefill
    t.center_keys = true;             // the project's own keys: mean-centred by default
    return t;
  };
  auto mse_gpu = [](int b) {
    return b == 2 ? GpuFormat::kTurbo2 : b == 3 ? GpuFormat::kTurbo3
                                       : b == 4 ? GpuFormat::kTurbo4 : GpuFormat::kNone;
  };
  for (int b = 1; b <= 8; ++b) {
    const std::string nm = "turbo" + std::to_string(b);
    register_codec({nm,
                    "TurboQuant_mse, " + std::to_string(b) +
                        "-bit Lloyd-Max codes after a random rotation, fp16 norm",
                    [b](std::string_view, int d, const CodecOptions& o) -> std::unique_ptr<Codec> {
                      return std::make_unique<TurboMseCodec>(d, b, o.seed, false);
                    },
                    100 + b * 10, traits(mse_gpu(b))});
    register_codec({nm + "nc",
                    "TurboQuant_mse " + std::to_string(b) +
                        "-bit with norm correction (stores n/|c|, decoded norm exact)",
                    [b](std::string_view, int d, const CodecOptions& o) -> std::unique_ptr<Codec> {
                      return std::make_unique<TurboMseCodec>(d, b, o.seed, true);
                    },
                    100 + b * 10 + 1, traits(GpuFormat::kNone)});
    if (b >= 2)
      register_codec(
          {nm + "p",
           "TurboQuant_prod: " + std::to_string(b - 1) +
               "-bit mse + 1-bit QJL residual sketch (unbiased scores), fp16 norms",
           [b](std::string_view, int d, const CodecOptions& o) -> std::unique_ptr<Codec> {
             return std::make_unique<TurboProdCodec>(d, b, o.seed);
           },
           100 + b * 10 + 2, traits(b == 3 ? GpuFormat::kTurbo3p : GpuFormat::kNone)});
  }
  // hi/lo: bits of the d/4 outlier channels and of the rest.
  auto split = [](int hi, int lo) {
    return [hi, lo](std::string_view t, int d, const CodecOptions& o) -> std::unique_ptr<Codec> {
      if (d < 8) unsupported_dim(t, d, "needs d >= 8 for the outlier split");
      return std::make_unique<TurboSplitCodec>(std::string(t), d, hi, lo, o.seed,
                                               o.outlier_channels);
    };
  };
  register_codec({"turbo2.5",
                  "TurboQuant 2.5 bpv at d=128: d/4 outlier channels at 3 bits + the rest at 2, "
                  "two instances, fp16 norms",
                  split(turbo_layout::kTurbo2_5Bits.hi, turbo_layout::kTurbo2_5Bits.lo), 125,
                  traits(GpuFormat::kTurbo2_5, true)});
  register_codec({"turbo3.5",
                  "TurboQuant 3.5 bpv at d=128: d/4 outlier channels at 4 bits + the rest at 3, "
                  "two instances, fp16 norms",
                  split(turbo_layout::kTurbo3_5Bits.hi, turbo_layout::kTurbo3_5Bits.lo), 135,
                  traits(GpuFormat::kTurbo3_5, true)});
}

}  // namespace tq
