// turboquant — the memory check before a run (memcheck.h).
#include "model/memcheck.h"

#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "model/llama.h"
#include "tq/error.h"

namespace tq {

namespace {

std::string gib(size_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.2f GiB", double(b) / double(1ull << 30));
  return s;
}

// One number from a file (cgroup files hold one value, or "max").
bool read_number(const std::string& path, size_t& v) {
  std::ifstream f(path);
  std::string s;
  if (!(f >> s) || s == "max") return false;
  char* end = nullptr;
  const unsigned long long x = std::strtoull(s.c_str(), &end, 10);
  if (end == s.c_str()) return false;
  v = size_t(x);
  return true;
}

// The cgroup this process is in (v2: the "0::/path" line of /proc/self/cgroup).
std::string cgroup_v2_dir() {
  std::ifstream f("/proc/self/cgroup");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("0::", 0) == 0) return "/sys/fs/cgroup" + line.substr(3);
  return "/sys/fs/cgroup";
}

}  // namespace

size_t kv_cache_bytes(const KvShape& shape, const KvCacheOptions& co) {
  KvCacheOptions p = co;
  p.max_tokens = std::max(1, co.page_tokens);
  p.max_seqs = 1;
  p.on_append = nullptr;
  const KvCache probe(shape, p);  // one page per stream: a few MB at most
  const size_t pages = size_t((std::max(1, co.max_tokens) + co.page_tokens - 1) / co.page_tokens);
  size_t bytes = probe.reserved_bytes() * pages;
  // The f16 tokens kept beside the pages, per sequence: sinks, the residual window and an
  // incomplete codec block, for every (layer, head, K|V); the f32 key means where keys are
  // centred.
  size_t f16 = 0;
  for (int l = 0; l < shape.n_layer; ++l)
    for (int h = 0; h < shape.n_kv_head; ++h)
      for (bool key : {true, false}) {
        const size_t toks = size_t(std::max(0, co.sink_tokens) + std::max(0, co.residual_window) +
                                   probe.codec(l, h, key).block_tokens());
        f16 += toks * size_t(shape.head_dim) * 2;
        if (key && probe.keys_centred(l))  // μ (f32) and, at most, one f16 offset δ per page
          f16 += size_t(shape.head_dim) *
                 (sizeof(float) + (co.key_means_per_page ? pages * sizeof(uint16_t) : 0) +
                  (probe.keys_scalable(l) ? sizeof(uint16_t) : 0));
      }
  bytes += f16 * size_t(std::max(1, co.max_seqs));
  return bytes;
}

RunMemory run_memory(const LlamaModel& m, const KvCacheOptions& co) {
  RunMemory r;
  r.weights = m.weight_bytes();
  r.kv = kv_cache_bytes(m.kv_shape(), co);
  const LlamaHparams& hp = m.hparams();
  const size_t ctx = size_t(std::max(1, co.max_tokens));
  // Tiled attention decodes a layer's K and V into f32 tiles (kv heads × ctx × head_dim each)
  // and keeps 64 score rows of ctx floats per thread.
  const size_t attn = 2 * size_t(hp.n_kv_head) * ctx * size_t(hp.head_dim) * 4 +
                      size_t(omp_get_max_threads()) * 64 * ctx * 4;
  r.activations = m.activation_bytes(int(std::min<size_t>(ctx, LlamaModel::max_batch()))) + attn;
  return r;
}

AvailableMemory available_memory() {
  AvailableMemory a;
  a.bytes = SIZE_MAX;
  {
    std::ifstream f("/proc/meminfo");
    std::string key;
    size_t kb = 0;
    std::string unit;
    while (f >> key >> kb >> unit)
      if (key == "MemAvailable:") {
        a.bytes = kb * 1024;
        a.source = "MemAvailable";
        break;
      }
  }
  auto lower = [&](size_t v, const char* src) {
    if (v < a.bytes) {
      a.bytes = v;
      a.source = src;
    }
  };
  size_t lim = 0, use = 0;
  const std::string d2 = cgroup_v2_dir();
  if (read_number(d2 + "/memory.max", lim) && read_number(d2 + "/memory.current", use))
    lower(lim > use ? lim - use : 0, "cgroup memory.max");
  else if (read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes", lim) &&
           read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes", use) && lim < (1ull << 60))
    lower(lim > use ? lim - use : 0, "cgroup memory.limit_in_bytes");
  if (const char* e = std::getenv("TQ_MEMORY_LIMIT"); e && *e) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(e, &end, 10);
    if (end == e || *end != '\0')
      throw Error(std::string("TQ_MEMORY_LIMIT: not a number of bytes: ") + e);
    lower(size_t(v), "TQ_MEMORY_LIMIT");
  }
  return a;
}

void check_memory(const LlamaModel& m, const KvCacheOptions& co) {
  const RunMemory need = run_memory(m, co);
  const AvailableMemory have = available_memory();
  if (need.total() <= have.bytes) return;
  std::ostringstream s;
  s << "not enough memory: this run needs " << gib(need.total()) << " (weights "
    << gib(need.weights) << ", KV cache " << gib(need.kv) << " for " << co.max_tokens
    << " tokens of " << co.type_k << "/" << co.type_v << ", activations " << gib(need.activations)
    << "), available " << gib(have.bytes) << " (" << have.source << "); lower -c";
  throw Error(s.str());
}

}  // namespace tq
