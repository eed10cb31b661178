// Single-token decode attention over a compressed KV cache (SPEC §3, §5; issue 6).
//
// For one KV head: the G query heads that share it (GQA), the K and V codecs, and the cache as
// a list of pages (the paged cache's blocks; each page holds `tokens` tokens of K codes and of V
// codes, back to back in the codecs' block layout). Scores come straight from the codes
// (queries rotated once, codebook tables in registers), softmax is online (running max and
// sum), values are accumulated from codes in the codec's working domain and mapped back once
// (one inverse rotation per output). Long contexts are split into token ranges processed on
// OpenMP threads; each range yields a SoftmaxState and the states are merged exactly
// (FlashInfer/flash-decoding style), so the split result equals the unsplit one up to float
// rounding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "tq/codec.h"

namespace tq::cpu {

struct KvPage {
  const uint8_t* k;  // tokens × k-codec bytes per token
  const uint8_t* v;  // tokens × v-codec bytes per token
  size_t tokens;
};

// Online-softmax state of G query heads over a range of tokens: per head the running max m,
// the running sum l = Σ exp(s − m) and acc = Σ exp(s − m)·v (in the V codec's working domain).
struct SoftmaxState {
  int heads = 0;
  size_t acc_size = 0;
  std::vector<float> m, l, acc;  // heads, heads, heads × acc_size
  SoftmaxState() = default;
  SoftmaxState(int heads, size_t acc_size);
  // this ← the state of the union of both token ranges (exact up to rounding).
  void merge(const SoftmaxState& o);
};

struct DecodeOptions {
  int threads = 0;                // OpenMP threads; 0 = omp_get_max_threads()
  int splits = 0;                 // token ranges per KV head; 0 = chosen from threads and length
  size_t min_split_tokens = 512;  // automatic splits never go below this
  bool use_generic = false;       // force the codec-interface path (tests)
  size_t min_parallel_work = 1 << 16;  // tokens × query heads below which no threads start
};

// Attention of G query heads (q: G × d, original domain) against one KV head:
// out_g = Σ_t softmax_t(scale · q_g·k_t) · v_t  (G × d floats).
void decode_attention(const Codec& kc, const Codec& vc, std::span<const KvPage> pages,
                      const float* q, int G, float scale, float* out,
                      const DecodeOptions& opt = {});

// Many KV heads at once (e.g. all heads of a layer): one parallel region over (head, split).
struct HeadTask {
  const Codec* k;
  const Codec* v;
  std::span<const KvPage> pages;
  const float* q;  // G × d
  float* out;      // G × d
};
void decode_attention_batch(std::span<const HeadTask> tasks, int G, float scale,
                            const DecodeOptions& opt = {});

// The query-side view of a codec used by the driver (exposed for tests and benchmarks).
class AttnOps {
 public:
  virtual ~AttnOps() = default;
  virtual size_t acc_size() const = 0;
  virtual size_t token_bytes() const = 0;
  // Per-query state for G heads (q: G × d).
  struct Prepared {
    int G = 0;
    std::vector<float> a, b;                      // kernel-specific (rotated queries etc.)
    std::vector<std::unique_ptr<QueryState>> qs;  // generic path
  };
  virtual void prepare(const float* q, int G, Prepared& p) const = 0;
  // s[g·lds + t] = q_g · k_t for n tokens.
  virtual void score(const Prepared& p, const uint8_t* codes, size_t n, float* s,
                     size_t lds) const = 0;
  // acc[g·acc_size + ·] += Σ_t w[g·ldw + t] v_t  (working domain).
  virtual void accumulate(const uint8_t* codes, size_t n, const float* w, size_t ldw, int G,
                          float* acc) const = 0;
  // out (d floats) from one head's accumulator.
  virtual void finish(const float* acc, float* out) const = 0;
};
// The fastest available ops for a codec (dispatched SIMD kernels), or the generic path over
// the Codec interface when the type has no dedicated kernel (or generic = true).
std::unique_ptr<AttnOps> make_attn_ops(const Codec& c, bool generic = false);

}  // namespace tq::cpu
