// turboquant — decode attention over a KV cache as stored (DESIGN.md §3, §5).
//
// One algorithm for every query that reads the cache token by token (generation, and the few
// queries of a short append): for one KV head, the G query heads that share it (GQA), the K
// and V codecs, and the head's stored segments — runs of consecutive positions held either as
// codes of the codec (whole blocks) or as f16 rows (sinks, residual window, an incomplete
// block); K and V may be cut into segments differently. Scores come straight from the codes
// (Codec::attn_ops(): queries rotated once, codebook tables in registers, the dispatched SIMD
// kernels of src/cpu; codecs without a fast path through the Codec interface, with positions),
// f16 segments through the f16 row kernels. Softmax is online: every step of kStep tokens is a
// SoftmaxState of its own, merged into the running one; values are accumulated in the V codec's
// working domain (f16 values in a second, original-domain part of the accumulator) and mapped
// back once (one inverse rotation per output). Long contexts are split into token ranges on
// OpenMP threads; the ranges' states are merged exactly (flash-decoding style). Steps end on
// multiples of kStep in the global position, so a split context is cut into the same steps as
// the whole and the split result equals the unsplit one up to the merge's rounding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "cache/kv_cache.h"
#include "codecs/attn_ops.h"
#include "tq/codec.h"

namespace tq {

// Tokens per score/softmax/accumulate step (L1/L2-resident scores of G heads).
constexpr size_t kDecodeStep = 1024;

// Online-softmax state of G query heads over a set of tokens: per head the running max m, the
// running sum l = Σ exp(s − m) and acc = Σ exp(s − m)·v (acc_size floats per head).
struct SoftmaxState {
  int heads = 0;
  size_t acc_size = 0;
  std::vector<float> m, l, acc;  // heads, heads, heads × acc_size
  SoftmaxState() = default;
  SoftmaxState(int heads, size_t acc_size);
  void clear();  // the empty state (m = −inf, l = 0, acc = 0)
  // this ← the state of the union of both token sets (exact up to rounding).
  void merge(const SoftmaxState& o);
};

struct DecodeOptions {
  int threads = 0;                // OpenMP threads; 0 = omp_get_max_threads()
  int splits = 0;                 // token ranges per KV head; 0 = chosen from threads and length
  size_t min_split_tokens = 512;  // automatic splits never go below this
  bool use_generic = false;       // ignore the codecs' fast paths (the Codec interface only)
  size_t min_parallel_work = 1 << 16;  // tokens × query heads below which no threads start
};

// One KV head and its G query heads: out_g = Σ_{t < n} softmax_t(scale · q_g·k_t) · v_t.
struct HeadTask {
  const Codec* k;
  const Codec* v;
  std::span<const KvSegment> ks, vs;  // in position order from 0, covering at least [0, n)
  size_t n;                           // visible positions [0, n)
  const float* q;                     // G × d (original domain)
  float* out;                         // G × d
};
// Many KV heads at once (e.g. all heads of a layer, or of several queries): one parallel region
// over (head, token range).
void decode_attention_batch(std::span<const HeadTask> tasks, int G, float scale,
                            const DecodeOptions& opt = {});

// A cache held as pages of codes only (benchmarks, kernel tests): page i holds `tokens`
// tokens of K codes and of V codes, positions running on from the previous page.
struct KvPage {
  const uint8_t* k;  // tokens × k-codec bytes per token
  const uint8_t* v;  // tokens × v-codec bytes per token
  size_t tokens;
};
// The K (keys = true) or V segments of such pages (codecs of one-token blocks).
std::vector<KvSegment> page_segments(std::span<const KvPage> pages, bool keys);
// Attention of G query heads (q: G × d) against one KV head stored as pages.
void decode_attention(const Codec& kc, const Codec& vc, std::span<const KvPage> pages,
                      const float* q, int G, float scale, float* out,
                      const DecodeOptions& opt = {});

// The ops the driver runs for a codec: its fast path (Codec::attn_ops()), or the generic path
// over the Codec interface when it has none or generic = true (exposed for tests).
std::unique_ptr<AttnOps> make_attn_ops(const Codec& c, bool generic = false);

}  // namespace tq
