// turboquant — the memory check before a run (DESIGN.md §8): what a run needs (the mapped
// weights it reads, the KV cache at its capacity, activations and attention scratch) against
// what the machine can give (MemAvailable, and the cgroup's limit when there is one). A run that
// cannot fit is refused with one line before the cache allocates anything.
#pragma once
#include <cstddef>
#include <string>

#include "cache/kv_cache.h"

namespace tq {

class LlamaModel;

struct RunMemory {
  size_t weights = 0;      // tensors the forward pass reads (file-backed pages of the mapping)
  size_t kv = 0;           // the cache's page pools at capacity + its f16 windows
  size_t activations = 0;  // forward buffers for one chunk + tiled-attention scratch
  size_t total() const { return weights + kv + activations; }
};

// Bytes of the KV cache of `shape` with options `co` at co.max_tokens × co.max_seqs: the cache
// itself is asked (a one-page probe cache reports its page space; the pool has
// ceil(max_tokens / page_tokens) such pages), plus the f16 sink/residual/pending tokens.
size_t kv_cache_bytes(const KvShape& shape, const KvCacheOptions& co);

RunMemory run_memory(const LlamaModel& m, const KvCacheOptions& co);

struct AvailableMemory {
  size_t bytes = 0;
  std::string source;  // "MemAvailable", "cgroup memory.max", "TQ_MEMORY_LIMIT"
};
// The smaller of /proc/meminfo's MemAvailable and the cgroup's room (v2 memory.max −
// memory.current, v1 limit_in_bytes − usage_in_bytes); the environment variable
// TQ_MEMORY_LIMIT (bytes) lowers it further (tests, or to keep room for other programs).
AvailableMemory available_memory();

// Throws tq::Error "not enough memory: ..." (one line: the need, its parts, what is available)
// when run_memory(m, co) exceeds available_memory().
void check_memory(const LlamaModel& m, const KvCacheOptions& co);

}  // namespace tq
