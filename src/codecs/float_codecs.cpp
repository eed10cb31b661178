// Uncompressed reference types: f32, f16, bf16. Layout per token: d values, little endian.
#include <cstring>

#include "codecs/attn_ops.h"
#include "codecs/common.h"
#include "core/half.h"
#include "cpu/dispatch.h"

namespace tq {
namespace {

enum class FloatKind { kF32, kF16, kBF16 };

class FloatCodec final : public Codec {
 public:
  FloatCodec(FloatKind k, int dim) : kind_(k), dim_(dim) {}
  std::string name() const override {
    return kind_ == FloatKind::kF32 ? "f32" : kind_ == FloatKind::kF16 ? "f16" : "bf16";
  }
  int dim() const override { return dim_; }
  size_t block_bytes() const override { return size_t(dim_) * (kind_ == FloatKind::kF32 ? 4 : 2); }

  void encode(const float* x, size_t n, uint8_t* codes) const override {
    check_finite(x, n * dim_, "encode");
    const size_t m = n * dim_;
    if (kind_ == FloatKind::kF32) {
      std::memcpy(codes, x, m * 4);
      return;
    }
    auto* h = reinterpret_cast<uint16_t*>(codes);
    for (size_t i = 0; i < m; ++i)
      h[i] = kind_ == FloatKind::kF16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
  }
  float get(const uint8_t* codes, size_t i) const {
    if (kind_ == FloatKind::kF32) {
      float f;
      std::memcpy(&f, codes + 4 * i, 4);
      return f;
    }
    uint16_t h;
    std::memcpy(&h, codes + 2 * i, 2);
    return kind_ == FloatKind::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
  void decode(const uint8_t* codes, size_t n, float* x) const override {
    for (size_t i = 0; i < n * dim_; ++i) x[i] = get(codes, i);
  }
  std::unique_ptr<QueryState> prepare_query(const float* q) const override {
    auto s = std::make_unique<VecQuery>();
    s->q.assign(q, q + dim_);
    return s;
  }
  // f32/f16 run the dispatched SIMD kernels (the baselines of the attention benchmarks);
  // score_ref/accumulate_ref are the scalar references.
  void score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const override {
    const auto& q = static_cast<const VecQuery&>(qs).q;
    if (kind_ == FloatKind::kF32) return cpu::kernels().score_f32(codes, n, dim_, q.data(), 1, out, n);
    if (kind_ == FloatKind::kF16) return cpu::kernels().score_f16(codes, n, dim_, q.data(), 1, out, n);
    score_ref(qs, codes, n, out);
  }
  void accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const override {
    if (kind_ == FloatKind::kF32) return cpu::kernels().acc_f32(codes, n, dim_, w, n, 1, acc, dim_);
    if (kind_ == FloatKind::kF16) return cpu::kernels().acc_f16(codes, n, dim_, w, n, 1, acc, dim_);
    accumulate_ref(codes, n, w, acc);
  }
  void score_ref(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const {
    const auto& q = static_cast<const VecQuery&>(qs).q;
    for (size_t t = 0; t < n; ++t) {
      double s = 0;
      for (int j = 0; j < dim_; ++j) s += double(q[j]) * get(codes, t * dim_ + j);
      out[t] = float(s);
    }
  }
  void accumulate_ref(const uint8_t* codes, size_t n, const float* w, float* acc) const {
    for (size_t t = 0; t < n; ++t)
      for (int j = 0; j < dim_; ++j) acc[j] += w[t] * get(codes, t * dim_ + j);
  }
  void finish(const float* acc, float* out) const override {
    std::memcpy(out, acc, sizeof(float) * dim_);
  }
  std::unique_ptr<AttnOps> attn_ops() const override {
    if (kind_ == FloatKind::kF32) return make_plain_ops(PlainRows::kF32, dim_);
    if (kind_ == FloatKind::kF16) return make_plain_ops(PlainRows::kF16, dim_);
    return nullptr;
  }

 private:
  FloatKind kind_;
  int dim_;
};

}  // namespace

void register_float_codecs() {
  auto f = [](FloatKind k) {
    return [k](std::string_view, int d, const CodecOptions&) -> std::unique_ptr<Codec> {
      return std::make_unique<FloatCodec>(k, d);
    };
  };
  TypeTraits f32, f16, bf16;
  f32.plain = PlainLayout::kF32;
  f32.simd_attention = true;
  f16.plain = PlainLayout::kF16;
  f16.simd_attention = true;
  f16.reference = true;
  bf16.plain = PlainLayout::kBF16;
  bf16.gpu = GpuFormat::kBF16;
  register_codec({"f32", "IEEE float32, uncompressed", f(FloatKind::kF32), 0, f32});
  register_codec({"f16", "IEEE float16 (the usual reference cache)", f(FloatKind::kF16), 1, f16});
  register_codec({"bf16", "bfloat16", f(FloatKind::kBF16), 2, bf16});
}

}  // namespace tq
