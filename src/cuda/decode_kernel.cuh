// Flash-decoding attention over the packed cache (one query token per sequence), DESIGN.md §5.
// One warp takes one 32-token page of one KV head at a time (DecodeWarp, decode_step.cuh).
// Two drivers, chosen by the mode (decode_modes.cuh): the split grid (CTA = split × KV head ×
// sequence; warps merge in shared memory, the last CTA of a head merges the splits) and the
// stream mode (a persistent grid, one page range per warp across heads and sequences;
// decode_stream.cuh). turbo3 runs on the int8 tensor cores with one-byte tables by default and,
// for G ≤ 4, "pair columns".
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "cuda/append_kernels.cuh"
#include "cuda/decode_modes.cuh"
#include "cuda/decode_params.cuh"
#include "cuda/decode_step.cuh"
#include "cuda/decode_stream.cuh"

namespace tq::cuda::dk {

// Each warp streams its pages through a ring of kStages shared-memory slots (cp.async, 16 B per
// lane per request): kStages − 1 pages in flight while one is computed. (One bulk copy per page
// on an mbarrier instead ran slower: 0.217 → 0.252 ms streaming alone.)
template <Fmt KF, Fmt VF, int D, class Mode>
struct PageRing {
  static constexpr int kStages = Mode::kStages;
  static constexpr int SB = decode_stage_bytes(KF, VF, D);
  uint8_t* ring;
  uint32_t ring_s;
  int lane;
  int slot = 0, fill = kStages - 1;  // slot being read, slot being filled (no modulo)

  __device__ __forceinline__ PageRing(uint8_t* dsm, int warp, int lane_)
      : ring(dsm + warp * kStages * SB),
        ring_s(uint32_t(__cvta_generic_to_shared(ring)) + 16 * lane_),
        lane(lane_) {}

  // lane l copies 16-byte chunks l, l + 32, ... of the page's K and V tiles (one base address,
  // immediate offsets)
  __device__ __forceinline__ void issue(const uint8_t* tile, int s) const {
    const uint8_t* src = tile + 16 * lane;
    const uint32_t dst = ring_s + s * SB;
    constexpr int NCH = SB / 16;
    [&]<int... J>(std::integer_sequence<int, J...>) {
      (cp16<512 * J>(dst, src), ...);
    }(std::make_integer_sequence<int, NCH / 32>{});
    if constexpr (NCH % 32 != 0) {
      if (lane < NCH % 32) cp16<512 * (NCH / 32)>(dst, src);
    }
  }
  __device__ __forceinline__ static void commit() { asm volatile("cp.async.commit_group;"); }
  __device__ __forceinline__ static void wait_all() { asm volatile("cp.async.wait_all;"); }

  // One page from the ring: wait for it, refill the slot freed last (next_tile(): the tile
  // kStages − 1 pages ahead) and hand it to the warp's step.
  template <class NextTile, class Warp>
  __device__ __forceinline__ void step(bool refill, NextTile&& next_tile, Warp& w, int pg) {
    asm volatile("cp.async.wait_group %0;" ::"n"(kStages - 2));
    __syncwarp();
    if (refill) issue(next_tile(), fill);
    commit();
    const uint8_t* tp = ring + slot * SB;
    slot = slot == kStages - 1 ? 0 : slot + 1;
    fill = fill == kStages - 1 ? 0 : fill + 1;
    typename Warp::KT kt;
    typename Warp::VT vt;
    kt.template load<false>(tp, lane, false);
    vt.template load<false>(tp + tile_bytes(KF, D), lane, true);
    w.page(kt, vt, pg);
  }
};

// Split grid, after the pages: merge the warps of this CTA in shared memory, write one partial
// per query head; then (fused split merge, p.out set) the last CTA of this (sequence, KV head)
// merges the splits and writes out = Πᵀ(o / l).
template <int D, int NW, class Warp>
__device__ __forceinline__ void split_grid_finish(const DecodeParams& p, const Warp& w,
                                                  uint8_t* dsm, int split, int kvh, int b) {
  const int lane = w.lane, g = w.g, t = w.t, warp = threadIdx.x >> 5;
  auto sm_ml = reinterpret_cast<float(*)[8][2]>(dsm);
  auto sm_o = reinterpret_cast<float(*)[8][D]>(dsm + NW * 8 * 2 * sizeof(float));
  if (g == 0) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      sm_ml[warp][2 * t + c][0] = w.m_run[c];
      sm_ml[warp][2 * t + c][1] = w.l_run[c];
    }
  }
#pragma unroll
  for (int mt = 0; mt < D / 16; ++mt)
#pragma unroll
    for (int c = 0; c < 4; ++c)
      sm_o[warp][2 * t + (c & 1)][16 * mt + g + 8 * (c >> 1)] = w.o[mt][c];
  __syncthreads();
  for (int idx = threadIdx.x; idx < p.G * D; idx += NW * 32) {
    const int h = idx / D, d = idx % D;
    float M = -1e30f;
#pragma unroll
    for (int wi = 0; wi < NW; ++wi) M = fmaxf(M, sm_ml[wi][h][0]);
    float acc = 0.f, L = 0.f;
#pragma unroll
    for (int wi = 0; wi < NW; ++wi) {
      const float e = exp2f(sm_ml[wi][h][0] - M);
      acc += e * sm_o[wi][h][d];
      L += e * sm_ml[wi][h][1];
    }
    const size_t row = (size_t(b) * p.Hq + kvh * p.G + h) * p.splits + split;
    p.part_o[row * D + d] = acc;
    if (d == 0) {
      p.part_ml[row * 2] = M;
      p.part_ml[row * 2 + 1] = L;
    }
  }
  if (!p.out) return;
  // ---- fused split merge: the last CTA of this (sequence, KV head) finishes its G rows
  __shared__ int is_last;
  if (p.splits > 1) {
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
      int* cnt = p.counters + size_t(b) * p.Hkv + kvh;
      is_last = atomicAdd(cnt, 1) == p.splits - 1;
      if (is_last) *cnt = 0;  // ready for the next call
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();
  } else {
    __syncthreads();
  }
  constexpr int E = D / 32;
  for (int h = warp; h < p.G; h += NW) {
    const size_t row = size_t(b) * p.Hq + kvh * p.G + h;
    const float* ml = p.part_ml + row * p.splits * 2;
    float M = -1e30f;
    for (int s = 0; s < p.splits; ++s) M = fmaxf(M, __ldcg(ml + 2 * s));
    float u[E] = {}, L = 0.f;
    for (int s = 0; s < p.splits; ++s) {
      const float wgt = exp2f(__ldcg(ml + 2 * s) - M);
      L += wgt * __ldcg(ml + 2 * s + 1);
      const float* po = p.part_o + (row * p.splits + s) * D + E * lane;
#pragma unroll
      for (int k = 0; k < E; ++k) u[k] += wgt * __ldcg(po + k);
    }
    float* dst = p.out + row * D + E * lane;
    if (p.vsigns) {
      ak::fwht_warp<E>(u, lane);
      const float sc = (L > 0.f ? 1.0f / L : 0.f) * rsqrtf(float(D));
#pragma unroll
      for (int k = 0; k < E; ++k) dst[k] = u[k] * sc * p.vsigns[E * lane + k];
    } else {
      const float sc = L > 0.f ? 1.0f / L : 0.f;
#pragma unroll
      for (int k = 0; k < E; ++k) dst[k] = u[k] * sc;
    }
  }
}

// The split grid: CTA (split, KV head, sequence), its warps take every NW-th page.
template <Fmt KF, Fmt VF, int D, class Mode>
__device__ __forceinline__ void split_grid(const DecodeParams& p, uint8_t* dsm) {
  constexpr int NW = Mode::kWarps, kStages = Mode::kStages;
  constexpr bool kRing = decode_uses_ring(KF, VF, D);
  using W = DecodeWarp<KF, VF, D, Mode>;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  W w(p);
  w.seq = p.seq_lens[b];
  const int np = (w.seq + kPageTokens - 1) / kPageTokens;
  const int pg0 = split * p.pages_per_split;
  const int pg1 = min(np, pg0 + p.pages_per_split);
  const int* bt = p.block_table + size_t(b) * p.bt_stride;
  const size_t head_off = size_t(kvh) * size_t(p.tile_k + tile_bytes(VF, D));
  auto tile_ptr = [&](int pg) { return p.pool + size_t(bt[pg]) * p.page_bytes + head_off; };
  const int first = pg0 + warp;
  const int n_my = first < pg1 ? (pg1 - first + NW - 1) / NW : 0;
  PageRing<KF, VF, D, Mode> ring(dsm, warp, lane);
  // The ring's first pages are requested before the query preparation (they do not depend on it).
  if constexpr (kRing) {
#pragma unroll
    for (int it = 0; it < kStages - 1; ++it) {
      if (it < n_my) ring.issue(tile_ptr(first + it * NW), it);
      ring.commit();
    }
  }
  w.prep_query(b, kvh, reinterpret_cast<float*>(dsm + split_qsm_offset<KF, VF, D, Mode>()));
  w.reset();
  if constexpr (kRing) {
    for (int it = 0; it < n_my; ++it)
      ring.step(it + kStages - 1 < n_my, [&] { return tile_ptr(first + (it + kStages - 1) * NW); },
                w, first + it * NW);
    ring.wait_all();
    __syncthreads();
  } else {
    for (int pg = pg0 + warp; pg < pg1; pg += NW) {
      typename W::KT kt;
      typename W::VT vt;
      const uint8_t* tp = tile_ptr(pg);
      kt.template load<true>(tp, lane, false);
      vt.template load<true>(tp + p.tile_k, lane, true);
      w.page(kt, vt, pg);
    }
  }
  w.end_piece();
  split_grid_finish<D, NW>(p, w, dsm, split, kvh, b);
}

// The stream mode (decode_stream.cuh): the units of stream_range are warps.
template <Fmt KF, Fmt VF, int D, class Mode>
__device__ __forceinline__ void stream_grid(const DecodeParams& p, uint8_t* dsm) {
  constexpr int NW = Mode::kWarps, kStages = Mode::kStages;
  using W = DecodeWarp<KF, VF, D, Mode>;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const size_t head_bytes = size_t(p.tile_k + tile_bytes(VF, D));
  // per-warp scratch: rotated queries, the output tile
  float* scratch =
      reinterpret_cast<float*>(dsm + stream_scratch_offset<KF, VF, D, Mode>()) + warp * 8 * D;
  const int gw = blockIdx.x * NW + warp;
  StreamRange rg;
  if (!stream_range<D>(p, gw, gridDim.x * NW, rg)) return;
  SegCursor cur = rg.c;
  TileFetcher fetch{rg.c};
  int seg0 = rg.seg0;
  const int n_my = rg.n;
  PageRing<KF, VF, D, Mode> ring(dsm, warp, lane);
#pragma unroll
  for (int it = 0; it < kStages - 1; ++it) {
    if (it < n_my) ring.issue(fetch.next(p, head_bytes), it);
    ring.commit();
  }
  W w(p);
  // outer loop: the pieces of segments in this warp's range; inner loop: their pages (the hot
  // loop stays small: query preparation and the piece's merge are outside it)
  for (int it = 0; it < n_my;) {
    w.seq = p.seq_lens[cur.b];
    w.prep_query(cur.b, cur.kvh, scratch);  // (its loads overlap the pages in flight)
    w.reset();
    const int n_here = min(cur.np - cur.pg, n_my - it);
    for (int k = 0; k < n_here; ++k)
      ring.step(it + k + kStages - 1 < n_my, [&] { return fetch.next(p, head_bytes); }, w,
                cur.pg + k);
    it += n_here;
    w.end_piece();
    stream_finish<D>(p, w.o, w.l_run, w.m_run, rg, cur, seg0, gw, scratch);
    // next segment (page 0)
    cur.pg = cur.np - 1;
    cur.advance(p);
    seg0 = rg.r0 + it;
  }
  ring.wait_all();
}

template <Fmt KF, Fmt VF, int D, class Mode>
__global__ void __launch_bounds__(Mode::kWarps * 32, Mode::kMinBlocks)
    decode_kernel(DecodeParams p) {
  static_assert(!Mode::kStream || stream_eligible(KF, VF, D), "stream mode: ring types only");
  extern __shared__ __align__(16) uint8_t dsm[];
  if constexpr (Mode::kStream)
    stream_grid<KF, VF, D, Mode>(p, dsm);
  else
    split_grid<KF, VF, D, Mode>(p, dsm);
}

}  // namespace tq::cuda::dk
