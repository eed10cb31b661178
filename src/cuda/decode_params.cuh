// The parameters of one decode launch (plain data, passed to the kernel by value): where the
// pages are, the prepared queries, the codebook tables of the keys and values and the split
// workspace. Filled by GpuCache::decode_impl (cache.cu).
#pragma once
#include <cstdint>

namespace tq::cuda {

struct DecodeParams {
  const uint8_t* pool;
  const int* block_table;
  int max_pages;
  int bt_stride;  // ints between the block-table rows of consecutive sequences (0: shared)
  const int* seq_lens;
  const uint16_t* q;   // prepared Q' [B][Hq][D] (fp16, bf16 for a BF16 key cache)
  const uint16_t* qs;  // T3P: √(π/2)/D · S Q'
  float* part_o;       // [B][Hq][splits][D]
  float* part_ml;      // [B][Hq][splits][2]
  int Hq, Hkv, G, splits, pages_per_split;
  long long page_bytes;
  int tile_k;  // bytes of a K tile (V tile follows)
  uint32_t klo[2][2], khi[2][2], vlo[2][2], vhi[2][2];
  uint32_t ki8[2][2];  // turbo3 keys: int8 tables K1, K2 (fp16 centroid = α(256·K1 + K2))
  float kalpha128;     // 128·α
  uint32_t vi8[2][2];  // turbo3 values: the same two int8 tables of the value codebook
  float valpha256;     // 256·α of the value codebook
  // turbo3, one byte table (the default, T3Tables::kOneByte): centroid c ≈ s·T (T int8, s
  // chosen on the host to minimise the rounding error); k1mul = s_K/2, v1mul = s_V.
  uint32_t k1tab[2], v1tab[2];
  float k1mul, v1mul;
  int B;               // sequences (stream mode)
  // turbo3 keys: the query rotation runs in the kernel prologue (no prepared q):
  // Q' = FWHT(ksigns ⊙ q32)·qscale/√D
  const float* q32;    // [B][Hq][D] fp32, original domain
  const float* ksigns;
  float qscale;        // softmax scale · log2 e
  // Fused split merge (out != null): every CTA writes its partial, the last CTA of a
  // (sequence, KV head) (counters, zero between calls) merges them and writes
  // out = vsigns ⊙ FWHT(o)/√D / l (no vsigns: o / l).
  float* out;
  const float* vsigns;
  int* counters;       // [B][Hkv]
};

}  // namespace tq::cuda
