// turboquant GPU runtime — the small fused kernels of the forward pass (DESIGN.md §9): seeded
// weight generation, embedding gather, RMSNorm, bias + RoPE + Q/K/V split, SwiGLU, fp32 → bf16,
// greedy / temperature sampling. Host-callable launchers on a CUDA stream (void* so that this
// header needs no CUDA include); bf16 values are uint16_t bit patterns. Each launcher has a
// plain scalar reference of the same function in ops_ref.h, tested in tests/cuda.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tq::gpu {

// The seeded uniform of element i of a tensor: u ∈ [−1, 1), a pure function of (seed, i)
// (splitmix64), so the host can regenerate any weight the device made.
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline float hash_uniform(uint64_t seed, uint64_t i) {
  const uint64_t h = mix64(seed ^ mix64(i));
  return float(int64_t(h >> 40) - (int64_t(1) << 23)) * (1.0f / float(1 << 23));
}

// w[i] = bf16(offset + scale · hash_uniform(seed, i)), i < n.
void launch_init_bf16(uint16_t* w, size_t n, uint64_t seed, float scale, float offset,
                      void* stream);
// The same values as fp32 (bf16-rounded, so that host and device agree on every bit).
void launch_init_f32(float* w, size_t n, uint64_t seed, float scale, float offset,
                     void* stream);

// x[t][:] = float(embd[tokens[t]][:]), embd: bf16 [vocab][E]. Token ids were checked on the
// host (the embedding kernel clamps nothing).
void launch_embed(const uint16_t* embd, const int* tokens, float* x, int n, int E, void* stream);

// y[t] = bf16(x[t] · w / rms(x[t])), rms = sqrt(mean(x²) + eps); x fp32 [n][E], w fp32 [E].
void launch_rmsnorm_bf16(const float* x, const float* w, uint16_t* y, int n, int E, float eps,
                         void* stream);

// One fused step after the Q/K/V projection (qkv fp32 [n][(Hq + 2·Hkv)·D], rows q | k | v):
// add the biases (bias: [(Hq + 2·Hkv)·D] or null), rotate q and k by RoPE at pos[t] (angle
// pos · freq_scale · inv_freq[i]; normal pairing (2i, 2i+1) or NeoX (i, i + D/2)), write
// q fp32 [n][Hq][D] and k, v bf16 [n][Hkv][D] (the cache's append input).
struct QkvArgs {
  const float* qkv;
  const float* bias;
  const int* pos;
  const float* inv_freq;  // [D/2]
  float freq_scale;
  bool neox;
  int n, Hq, Hkv, D;
  float* q;
  uint16_t* k;
  uint16_t* v;
};
// pdl: programmatic dependent launch (linear.h): the kernel waits for the previous one itself.
void launch_qkv_rope(const QkvArgs& a, void* stream, bool pdl = false);

// out[t][j] = bf16(silu(gu[t][j]) · gu[t][F + j]), gu fp32 [n][2F] (gate | up).
void launch_swiglu_bf16(const float* gu, uint16_t* out, int n, int F, void* stream);

// b[i] = bf16(a[i]).
void launch_f32_to_bf16(const float* a, uint16_t* b, size_t n, void* stream);

// Sampling, one token per row of logits fp32 [n][V]: temperature ≤ 0 → argmax (lowest index
// on ties); else argmax(logit / temperature + Gumbel(hash(seed, step, row, j))) — an exact
// sample of softmax(logit / temperature), reproducible from (seed, step).
void launch_sample(const float* logits, int n, int V, float temperature, uint64_t seed,
                   const int* step, int* out, void* stream);

// Copies out[i] to next_tokens[i] and advances pos[i] and lens[i] by one (the decode step's
// bookkeeping, kept on the device so that a captured graph can be replayed step after step).
void launch_advance(const int* sampled, int* tokens, int* pos, int* lens, int* step, int n,
                    void* stream);

// Zeroes pages ids[0..n) of a pool of page_bytes-byte pages (a page handed to a new sequence:
// the append kernels OR codes into their page, so a reused page must start at zero).
void launch_zero_pages(uint8_t* pool, const int* ids, int n, size_t page_bytes, void* stream);

}  // namespace tq::gpu
