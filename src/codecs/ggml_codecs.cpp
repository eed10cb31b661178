// ggml/llama.cpp block formats as cache types (DESIGN.md §2.5): q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl,
// each also as NAME+h with a randomised Hadamard rotation in front.
//
// Token layout (block_tokens = 1): the token's d values cut into d/32 ggml blocks, stored back
// to back exactly as ggml stores a row (struct layouts in codecs/ggml_blocks.h), so
// block_bytes = (d/32)·sizeof(block): q8_0 34·d/32 (8.5 bpv), q4_0 18·d/32 (4.5), q4_1 20·d/32
// (5.0), q5_0 22·d/32 (5.5), q5_1 24·d/32 (6.0), iq4_nl 18·d/32 (4.5). d must be a multiple of 32.
//
// NAME+h: x is rotated first, x' = Π x with Π = Rotation(d, derive_seed(seed, 1)) (randomised
// Hadamard for power-of-two d, a dense random orthogonal matrix otherwise), and x' is stored in
// the format above. Scores use the rotated query (q'·x̃' = q·Πᵀx̃'), values are accumulated in
// the rotated domain and finish() applies Πᵀ once — what upstream llama.cpp does for quantized
// caches. The rotation adds no bytes.
#include <cstring>
#include <vector>

#include "codecs/attn_ops.h"
#include "codecs/common.h"
#include "codecs/ggml_blocks.h"
#include "core/rng.h"
#include "core/rotation.h"
#include "cpu/dispatch.h"

namespace tq {
namespace {

struct GgmlFormat {
  const char* name;
  size_t bytes;  // per 32 values
  void (*quantize)(const float*, uint8_t*, size_t);
  void (*dequantize)(const uint8_t*, float*, size_t);
  float (*dot)(const uint8_t*, const float*, size_t);
  void (*axpy)(const uint8_t*, float, float*, size_t);
  const char* description;
};

// Adapters from the typed reference kernels to byte pointers.
template <typename B, void (*Q)(const float*, B*, size_t)>
void quantize_bytes(const float* x, uint8_t* out, size_t n) {
  Q(x, reinterpret_cast<B*>(out), n);
}
template <typename B, void (*D)(const B*, float*, size_t)>
void dequantize_bytes(const uint8_t* in, float* y, size_t n) {
  D(reinterpret_cast<const B*>(in), y, n);
}
template <typename B, float (*F)(const B*, const float*, size_t)>
float dot_bytes(const uint8_t* in, const float* q, size_t n) {
  return F(reinterpret_cast<const B*>(in), q, n);
}
template <typename B, void (*F)(const B*, float, float*, size_t)>
void axpy_bytes(const uint8_t* in, float w, float* acc, size_t n) {
  F(reinterpret_cast<const B*>(in), w, acc, n);
}
// iq4_nl's quantizer takes the search width as a 4th argument; the codec uses the default,
// ggml's quantize_row_iq4_nl_ref (what llama.cpp stores in an iq4_nl cache).
void quantize_iq4_nl_default(const float* x, ggml::BlockIq4Nl* y, size_t n) {
  ggml::quantize_row_iq4_nl_ref(x, y, n);
}

#define TQ_GGML_FORMAT(nm, B, fn, desc)                                                     \
  GgmlFormat {                                                                              \
    nm, sizeof(ggml::B), &quantize_bytes<ggml::B, &ggml::quantize_row_##fn##_ref>,           \
        &dequantize_bytes<ggml::B, &ggml::dequantize_row_##fn##_ref>,                       \
        &dot_bytes<ggml::B, &ggml::fn##_dot_ref>, &axpy_bytes<ggml::B, &ggml::fn##_axpy_ref>, \
        desc                                                                                \
  }

const GgmlFormat kFormats[] = {
    TQ_GGML_FORMAT("q8_0", BlockQ8_0, q8_0,
                   "ggml q8_0: blocks of 32, fp16 scale amax/127 + 32 int8 (8.5 bpv)"),
    TQ_GGML_FORMAT("q4_0", BlockQ4_0, q4_0,
                   "ggml q4_0: blocks of 32, fp16 scale max/-8 + 4-bit codes (4.5 bpv)"),
    TQ_GGML_FORMAT("q4_1", BlockQ4_1, q4_1,
                   "ggml q4_1: blocks of 32, fp16 scale and min + 4-bit codes (5.0 bpv)"),
    TQ_GGML_FORMAT("q5_0", BlockQ5_0, q5_0,
                   "ggml q5_0: blocks of 32, fp16 scale max/-16 + 5-bit codes (5.5 bpv)"),
    TQ_GGML_FORMAT("q5_1", BlockQ5_1, q5_1,
                   "ggml q5_1: blocks of 32, fp16 scale and min + 5-bit codes (6.0 bpv)"),
    GgmlFormat{"iq4_nl", sizeof(ggml::BlockIq4Nl),
               &quantize_bytes<ggml::BlockIq4Nl, &quantize_iq4_nl_default>,
               &dequantize_bytes<ggml::BlockIq4Nl, &ggml::dequantize_row_iq4_nl_ref>,
               &dot_bytes<ggml::BlockIq4Nl, &ggml::iq4_nl_dot_ref>,
               &axpy_bytes<ggml::BlockIq4Nl, &ggml::iq4_nl_axpy_ref>,
               "ggml iq4_nl: blocks of 32, fp16 scale (weighted least squares) + 4-bit "
               "indices into a 16-level non-linear table (4.5 bpv)"},
};
#undef TQ_GGML_FORMAT

// The formats with SIMD kernels (src/cpu) and CUDA formats.
constexpr const char* kQ8_0 = "q8_0";
constexpr const char* kQ4_0 = "q4_0";

struct GgmlQuery : QueryState {
  std::vector<float> q;  // the query in the working domain (rotated for +h)
};

class GgmlCodec final : public Codec {
 public:
  GgmlCodec(const GgmlFormat& f, int dim, bool rotate, uint64_t seed)
      : f_(f), dim_(dim), nb_(size_t(dim) / ggml::kBlock), rotate_(rotate) {
    if (rotate_) rot_ = Rotation(dim, derive_seed(seed, 1));
  }
  std::string name() const override { return std::string(f_.name) + (rotate_ ? "+h" : ""); }
  int dim() const override { return dim_; }
  size_t block_bytes() const override { return nb_ * f_.bytes; }

  void encode(const float* x, size_t n, uint8_t* codes) const override {
    check_finite(x, n * dim_, "encode");
    check_fp16_range(x, n * dim_, name());
    std::vector<float> t(dim_);
    for (size_t i = 0; i < n; ++i) {
      const float* xi = x + i * dim_;
      if (rotate_) {
        rot_.forward(xi, t.data());
        xi = t.data();
      }
      f_.quantize(xi, codes + i * block_bytes(), nb_);
    }
  }
  void decode(const uint8_t* codes, size_t n, float* x) const override {
    for (size_t i = 0; i < n; ++i) {
      float* xi = x + i * dim_;
      f_.dequantize(codes + i * block_bytes(), xi, nb_);
      if (rotate_) rot_.inverse(xi, xi);
    }
  }
  std::unique_ptr<QueryState> prepare_query(const float* q) const override {
    auto s = std::make_unique<GgmlQuery>();
    s->q.assign(q, q + dim_);
    if (rotate_) rot_.forward(s->q.data(), s->q.data());
    return s;
  }
  // q8_0 and q4_0 run the dispatched SIMD kernels (src/cpu); the other formats and the *_ref
  // methods use the scalar reference kernels.
  void score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const override {
    const float* q = static_cast<const GgmlQuery&>(qs).q.data();
    const auto& k = cpu::kernels();
    if (is(kQ8_0)) return k.score_q8_0(codes, n, dim_, q, 1, out, n);
    if (is(kQ4_0)) return k.score_q4_0(codes, n, dim_, q, 1, out, n);
    score_ref(qs, codes, n, out);
  }
  void accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const override {
    const auto& k = cpu::kernels();
    if (is(kQ8_0)) return k.acc_q8_0(codes, n, dim_, w, n, 1, acc, size_t(dim_));
    if (is(kQ4_0)) return k.acc_q4_0(codes, n, dim_, w, n, 1, acc, size_t(dim_));
    accumulate_ref(codes, n, w, acc);
  }
  void score_ref(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const {
    const float* q = static_cast<const GgmlQuery&>(qs).q.data();
    for (size_t i = 0; i < n; ++i) out[i] = f_.dot(codes + i * block_bytes(), q, nb_);
  }
  void accumulate_ref(const uint8_t* codes, size_t n, const float* w, float* acc) const {
    for (size_t i = 0; i < n; ++i) f_.axpy(codes + i * block_bytes(), w[i], acc, nb_);
  }
  void finish(const float* acc, float* out) const override {
    if (rotate_) rot_.inverse(acc, out);
    else std::memcpy(out, acc, sizeof(float) * dim_);
  }
  std::unique_ptr<AttnOps> attn_ops() const override {
    if (rotate_) return nullptr;
    if (is(kQ8_0)) return make_plain_ops(PlainRows::kQ8_0, dim_);
    if (is(kQ4_0)) return make_plain_ops(PlainRows::kQ4_0, dim_);
    return nullptr;
  }

 private:
  bool is(const char* nm) const { return std::strcmp(f_.name, nm) == 0; }

  const GgmlFormat& f_;
  int dim_;
  size_t nb_;
  bool rotate_;
  Rotation rot_;
};


}  // namespace

void register_ggml_codecs() {
  int order = 20;
  for (const GgmlFormat& f : kFormats) {
    for (bool rot : {false, true}) {
      const std::string nm = std::string(f.name) + (rot ? "+h" : "");
      const std::string desc =
          rot ? std::string(f.name) + " after a randomised Hadamard rotation (llama.cpp's "
                                      "rotated quantized cache; no extra bytes)"
              : std::string(f.description);
      TypeTraits tr;
      // The SIMD kernels and the CUDA formats are ggml's own layouts, without the rotation.
      const bool q8 = std::strcmp(f.name, kQ8_0) == 0, q4 = std::strcmp(f.name, kQ4_0) == 0;
      tr.simd_attention = !rot && (q8 || q4);
      if (!rot && q8) tr.gpu = GpuFormat::kQ8_0;
      if (!rot && q4) tr.gpu = GpuFormat::kQ4_0;
      const GgmlFormat* fmt = &f;
      auto make = [fmt, rot](std::string_view t, int d,
                             const CodecOptions& o) -> std::unique_ptr<Codec> {
        if (d % ggml::kBlock != 0)
          unsupported_dim(t, d, "ggml block formats need a multiple of 32");
        return std::make_unique<GgmlCodec>(*fmt, d, rot, o.seed);
      };
      register_codec({nm, desc, make, order++, tr});
    }
  }
}

}  // namespace tq
