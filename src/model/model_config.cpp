#include "model/model_config.h"

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "model/gguf.h"
#include "tq/error.h"

namespace tq {
namespace {

// Bounds far beyond every model the engine supports; what they exclude is corrupt.
constexpr int64_t kMaxLayers = 4096, kMaxWidth = 1 << 20, kMaxHeads = 1 << 14;
constexpr int64_t kMaxHeadDim = 1 << 12, kMaxContext = 1 << 24, kMaxProjection = 1 << 22;

[[noreturn]] void bad(const std::string& what) { throw Error("model: " + what); }

int int_in(const GgufFile& f, const std::string& key, int64_t lo, int64_t hi, const int64_t* def) {
  if (def && !f.has(key)) return int(*def);
  const int64_t v = f.get_int(key);
  if (v < lo || v > hi)
    bad(key + " = " + std::to_string(v) + " is out of range [" + std::to_string(lo) + ", " +
        std::to_string(hi) + "]");
  return int(v);
}
int int_in(const GgufFile& f, const std::string& key, int64_t lo, int64_t hi) {
  return int_in(f, key, lo, hi, nullptr);
}
int int_in(const GgufFile& f, const std::string& key, int64_t lo, int64_t hi, int64_t def) {
  return int_in(f, key, lo, hi, &def);
}

// A positive finite number (epsilon, RoPE base and factor): a negative one used to run the
// whole forward pass before failing with "NaN or Inf in the input vector".
double positive(const GgufFile& f, const std::string& key, double def) {
  const double v = f.get_float(key, def);
  if (!(v >= std::numeric_limits<float>::min()) || v > std::numeric_limits<float>::max())
    bad(key + " = " + std::to_string(v) + " must be a positive finite number");
  return v;
}

std::string shape_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

// ne without trailing 1s.
std::vector<int64_t> squeezed(const GgufTensor& t, size_t rank) {
  std::vector<int64_t> ne = t.ne;
  while (ne.size() > rank && ne.back() == 1) ne.pop_back();
  return ne;
}

// The tensor's shape must be `want`; else an error naming the metadata that says so.
void check_shape(const GgufFile& f, const std::string& name, const std::vector<int64_t>& want,
                 const std::string& because) {
  const GgufTensor& t = f.tensor(name);
  if (squeezed(t, want.size()) != want)
    bad("tensor '" + name + "' has shape " + shape_str(t.ne) + " but the metadata (" + because +
        ") says " + shape_str(want) + ": inconsistent metadata");
}

bool f16_nonfinite(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return (h & 0x7C00) == 0x7C00;
}
bool bf16_nonfinite(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return (h & 0x7F80) == 0x7F80;
}
bool f32_nonfinite(const uint8_t* p) {
  uint32_t u;
  std::memcpy(&u, p, 4);
  return (u & 0x7F800000u) == 0x7F800000u;
}

// Where a quantized block keeps its floating-point scales (ggml's block layouts).
struct ScaleLayout {
  int f16_at[2];  // byte offsets of f16 scales, -1 = none
};
// Only the types the loader can dequantize (model/gguf.h); tests/test_reliability.cpp checks
// these offsets against dequantize().
bool scale_layout(GgmlType t, ScaleLayout& s) {
  switch (t) {
    case GgmlType::Q4_0:
    case GgmlType::Q5_0:
    case GgmlType::Q8_0:
      s = {{0, -1}};
      return true;  // d first
    case GgmlType::Q4_1:
    case GgmlType::Q5_1:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
      s = {{0, 2}};
      return true;  // d, then m (Q4_1/Q5_1) or dmin
    case GgmlType::Q6_K:
      s = {{208, -1}};
      return true;  // ql[128], qh[64], scales[16], d
    default:
      return false;
  }
}

}  // namespace

int64_t first_nonfinite_block(const GgufTensor& t) {
  const int64_t n = t.n_elements();
  const uint8_t* p = t.data;
  switch (t.type) {
    case GgmlType::F32:
      for (int64_t i = 0; i < n; ++i)
        if (f32_nonfinite(p + 4 * i)) return i;
      return -1;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i)
        if (f16_nonfinite(p + 2 * i)) return i;
      return -1;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i)
        if (bf16_nonfinite(p + 2 * i)) return i;
      return -1;
    default:
      break;
  }
  ScaleLayout s;
  if (!scale_layout(t.type, s)) return -1;
  const size_t bytes = ggml_block_bytes(t.type);
  const int64_t blocks = n / ggml_block_size(t.type);
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* q = p + size_t(b) * bytes;
    for (int at : s.f16_at)
      if (at >= 0 && f16_nonfinite(q + at)) return b;
  }
  return -1;
}

void check_tensors_finite(const GgufFile& f) {
  for (const GgufTensor& t : f.tensors()) {
    const int64_t at = first_nonfinite_block(t);
    if (at >= 0)
      throw Error("model: tensor '" + t.name + "' holds NaN or Inf (" +
                  (ggml_block_size(t.type) == 1 ? "element " : "block ") + std::to_string(at) +
                  "): corrupt weights");
  }
}

LlamaHparams read_llama_hparams(const GgufFile& f) {
  LlamaHparams hp;
  hp.arch = f.architecture();
  const std::string a = hp.arch;
  if (a == "llama" || a == "mistral" || a == "smollm") {
    hp.rope = RopePairing::kNormal;  // convert_hf_to_gguf permutes Q/K for this pairing
  } else if (a == "qwen2") {
    hp.rope = RopePairing::kNeox;
  } else {
    throw Error("unsupported architecture '" + a + "' (supported: llama, qwen2)");
  }
  const std::string k_layers = a + ".block_count", k_embd = a + ".embedding_length";
  const std::string k_ff = a + ".feed_forward_length", k_head = a + ".attention.head_count";
  const std::string k_kv = a + ".attention.head_count_kv", k_klen = a + ".attention.key_length";
  hp.n_layer = int_in(f, k_layers, 1, kMaxLayers);
  hp.n_embd = int_in(f, k_embd, 1, kMaxWidth);
  hp.n_ff = int_in(f, k_ff, 1, kMaxProjection);
  hp.n_head = int_in(f, k_head, 1, kMaxHeads);
  hp.n_kv_head = int_in(f, k_kv, 1, hp.n_head, hp.n_head);
  if (hp.n_head % hp.n_kv_head != 0)
    bad(k_head + " = " + std::to_string(hp.n_head) + " is not a multiple of " + k_kv + " = " +
        std::to_string(hp.n_kv_head));
  hp.rms_eps = float(positive(f, a + ".attention.layer_norm_rms_epsilon", 1e-5));
  hp.rope_base = float(positive(f, a + ".rope.freq_base", 10000.0));
  hp.n_ctx_train = int_in(f, a + ".context_length", 1, kMaxContext, 2048);

  // The embedding's width names embedding_length before anything is derived from it.
  const GgufTensor& te = f.tensor("token_embd.weight");
  if (te.ne.size() < 2 || te.ne[0] != hp.n_embd)
    bad("tensor 'token_embd.weight' has shape " + shape_str(te.ne) + " but " + k_embd + " = " +
        std::to_string(hp.n_embd) + ": inconsistent metadata");
  if (te.ne[1] < 1 || te.ne[1] > std::numeric_limits<int32_t>::max())
    bad("tensor 'token_embd.weight' has " + std::to_string(te.ne[1]) + " rows (vocabulary)");
  hp.n_vocab = int(te.ne[1]);

  if (!f.has(k_klen) && hp.n_embd % hp.n_head != 0)
    bad(k_embd + " = " + std::to_string(hp.n_embd) + " is not a multiple of " + k_head + " = " +
        std::to_string(hp.n_head) + " (and there is no " + k_klen + "): inconsistent metadata");
  hp.head_dim = int_in(f, k_klen, 2, kMaxHeadDim, hp.n_embd / hp.n_head);
  if (hp.head_dim < 2)
    bad("head size " + std::to_string(hp.head_dim) + " (" + k_embd + " / " + k_head +
        ") is below 2: inconsistent metadata");
  if (f.get_int(a + ".attention.value_length", hp.head_dim) != hp.head_dim)
    bad("key and value head sizes differ (unsupported)");
  if (hp.head_dim % 2 != 0) bad("odd head dimension " + std::to_string(hp.head_dim));
  // 64-bit: the projections' widths, bounded before any int arithmetic uses them.
  const int64_t q_width = int64_t(hp.n_head) * hp.head_dim;
  const int64_t kv_width = int64_t(hp.n_kv_head) * hp.head_dim;
  if (q_width > kMaxProjection)
    bad(k_head + " × head size = " + std::to_string(hp.n_head) + " × " +
        std::to_string(hp.head_dim) + " is implausibly large (corrupt metadata)");
  const std::string heads_say =
      k_head + " " + std::to_string(hp.n_head) + " × head size " + std::to_string(hp.head_dim);
  check_shape(f, "blk.0.attn_q.weight", {hp.n_embd, q_width}, k_embd + ", " + heads_say);
  check_shape(f, "blk.0.attn_k.weight", {hp.n_embd, kv_width},
              k_embd + ", " + k_kv + " " + std::to_string(hp.n_kv_head) + " × head size " +
                  std::to_string(hp.head_dim));
  check_shape(f, "blk.0.ffn_gate.weight", {hp.n_embd, hp.n_ff}, k_embd + ", " + k_ff);
  const std::string last = "blk." + std::to_string(hp.n_layer - 1) + ".attn_norm.weight";
  if (!f.find_tensor(last))
    bad(k_layers + " = " + std::to_string(hp.n_layer) + " but the file has no tensor '" + last +
        "': inconsistent metadata");

  const int rope_dims = int_in(f, a + ".rope.dimension_count", 0, kMaxHeadDim, hp.head_dim);
  if (rope_dims != hp.head_dim)
    bad("partial RoPE (" + std::to_string(rope_dims) + " of " + std::to_string(hp.head_dim) +
        " dims) is not supported");
  const std::string scaling = f.get_string(a + ".rope.scaling.type", "none");
  if (scaling == "linear") {
    hp.rope_freq_scale = float(1.0 / positive(f, a + ".rope.scaling.factor", 1.0));
  } else if (scaling != "none" && !scaling.empty()) {
    bad("RoPE scaling '" + scaling + "' is not supported (none, linear)");
  }
  hp.has_qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  hp.tied_output = f.find_tensor("output.weight") == nullptr;
  return hp;
}

}  // namespace tq
