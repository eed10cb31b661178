// Stream mode of the decode kernel: a persistent grid of exactly the resident CTAs; the pages
// of all (sequence, KV head) segments, flattened in that order, are cut into one contiguous
// range per warp. A warp streams its range through its ring without pausing at segment
// boundaries and without CTA barriers; at the end of each segment piece it writes a partial
// (m, l, o) and the last piece of a segment (atomic counter) merges them and writes the output.
// This removes the per-wave prologue/epilogue of the split grid (query preparation, pipeline
// fill, CTA merge) and its wave tail. Here: page ranges, the tile-address fetcher, the end of
// a piece.
#pragma once
#include <cstdint>

#include "cuda/append_kernels.cuh"
#include "cuda/decode_params.cuh"
#include "cuda/formats.cuh"

namespace tq::cuda::dk {

// A unit (a warp) reads flat pages [u·per, (u+1)·per) of the (sequence, KV head, page) order;
// segment piece ids: segment index + u (unique: a segment's pieces are consecutive units, and
// the next segment starts at or after its last).
__device__ __forceinline__ int seq_pages(const DecodeParams& p, int b) {
  return (max(p.seq_lens[b], 0) + kPageTokens - 1) / kPageTokens;
}
struct SegCursor {
  int b, kvh, pg, np;  // sequence, KV head, page, pages of the sequence
  __device__ __forceinline__ void advance(const DecodeParams& p) {
    if (++pg == np) {
      pg = 0;
      if (++kvh == p.Hkv) {
        kvh = 0;
        do {
          ++b;
        } while (b < p.B && (np = seq_pages(p, b)) == 0);
      }
    }
  }
};
struct StreamRange {
  int per, r0, n;  // pages per unit, first flat page, pages of this unit
  int seg0;        // flat page 0 of the cursor's segment
  SegCursor c;     // at r0
};
// This unit's range; false when it is empty. Rows of empty sequences are zeroed here.
template <int D>
__device__ bool stream_range(const DecodeParams& p, int unit, int nunits, StreamRange& r) {
  const int lane = threadIdx.x & 31, Hkv = p.Hkv, nseq = p.B;
  int W = 0;  // (the host checks that B·Hkv·pages fits an int)
  for (int i = lane; i < nseq; i += 32) W += seq_pages(p, i);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) W += __shfl_xor_sync(0xffffffffu, W, off);
  W *= Hkv;
  for (int seg = unit; seg < nseq * Hkv; seg += nunits)
    if (seq_pages(p, seg / Hkv) == 0)
      for (int h = 0; h < p.G; ++h)
        for (int d = lane; d < D; d += 32)
          p.out[(size_t(seg / Hkv) * p.Hq + (seg % Hkv) * p.G + h) * D + d] = 0.f;
  r.per = (W + nunits - 1) / nunits;
  r.r0 = unit * r.per;
  r.n = min(W, r.r0 + r.per) - r.r0;
  if (r.n <= 0) return false;
  // sequence of r0 (cpre: pages of the earlier sequences), then KV head and page
  int cb = 0, cpre = 0;
  for (int base = 0; base < nseq; base += 32) {
    const int np = base + lane < nseq ? seq_pages(p, base + lane) : 0;
    int inc = np;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, inc, off);
      if (lane >= off) inc += y;
    }
    const unsigned hit = __ballot_sync(0xffffffffu, np > 0 && (cpre + inc) * Hkv > r.r0);
    if (hit) {
      const int l0 = __ffs(hit) - 1;
      cb = base + l0;
      cpre += __shfl_sync(0xffffffffu, inc - np, l0);
      break;
    }
    cpre += __shfl_sync(0xffffffffu, inc, 31);
  }
  const int np = seq_pages(p, cb), rel = r.r0 - cpre * Hkv;
  r.c = SegCursor{cb, rel / np, rel % np, np};
  r.seg0 = cpre * Hkv + rel / np * np;
  return true;
}
// Tile addresses along a cursor, in chunks of up to 32 pages of one segment: lane l holds the
// address of page l of the chunk (one shuffle pair per page); the block-table entries of the
// following chunk are loaded one chunk ahead.
struct TileFetcher {
  SegCursor c;  // first page of the next chunk
  const uint8_t* addr = nullptr;
  int idx = 0, cnt = 0;  // position in the current chunk, its pages
  int pre_e = 0, pre_b = -1, pre_pg = 0;  // prefetched entries of chunk (pre_b, pre_pg)
  __device__ __forceinline__ int entries(const DecodeParams& p) const {
    const int lane = threadIdx.x & 31, n = min(32, c.np - c.pg);
    return lane < n ? p.block_table[size_t(c.b) * p.bt_stride + c.pg + lane] : 0;
  }
  __device__ __forceinline__ const uint8_t* next(const DecodeParams& p, size_t head_bytes) {
    if (idx == cnt) {
      cnt = min(32, c.np - c.pg);
      const int e = (pre_b == c.b && pre_pg == c.pg) ? pre_e : entries(p);
      addr = p.pool + size_t(e) * p.page_bytes + size_t(c.kvh) * head_bytes;
      idx = 0;
      c.pg += cnt - 1;  // the page after the chunk
      c.advance(p);
      pre_b = -1;
      if (c.b < p.B) {
        pre_b = c.b;
        pre_pg = c.pg;
        pre_e = entries(p);
      }
    }
    const auto tp = reinterpret_cast<const uint8_t*>(
        __shfl_sync(0xffffffffu, reinterpret_cast<unsigned long long>(addr), idx));
    ++idx;
    return tp;
  }
};
// End of a unit's piece of the segment (cursor c, flat page 0 at seg0): l summed over the lanes.
// One piece: write the output rows; several: write this partial and, for the last one to
// arrive, merge them (o and l are overwritten) and write the rows: out = Πᵀ(o / l) (vsigns:
// FWHT). scratch: this warp's 8 × D floats.
template <int D>
__device__ void stream_finish(const DecodeParams& p, float (&o)[D / 16][4], float (&l)[2],
                              const float (&m)[2], const StreamRange& r, const SegCursor& c,
                              int seg0, int unit, float* scratch) {
  constexpr int KS = D / 16, E = D / 32;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int seg = c.b * p.Hkv + c.kvh;
  const int w_first = seg0 / r.per, w_last = (seg0 + c.np - 1) / r.per;
  if (w_last > w_first) {
    const int id0 = seg + w_first, id = seg + unit;
    float4* po = reinterpret_cast<float4*>(p.part_o + (size_t(id) * 32 + lane) * (KS * 4));
#pragma unroll
    for (int i = 0; i < KS; ++i) po[i] = make_float4(o[i][0], o[i][1], o[i][2], o[i][3]);
    if (g == 0)
      reinterpret_cast<float4*>(p.part_ml + size_t(id) * 16)[t] =
          make_float4(m[0], l[0], m[1], l[1]);
    __threadfence();
    __syncwarp();
    int last = 0;
    if (lane == 0) last = atomicAdd(p.counters + seg, 1) == w_last - w_first;
    if (!__shfl_sync(0xffffffffu, last, 0)) return;
    __threadfence();
    if (lane == 0) p.counters[seg] = 0;  // ready for the next call
    const int npc = w_last - w_first + 1;
    auto ml_of = [&](int j) {
      return __ldcg(reinterpret_cast<const float4*>(p.part_ml + size_t(id0 + j) * 16) + t);
    };
    float M[2] = {-1e30f, -1e30f};
    for (int j = 0; j < npc; ++j) {
      const float4 ml = ml_of(j);
      M[0] = fmaxf(M[0], ml.x);
      M[1] = fmaxf(M[1], ml.z);
    }
#pragma unroll
    for (int i = 0; i < KS; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    l[0] = l[1] = 0.f;
    for (int j = 0; j < npc; ++j) {
      const float4 ml = ml_of(j);
      const float w0 = exp2f(ml.x - M[0]), w1 = exp2f(ml.z - M[1]);
      l[0] += w0 * ml.y;
      l[1] += w1 * ml.w;
      const float4* pj =
          reinterpret_cast<const float4*>(p.part_o + (size_t(id0 + j) * 32 + lane) * (KS * 4));
#pragma unroll
      for (int i = 0; i < KS; ++i) {
        const float4 v = __ldcg(pj + i);
        o[i][0] += w0 * v.x;
        o[i][1] += w1 * v.y;
        o[i][2] += w0 * v.z;
        o[i][3] += w1 * v.w;
      }
    }
  }
  const float il0 = l[0] > 0.f ? 1.f / l[0] : 0.f, il1 = l[1] > 0.f ? 1.f / l[1] : 0.f;
#pragma unroll
  for (int mt = 0; mt < KS; ++mt)
#pragma unroll
    for (int cc = 0; cc < 4; ++cc)
      scratch[(2 * t + (cc & 1)) * D + 16 * mt + g + 8 * (cc >> 1)] =
          o[mt][cc] * ((cc & 1) ? il1 : il0);
  __syncwarp();
  for (int h = 0; h < p.G; ++h) {
    float u[E];
#pragma unroll
    for (int k = 0; k < E; ++k) u[k] = scratch[h * D + E * lane + k];
    float* dst = p.out + (size_t(c.b) * p.Hq + c.kvh * p.G + h) * D + E * lane;
    if (p.vsigns) {
      ak::fwht_warp<E>(u, lane);
      const float sc = rsqrtf(float(D));
#pragma unroll
      for (int k = 0; k < E; ++k) dst[k] = u[k] * sc * p.vsigns[E * lane + k];
    } else {
#pragma unroll
      for (int k = 0; k < E; ++k) dst[k] = u[k];
    }
  }
  __syncwarp();
}

}  // namespace tq::cuda::dk
