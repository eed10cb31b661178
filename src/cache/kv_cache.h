// turboquant — the paged, compressed KV cache (DESIGN.md §3).
//
// Storage: one codec per (layer, kv-head) for K and one for V. Compressed codes live in a pool
// of fixed-size pages (page_tokens tokens, a multiple of every codec's block_tokens()); each
// sequence owns a block table (list of page ids), pages are returned to the pool on free.
// A token is held in exactly one of three places:
//   - sink:     the first S tokens (rounded up to the codec's block) stay f16 for ever;
//   - codes:    encoded into the page of its position (complete codec blocks only);
//   - pending:  f16, the newest R tokens (residual window) and the tokens of an incomplete
//               codec block; they move to codes when they leave the window / complete a block.
// kv_bytes() counts exactly what is stored: encoded blocks, f16 sink and pending tokens, and
// the per-channel key means when keys are mean-centred. (The pool reserves page space for
// tokens that are still f16; that reservation is reported separately by reserved_bytes().)
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tq/codec.h"

namespace tq {
struct CodebookFile;
}

namespace tq {

// Whether keys are mean-centred (DESIGN.md §3.1): a per-channel key mean μ, taken from the first
// append of each (sequence, layer, KV head), is subtracted before encoding and stored in f32
// (counted in kv_bytes()). Softmax ignores the constant q·μ it takes from every score.
//   kTypeDefault  per layer, as the key type's TypeTraits::center_keys says (on for the
//                 project's own types turbo*, polar, polar-vq:*; off for every baseline)
//   kOn           every layer, whatever the type (`--center-keys`; baselines included)
//   kOff          no layer (`--no-center-keys`, for ablations)
enum class KeyCentring { kTypeDefault, kOn, kOff };
const char* key_centring_name(KeyCentring c);  // "default", "on", "off"

// Key scales (KvCacheOptions::key_scales) apply to centred keys of post-RoPE codecs without
// learned codebooks (turbo*, polar): positional codecs undo RoPE on what they are given, and
// codebooks were fitted to unscaled keys. They are set by a first append of at least
// kKeyScaleMinTokens keys.
bool type_takes_key_scales(const TypeTraits& tr);
constexpr int kKeyScaleMinTokens = 64;

struct KvCacheOptions {
  std::string type_k = "f16";
  std::string type_v = "f16";
  // Per-layer overrides (layer → type); win over everything else.
  std::map<int, std::string> layer_type_k, layer_type_v;
  // The first and last `boundary_layers` layers use boundary_type_k/v instead.
  int boundary_layers = 0;
  std::string boundary_type_k = "f16", boundary_type_v = "f16";
  int residual_window = 0;  // R: the newest R tokens stay f16
  int sink_tokens = 0;      // S: the first S tokens stay f16
  KeyCentring key_centring = KeyCentring::kTypeDefault;
  // With centred keys, each page also gets its own offset δ from the first mean (its keys'
  // mean, f16, when at least 64 of them are encoded at once, else the previous page's): keys
  // are stored as k − μ − δ and attention adds q·δ back per page, so the per-page shift is
  // exact. It tracks key offsets that drift with position (RoPE turns a constant k_proj bias
  // into a slowly rotating one in the low-frequency pairs). false: the first mean only.
  bool key_means_per_page = true;
  // With centred keys (and a codec that takes post-RoPE keys), also per-channel key scales s
  // (DESIGN.md §3.1): keys are stored as (k − μ − δ) ⊘ s and every query is multiplied by s,
  // so scores are unchanged, but the rotation-based codes spend their error where queries are
  // small. s_j = (σk_j / σq_j)^0.35 from the first append (≥ 64 tokens) and the queries of the
  // same forward batch (observe_queries), f16, d per (sequence, layer, KV head), counted.
  bool key_scales = true;
  uint64_t seed = 0x5451'0001;
  int page_tokens = 256;
  int max_tokens = 4096;  // pool capacity over all sequences (rounded up to pages)
  int max_seqs = 16;
  // Learned data of the polar-vq and kvquant types (`tq calibrate`): each polar-vq codec of
  // (layer, head) gets codebooks->head(layer, head), each kvquant codec codebooks->kvq_head().
  // The file's preset must be the type's preset (kvquant: "kvquant") and its shape the
  // cache's (the model fingerprint is checked by whoever loads the file, which has the GGUF).
  // Type `polar-vq:custom` takes its parameters from the file (for parameter sweeps).
  std::shared_ptr<const CodebookFile> codebooks;
  // Observer of every append (layer, k, v, T; rows [t][h][j], post-RoPE, before any centring or
  // encoding): how `tq calibrate` collects samples exactly as the cache receives them.
  std::function<void(int layer, const float* k, const float* v, int T)> on_append;
};

struct KvShape {
  int n_layer = 0, n_kv_head = 0, head_dim = 0;
  RopePairing rope = RopePairing::kNormal;
  // The model's RoPE frequencies (see CodecOptions::rope_inv_freq; empty = base 10000), for
  // codecs that keep keys before RoPE (kvquant).
  std::vector<float> rope_inv_freq;
  float rope_freq_scale = 1.f;
  // Per-layer RoPE where layers differ (Gemma 3's sliding-window layers have their own base):
  // empty = the two above for every layer. Read them through the accessors.
  std::vector<std::vector<float>> layer_rope_inv_freq;
  std::vector<float> layer_rope_freq_scale;
  const std::vector<float>& inv_freq(int layer) const {
    return layer_rope_inv_freq.empty() ? rope_inv_freq : layer_rope_inv_freq[size_t(layer)];
  }
  float freq_scale(int layer) const {
    return layer_rope_freq_scale.empty() ? rope_freq_scale : layer_rope_freq_scale[size_t(layer)];
  }
};

// A run of consecutive stored positions of one (layer, head, K|V) of one sequence.
struct KvSegment {
  int pos0 = 0, n = 0;
  const uint8_t* codes = nullptr;  // n / block_tokens encoded blocks, or
  const uint16_t* f16 = nullptr;   // n × head_dim f16 values
  // Keys only, or null: head_dim floats added to every decoded key of the run (its page's mean
  // offset δ, KvCacheOptions::key_means_per_page); scores gain q·δ.
  const float* key_offset = nullptr;
};

class KvCache {
 public:
  KvCache(const KvShape& shape, const KvCacheOptions& opts);
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  const KvShape& shape() const { return shape_; }
  const KvCacheOptions& options() const { return opts_; }

  // Sequences. new_seq() throws tq::Error when max_seqs are in use.
  int new_seq();
  void free_seq(int seq);
  // Tokens stored for the sequence in a layer (layers are appended one after the other).
  int seq_len(int seq, int layer = 0) const;
  // Makes sure the sequence has pages for n_total tokens; throws "KV cache full: ..." if not.
  void reserve(int seq, int n_total);

  // The queries of the forward batch whose keys are appended next to (seq, layer): q is
  // T × n_head × head_dim. Read only for the first append's key scales (key_scales).
  void observe_queries(int seq, int layer, const float* q, int T, int n_head);
  // The key scales of (seq, layer, head) (head_dim floats; queries are multiplied by them), or
  // null when its keys are not scaled.
  const float* key_scales(int seq, int layer, int head) const;
  // Whether keys of this layer get scales (key_scales, centred keys, a post-RoPE codec without
  // learned codebooks: turbo*, polar).
  bool keys_scalable(int layer) const;

  // Appends T tokens to (seq, layer). k, v: T × n_kv_head × head_dim, row-major [t][h][j].
  void append(int seq, int layer, const float* k, const float* v, int T);

  // The stored runs of (seq, layer, head, K|V), in position order, covering [0, seq_len).
  void segments(int seq, int layer, int head, bool is_key, std::vector<KvSegment>& out) const;
  const Codec& codec(int layer, int head, bool is_key) const;
  // Decodes everything stored for (seq, layer, head, K|V) into x (seq_len × head_dim floats):
  // the values as attention sees them (keys without the centring mean).
  void read(int seq, int layer, int head, bool is_key, float* x) const;

  // Byte accounting over all live sequences.
  size_t kv_bytes() const;
  size_t k_bytes() const;
  size_t v_bytes() const;
  // All-in bits per stored value (0 when nothing is stored).
  double bpv_k() const;
  double bpv_v() const;
  size_t reserved_bytes() const;  // the pool's page space
  int pages_total() const { return n_pages_; }
  int pages_free() const { return int(free_pages_.size()); }
  std::string type_name(int layer, bool is_key) const;
  const TypeTraits& traits(int layer, bool is_key) const {
    return type_traits(type_name(layer, is_key));
  }
  // Whether the keys of a layer are mean-centred (key_centring resolved against the layer's
  // key type), and how many layers are.
  bool keys_centred(int layer) const;
  int centred_layers() const;

 private:
  struct Stream;  // one (layer, head, K|V): codec + page pool
  struct Part;    // per (seq, layer, K|V) bookkeeping
  struct Seq;
  Stream& stream(int layer, int head, bool is_key);
  const Stream& stream(int layer, int head, bool is_key) const;
  Seq& seq_ref(int seq);
  const Seq& seq_ref(int seq) const;
  void append_part(Seq& s, int layer, bool is_key, const float* x, int T);
  size_t bytes_of(bool is_key) const;
  size_t values_stored() const;

  KvShape shape_;
  KvCacheOptions opts_;
  int n_pages_ = 0;
  std::vector<std::unique_ptr<Stream>> streams_;  // [(layer·n_kv + head)·2 + (is_key?0:1)]
  std::vector<int> free_pages_;
  std::vector<std::unique_ptr<Seq>> seqs_;
};

}  // namespace tq
