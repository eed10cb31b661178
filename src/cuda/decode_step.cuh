// One warp's flash-decoding state and its step over one 32-token page (DESIGN.md §5):
//   S^T (32 tok × 8 heads) = K (32 × D, decoded in registers) · Q'^T   (mma, fp32/int32 acc)
//   online softmax in the log2 domain (Q' carries scale·log2 e)
//   O^T (D × 8 heads)    += V^T (decoded) · P'^T   (P' = p·v_norm, transposed by movmatrix)
// The G ≤ 8 query heads of a KV head are the mma's N dimension: every code is decoded once and
// used by all of them. Codes become fp16 (or int8, turbo3) through byte-permute lookups of the
// codebook held in registers (prmt), never through per-element tables in memory. Both grids of
// decode_kernel.cuh drive this state; every member function is inlined, so the state stays in
// registers.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/decode_modes.cuh"
#include "cuda/decode_params.cuh"
#include "cuda/decode_primitives.cuh"
#include "cuda/decode_query.cuh"

namespace tq::cuda::dk {

template <Fmt KF, Fmt VF, int D, class Mode>
struct DecodeWarp {
  static constexpr int NW = Mode::kWarps;
  static constexpr bool KBF = KF == Fmt::kBF16, VBF = VF == Fmt::kBF16;
  static constexpr int KS = D / 16;  // k-steps over dims (K side) = m-tiles over dims (V side)
  using KT = LaneTile<KF, D>;
  using VT = LaneTile<VF, D>;
  using KP0 = PartT<KF, D, 0>;
  using KP1 = PartT<KF, D, 1>;
  using VP0 = PartT<VF, D, 0>;
  using VP1 = PartT<VF, D, 1>;
  static constexpr bool K2 = nparts(KF) > 1;  // a second score accumulator
  static constexpr bool V2 = is_split(VF);    // two P' variants (norm of each part)

  // turbo3 keys: int8 tensor cores (see DecodeParams::ki8). The query of head g is quantised
  // to Q = round(q/β) = 128·Q1 + Q2 (β = max|q|/16256, so Q1 in [-127, 127], Q2 in [-64, 63]);
  // score = 128αβ·(256·K1·Q1 + K1·2Q2 + K2·Q1), the K2·Q2/128 term (< 1e-4 relative) dropped.
  // One table (c ≈ s·T): score = (s/2)β·(256·T·Q1 + T·2Q2).
  // qf[2kk] = Q1, qf[2kk + 1] = 2·Q2 as B fragments of k-step kk (dims 32kk + 4t + 0..3 and
  // 32kk + 16 + 4t + 0..3).
  static constexpr bool KI8 = KF == Fmt::kTurbo3;
  // turbo3 values: int8 tensor cores too (see values_i8).
  static constexpr bool VI8 = VF == Fmt::kTurbo3;
  static constexpr bool kOneTab = Mode::kOneByte;  // one-byte codebook tables
  // G ≤ 4 with turbo3 values and one-byte tables: the mma's 4 spare head columns carry the low
  // bytes of P' (see values_i8), one int8 product per value instead of two
  static constexpr bool kSplitCols = Mode::kPairCols && VF == Fmt::kTurbo3 && kOneTab;
  // ... and with turbo3 keys: "pair columns" (kPair). Column 2h of every product is head h's
  // high part, 2h + 1 its low part (query Q1 | 2·Q2 on the key side, P' bytes Q1 | Q2 on the
  // value side), so lane (g, t) holds both parts of head t: one product per 32 keys and per 32
  // values, scores and o combined in the lane, 4 softmax terms per lane.
  // State then: o[i][0..1] = dims 16i + g (+8) of head t, m_run[0], l_run[0] of head t.
  static constexpr bool kPair = kSplitCols && KI8;
  using KLookup = typename Mode::KLookup;
  using VLookup = typename Mode::VLookup;

  const DecodeParams& p;
  const int lane, g, t;
  int seq = 0;                   // length of the sequence being read (masking of its last page)
  float kscale[2] = {1.f, 1.f};  // turbo3 keys: 128αβ of heads 2t, 2t+1
  // Q'^T fragments (B operand): b0b1 = dims 16ks + 2t (+1), b2b3 = +8; head g.
  uint32_t qf[KS][2], qf2[K2 && KF == Fmt::kTurbo3p ? KS : 1][2];
  float o[KS][4];
  float m_run[2], l_run[2];
  // turbo3 values: the int32 sums of a page, converted into o at its end (vflush). (Keeping
  // them over pages, converted only when their scale changes, saved no time: session 3, v18.)
  int va1[VI8 ? KS : 1][4], va2[VI8 ? KS : 1][4];
  float vbound, vqinv, vscale;  // Q scale of P': vqinv = 65535 / vbound

  __device__ __forceinline__ explicit DecodeWarp(const DecodeParams& params)
      : p(params), lane(threadIdx.x & 31), g(lane >> 2), t(lane & 3) {}

  // The query fragments of (sequence b, KV head kvh). turbo3 keys: rotated in qsm (split grid:
  // the CTA's warps together, CTA barrier; stream mode: the warp alone in its scratch).
  __device__ __forceinline__ void prep_query(int b, int kvh, float* qsm) {
    if constexpr (KI8) {
      t3_query_frags<D, NW, Mode::kStream, kOneTab, kPair>(p, b, kvh, qsm, qf, kscale);
    } else {
      const int qh = kvh * p.G + g;
      const bool ok = g < p.G;
      const uint32_t* q = reinterpret_cast<const uint32_t*>(p.q + (size_t(b) * p.Hq + qh) * D);
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        qf[ks][0] = ok ? q[(16 * ks + 2 * t) / 2] : 0u;
        qf[ks][1] = ok ? q[(16 * ks + 8 + 2 * t) / 2] : 0u;
      }
      if constexpr (KF == Fmt::kTurbo3p) {
        const uint32_t* qs =
            reinterpret_cast<const uint32_t*>(p.qs + (size_t(b) * p.Hq + qh) * D);
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
          qf2[ks][0] = ok ? qs[(16 * ks + 2 * t) / 2] : 0u;
          qf2[ks][1] = ok ? qs[(16 * ks + 8 + 2 * t) / 2] : 0u;
        }
      }
    }
  }

  __device__ __forceinline__ void reset() {
#pragma unroll
    for (int i = 0; i < KS; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    m_run[0] = m_run[1] = -1e30f;
    l_run[0] = l_run[1] = 0.f;
#pragma unroll
    for (int i = 0; i < (VI8 ? KS : 1); ++i)
#pragma unroll
      for (int c = 0; c < 4; ++c) va1[i][c] = va2[i][c] = 0;
    vbound = vqinv = vscale = 0.f;
  }

  // End of a warp's pages (split grid) or of its piece of a segment (stream mode): columns
  // combined, l summed over the lanes of each head.
  __device__ __forceinline__ void end_piece() {
    combine_cols();
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      l_run[c] += __shfl_xor_sync(0xffffffffu, l_run[c], 4);
      l_run[c] += __shfl_xor_sync(0xffffffffu, l_run[c], 8);
      l_run[c] += __shfl_xor_sync(0xffffffffu, l_run[c], 16);
    }
  }

  // One page (logical page pg of the sequence): keys, softmax, values.
  __device__ __forceinline__ void page(const KT& kt, const VT& vt, int pg) {
    if constexpr (kPair) {
      page_pair(kt, vt, pg);
    } else {
      float s[2][4];
      scores(kt, pg, s);
      softmax(s);
      if constexpr (VI8) values_i8(vt, s);
      else values_f16(vt, s);
    }
  }

 private:
  __device__ __forceinline__ void vflush() {
#pragma unroll
    for (int i = 0; i < (VI8 ? KS : 1); ++i)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        o[i][c] = fmaf(float(va1[i][c] * 256 + va2[i][c]), vscale, o[i][c]);
        va1[i][c] = va2[i][c] = 0;
      }
  }
  // Q scale of P' (turbo3 values): a value norm of this page above vbound (warp vote) sets
  // vbound = 2 × the page's largest norm (room for later pages).
  __device__ __forceinline__ void update_vbound(float nvm) {
    if (__any_sync(0xffffffffu, nvm > vbound)) {
      float mxn = fmaxf(nvm, __shfl_xor_sync(0xffffffffu, nvm, 4));
      mxn = fmaxf(mxn, __shfl_xor_sync(0xffffffffu, mxn, 8));
      mxn = fmaxf(mxn, __shfl_xor_sync(0xffffffffu, mxn, 16));
      vbound = 2.f * mxn;
      vqinv = 65535.f / vbound;
      vscale = (kOneTab ? p.v1mul : p.valpha256) / vqinv;
    }
  }
  // log2-domain logit of column c relative to the running max (turbo3 keys: kscale applied here)
  __device__ __forceinline__ float logit(float sv, int c) const {
    if constexpr (KI8) return fmaf(sv, kscale[c], -m_run[c]);
    else return sv - m_run[c];
  }
  // kSplitCols: o columns 0-3 (lanes t < 2) += columns 4-7 (lanes t + 2) at the end of a piece;
  // kPair: back to the standard layout
  __device__ __forceinline__ void combine_cols() {
    if constexpr (kPair) {
      // lane (g, t) takes heads 2t, 2t + 1 from lanes (g, 2t), (g, 2t+1)
      const int src0 = 4 * g + ((2 * t) & 3), src1 = src0 + 1;
      float on[KS][4];
#pragma unroll
      for (int i = 0; i < KS; ++i)
#pragma unroll
        for (int c = 0; c < 4; ++c)
          on[i][c] = __shfl_sync(0xffffffffu, o[i][c >> 1], (c & 1) ? src1 : src0);
#pragma unroll
      for (int i = 0; i < KS; ++i)
#pragma unroll
        for (int c = 0; c < 4; ++c) o[i][c] = on[i][c];
      const float m0 = __shfl_sync(0xffffffffu, m_run[0], src0);
      const float m1 = __shfl_sync(0xffffffffu, m_run[0], src1);
      const float l0 = __shfl_sync(0xffffffffu, l_run[0], src0);
      const float l1 = __shfl_sync(0xffffffffu, l_run[0], src1);
      m_run[0] = m0;
      m_run[1] = m1;
      l_run[0] = l0;
      l_run[1] = l1;
    } else if constexpr (kSplitCols) {
#pragma unroll
      for (int i = 0; i < KS; ++i)
#pragma unroll
        for (int c = 0; c < 4; ++c) o[i][c] += __shfl_xor_sync(0xffffffffu, o[i][c], 2);
    }
  }

  // turbo3 keys on the int8 tensor cores: a1 += T1·qf[2·grp] (T1: the one-byte table, or the
  // high bytes of the two-byte one); a2 += T1·qf[2·grp + 1] (the query's low part 2·Q2; not
  // with pair columns, which carry it in the same product); a3 += T2·qf[2·grp] (two-byte
  // tables). Three independent chains of D/32 products.
  __device__ __forceinline__ void key_products(const KT& kt, int (&a1)[2][4], int (&a2)[2][4],
                                               int (&a3)[2][4]) const {
#pragma unroll
    for (int grp = 0; grp < D / 32; ++grp) {
      uint32_t k1[8], k2[8];
      KLookup::template i8<kOneTab>(kt.w0 + 3 * grp, p.k1tab, p.ki8, k1, k2);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const uint32_t A1[4] = {k1[4 * mt], k1[4 * mt + 1], k1[4 * mt + 2], k1[4 * mt + 3]};
        imma(a1[mt], A1, qf[2 * grp][0], qf[2 * grp][1]);
        if constexpr (!kPair) imma(a2[mt], A1, qf[2 * grp + 1][0], qf[2 * grp + 1][1]);
        if constexpr (!kOneTab) {
          const uint32_t A2[4] = {k2[4 * mt], k2[4 * mt + 1], k2[4 * mt + 2], k2[4 * mt + 3]};
          imma(a3[mt], A2, qf[2 * grp][0], qf[2 * grp][1]);
        }
      }
    }
  }

  // The whole page with pair columns (turbo3 keys and values, G ≤ 4, one-byte tables).
  __device__ __forceinline__ void page_pair(const KT& kt, const VT& vt, int pg) {
    // keys: a[mt] = rows tokens 16mt + g (+8) × columns 2t (Q1 part), 2t + 1 (2·Q2 part)
    int a[2][4] = {}, unused2[2][4], unused3[2][4];
    key_products(kt, a, unused2, unused3);
    // scores of head t, tokens g + 8k (k = 2mt + r), without kscale (see logit)
    float sc[4];
    const int nvalid = seq - pg * kPageTokens;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int k = 2 * mt + r;
        sc[k] = float(a[mt][2 * r] * 256 + a[mt][2 * r + 1]) * kt.sc[k][0];
      }
    if (nvalid < kPageTokens) {  // the last page only (warp-uniform)
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (g + 8 * k >= nvalid) sc[k] = -INFINITY;
    }
    float mx = fmaxf(fmaxf(sc[0], sc[1]), fmaxf(sc[2], sc[3])) * kscale[0];
    if (__any_sync(0xffffffffu, mx > m_run[0])) {
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
      const float mn = fmaxf(m_run[0], mx);
      const float alpha = fast_exp2(m_run[0] - mn);
      m_run[0] = mn;
      l_run[0] *= alpha;
      if (!__all_sync(0xffffffffu, alpha == 1.f)) {
#pragma unroll
        for (int i = 0; i < KS; ++i) {
          o[i][0] *= alpha;
          o[i][1] *= alpha;
        }
      }
    }
    update_vbound(fmaxf(fmaxf(vt.sc[0][0], vt.sc[1][0]), fmaxf(vt.sc[2][0], vt.sc[3][0])));
    // P' = p·‖v‖ → Q = 256·Q1 + Q2; the b16 pair (Q1, Q2) is row g + 8k, columns 2t, 2t + 1
    // of the 8 × 8 block that movmatrix transposes into the B fragment (column n = lane g)
    uint32_t x[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float pk = fast_exp2(logit(sc[k], 0));
      l_run[0] += pk;
      const uint32_t qb = __float_as_uint(fmaf(pk, vt.sc[k][0] * vqinv, 8388608.f));
      x[k] = movtrans(prmt(qb, 0u, 0x4041));
    }
    const uint32_t b0 = prmt(x[0], x[1], 0x6420), b1 = prmt(x[2], x[3], 0x6420);
    const float vs256 = 256.f * vscale;
#pragma unroll
    for (int grp = 0; grp < D / 32; ++grp) {
      uint32_t v1[8], v2[8];
      VLookup::template i8<true>(vt.w0 + 3 * grp, p.v1tab, p.vi8, v1, v2);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const uint32_t A1[4] = {v1[4 * mt], v1[4 * mt + 1], v1[4 * mt + 2], v1[4 * mt + 3]};
        int d[4] = {0, 0, 0, 0};
        imma_su(d, A1, b0, b1);
        float* oi = o[2 * grp + mt];
        oi[0] = fmaf(float(d[0]), vs256, fmaf(float(d[1]), vscale, oi[0]));  // dim g
        oi[1] = fmaf(float(d[2]), vs256, fmaf(float(d[3]), vscale, oi[1]));  // dim g + 8
      }
    }
  }

  // Scores S^T[mt]: tokens 16mt + g (+8), heads 2t, 2t+1; scaled by the per-token scalars and
  // masked past the sequence's end (turbo3 keys: still without kscale).
  __device__ __forceinline__ void scores(const KT& kt, int pg, float (&s)[2][4]) const {
    float s2[2][4] = {};
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int c = 0; c < 4; ++c) s[mt][c] = 0.f;
    if constexpr (KI8) {
      int a1[2][4] = {}, a2[2][4] = {}, a3[2][4] = {};  // up to three chains of D/32
      key_products(kt, a1, a2, a3);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int c = 0; c < 4; ++c)
          // (× kscale later: on the page max and inside the exp2's FFMA)
          s[mt][c] = float(a1[mt][c] * 256 + a2[mt][c] + a3[mt][c]);
    }
#pragma unroll
    for (int grp = 0; grp < (KI8 ? 0 : D / 32); ++grp) {
      uint32_t h[16];
      const bool in_p0 = grp * 32 < KP0::kFirst + KP0::kElems;
      if (!K2 || KF == Fmt::kTurbo3p || in_p0) {
        const int pg_ = grp - KP0::kFirst / 32;
        decode_group<KP0::kKind, false>(kt.w0 + pg_ * KP0::kBits, p.klo[0][0], p.klo[0][1],
                                        p.khi[0][0], p.khi[0][1], kt.qs[grp % KT::kNB], h);
#pragma unroll
        for (int jj = 0; jj < 2; ++jj)
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            const uint32_t a[4] = {h[8 * jj + 4 * mt], h[8 * jj + 4 * mt + 1],
                                   h[8 * jj + 4 * mt + 2], h[8 * jj + 4 * mt + 3]};
            mma<KBF>(s[mt], a, qf[2 * grp + jj][0], qf[2 * grp + jj][1]);
          }
      }
      if constexpr (K2) {
        if (KF == Fmt::kTurbo3p || !in_p0) {
          const int pg_ = grp - KP1::kFirst / 32;
          decode_group<KP1::kKind, false>(kt.w1 + pg_ * KP1::kBits, p.klo[1][0], p.klo[1][1],
                                          p.khi[1][0], p.khi[1][1], kt.qs[0], h);
#pragma unroll
          for (int jj = 0; jj < 2; ++jj)
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
              const uint32_t a[4] = {h[8 * jj + 4 * mt], h[8 * jj + 4 * mt + 1],
                                     h[8 * jj + 4 * mt + 2], h[8 * jj + 4 * mt + 3]};
              if constexpr (KF == Fmt::kTurbo3p)
                mma<KBF>(s2[mt], a, qf2[2 * grp + jj][0], qf2[2 * grp + jj][1]);
              else
                mma<KBF>(s2[mt], a, qf[2 * grp + jj][0], qf[2 * grp + jj][1]);
            }
        }
      }
    }
    // per-token scaling and masking; c: 0,1 → token 16mt + g, heads 2t, 2t+1; 2,3 → +8
    const int nvalid = seq - pg * kPageTokens;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int k = 2 * mt + (c >> 1);  // token g + 8k
        float v = s[mt][c];
        if constexpr (is_turbo(KF) || KF == Fmt::kFp8E4M3) {  // norm, or fp8 scale × unit
          v *= kt.sc[k][0];
          if constexpr (K2) v += s2[mt][c] * kt.sc[k][1];
        }
        s[mt][c] = v;
      }
    if (nvalid < kPageTokens) {  // the last page only (warp-uniform)
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int c = 0; c < 4; ++c)
          if (g + 8 * (2 * mt + (c >> 1)) >= nvalid) s[mt][c] = -INFINITY;
    }
  }

  // The running max and the rescale of o and l.
  __device__ __forceinline__ void softmax(const float (&s)[2][4]) {
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int c = 0; c < 4; ++c) mx[c & 1] = fmaxf(mx[c & 1], s[mt][c]);
    if constexpr (KI8) {  // scores still without kscale (> 0): the max commutes with it
      mx[0] *= kscale[0];
      mx[1] *= kscale[1];
    }
    // The running max rarely moves after the first pages. When no score exceeds it (one warp
    // vote), the update below would give alpha = 1 and the same max: skip the shuffle
    // reduction too (bit-identical results).
    if (__any_sync(0xffffffffu, mx[0] > m_run[0] || mx[1] > m_run[1])) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        mx[c] = fmaxf(mx[c], __shfl_xor_sync(0xffffffffu, mx[c], 4));
        mx[c] = fmaxf(mx[c], __shfl_xor_sync(0xffffffffu, mx[c], 8));
        mx[c] = fmaxf(mx[c], __shfl_xor_sync(0xffffffffu, mx[c], 16));
      }
      float alpha[2];
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const float mn = fmaxf(m_run[c], mx[c]);
        alpha[c] = fast_exp2(m_run[c] - mn);
        m_run[c] = mn;
        l_run[c] *= alpha[c];
      }
      // skip the rescale warp-uniformly when nothing moved
      if (!__all_sync(0xffffffffu, alpha[0] == 1.f && alpha[1] == 1.f)) {
        if constexpr (kSplitCols) {  // columns 2t, 2t+1 ≥ 4: heads 2t − 4, 2t − 3
          const float s0 = __shfl_xor_sync(0xffffffffu, alpha[0], 2);
          const float s1 = __shfl_xor_sync(0xffffffffu, alpha[1], 2);
          const float a0 = t < 2 ? alpha[0] : s0, a1 = t < 2 ? alpha[1] : s1;
#pragma unroll
          for (int i = 0; i < KS; ++i) {
            o[i][0] *= a0; o[i][1] *= a1; o[i][2] *= a0; o[i][3] *= a1;
          }
        } else {
#pragma unroll
          for (int i = 0; i < KS; ++i) {
            o[i][0] *= alpha[0]; o[i][1] *= alpha[1]; o[i][2] *= alpha[0]; o[i][3] *= alpha[1];
          }
        }
      }
    }
  }

  // turbo3 values on the int8 tensor cores. V codes → V1, V2 (c/α = 256·V1 + V2, as the keys);
  // P' = p·‖v‖ → Q = round(P'·vqinv) ≤ 65535 = 256·Q1 + Q2 (u8 bytes, Q1 and Q2 exact);
  // O^T += α/vqinv · V^T·Q^T ≈ 256α/vqinv · (256·V1Q1 + V1Q2 + V2Q1) (V2Q2 < 2^-15 of the
  // product dropped). One table (c ≈ s·T): O^T += s/vqinv · (256·TQ1 + TQ2).
  __device__ __forceinline__ void values_i8(const VT& vt, const float (&s)[2][4]) {
    update_vbound(fmaxf(fmaxf(vt.sc[0][0], vt.sc[1][0]), fmaxf(vt.sc[2][0], vt.sc[3][0])));
    // Q of token g + 8k, heads 2t | 2t+1 (u16 pair; 2^23 + Q as a float holds Q in its low
    // bits), transposed to head g, tokens 8k + 2t | 8k + 2t + 1
    uint32_t x[4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int k = 2 * mt + hh;
        const float p0 = fast_exp2(logit(s[mt][2 * hh], 0));
        const float p1 = fast_exp2(logit(s[mt][2 * hh + 1], 1));
        l_run[0] += p0;
        l_run[1] += p1;
        const float f = vt.sc[k][0] * vqinv;
        x[k] = movtrans(prmt(__float_as_uint(fmaf(p0, f, 8388608.f)),
                             __float_as_uint(fmaf(p1, f, 8388608.f)), 0x5410));
      }
    // B fragments: k = 16h + 4t + j ↔ token 16h + 8(j>>1) + 2t + (j&1) (formats.cuh)
    const uint32_t bh0 = prmt(x[0], x[1], 0x7531), bl0 = prmt(x[0], x[1], 0x6420);
    const uint32_t bh1 = prmt(x[2], x[3], 0x7531), bl1 = prmt(x[2], x[3], 0x6420);
    if constexpr (kSplitCols) {
      // B columns 0-3 (lanes g < 4): Q1 bytes of heads 0-3; columns 4-7: their Q2 bytes (from
      // lanes g − 4). One product per value: o columns 0-3 gather 256·ΣTQ1, columns 4-7 ΣTQ2
      // (scales per lane), added together once at the end of the piece.
      const uint32_t q0 = __shfl_xor_sync(0xffffffffu, bl0, 16);
      const uint32_t q1 = __shfl_xor_sync(0xffffffffu, bl1, 16);
      const uint32_t b0 = g < 4 ? bh0 : q0, b1 = g < 4 ? bh1 : q1;
      const float osc = t < 2 ? 256.f * vscale : vscale;
#pragma unroll
      for (int grp = 0; grp < D / 32; ++grp) {
        uint32_t v1[8], v2[8];
        VLookup::template i8<true>(vt.w0 + 3 * grp, p.v1tab, p.vi8, v1, v2);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          const uint32_t A1[4] = {v1[4 * mt], v1[4 * mt + 1], v1[4 * mt + 2], v1[4 * mt + 3]};
          int d[4] = {0, 0, 0, 0};
          imma_su(d, A1, b0, b1);
#pragma unroll
          for (int c = 0; c < 4; ++c)
            o[2 * grp + mt][c] = fmaf(float(d[c]), osc, o[2 * grp + mt][c]);
        }
      }
    } else {
#pragma unroll
      for (int grp = 0; grp < D / 32; ++grp) {
        uint32_t v1[8], v2[8];
        VLookup::template i8<kOneTab>(vt.w0 + 3 * grp, p.v1tab, p.vi8, v1, v2);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          const uint32_t A1[4] = {v1[4 * mt], v1[4 * mt + 1], v1[4 * mt + 2], v1[4 * mt + 3]};
          imma_su(va1[2 * grp + mt], A1, bh0, bh1);
          imma_su(va2[2 * grp + mt], A1, bl0, bl1);
          if constexpr (!kOneTab) {
            const uint32_t A2[4] = {v2[4 * mt], v2[4 * mt + 1], v2[4 * mt + 2], v2[4 * mt + 3]};
            imma_su(va2[2 * grp + mt], A2, bh0, bh1);
          }
        }
      }
      vflush();
    }
  }

  // Values of the other formats: P' = p·(value scalar) as fp16/bf16 B fragments, V decoded to
  // fp16/bf16 A fragments, O^T[mt] += V^T(mt, kt) · P'^T(kt).
  __device__ __forceinline__ void values_f16(const VT& vt, const float (&s)[2][4]) {
    // Same codebook for K and V: one set of table registers.
    const auto& vlo = KF == VF ? p.klo : p.vlo;
    const auto& vhi = KF == VF ? p.khi : p.vhi;
    uint32_t pf[2][2], pf2[V2 ? 2 : 1][2];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int k = 2 * mt + hh;
        // q8_0/q4_0 (fp16 P' = p): p·4096 (l likewise; the factor cancels in o/l) keeps
        // probabilities far below the running max normal fp16 numbers down to 1.5e-8
        constexpr float kLog2PS = (!is_turbo(VF) && !VBF) ? 12.f : 0.f;
        const float p0 = fast_exp2(logit(s[mt][2 * hh], 0) + kLog2PS);
        const float p1 = fast_exp2(logit(s[mt][2 * hh + 1], 1) + kLog2PS);
        l_run[0] += p0;
        l_run[1] += p1;
        float a0 = p0, a1 = p1;
        if constexpr (is_turbo(VF)) {
          const float nv = vt.sc[k][0];
          a0 *= nv;
          a1 *= nv;
        }
        uint32_t x;
        if constexpr (VBF) {
          __nv_bfloat162 bb = __floats2bfloat162_rn(a0, a1);
          x = *reinterpret_cast<uint32_t*>(&bb);
        } else {
          x = h2u(__floats2half2_rn(a0, a1));
        }
        pf[mt][hh] = movtrans(x);
        if constexpr (V2) {
          const float nv = vt.sc[k][1];
          pf2[mt][hh] = movtrans(h2u(__floats2half2_rn(p0 * nv, p1 * nv)));
        }
      }
#pragma unroll
    for (int grp = 0; grp < D / 32; ++grp) {
      uint32_t h[16];
      const bool in_p0 = grp * 32 < VP0::kFirst + VP0::kElems;
      if (in_p0) {
        decode_group<VP0::kKind, true>(vt.w0 + (grp - VP0::kFirst / 32) * VP0::kBits, vlo[0][0],
                                       vlo[0][1], vhi[0][0], vhi[0][1], vt.qs[grp % VT::kNB], h);
      } else if constexpr (VP1::kExists) {
        decode_group<VP1::kKind, true>(vt.w1 + (grp - VP1::kFirst / 32) * VP1::kBits, vlo[1][0],
                                       vlo[1][1], vhi[1][0], vhi[1][1], vt.qs[0], h);
      }
#pragma unroll
      for (int jm = 0; jm < 2; ++jm)
#pragma unroll
        for (int kt = 0; kt < 2; ++kt) {
          const uint32_t a[4] = {h[8 * jm + 4 * kt], h[8 * jm + 4 * kt + 1],
                                 h[8 * jm + 4 * kt + 2], h[8 * jm + 4 * kt + 3]};
          if (V2 && !in_p0)
            mma<VBF>(o[2 * grp + jm], a, pf2[kt][0], pf2[kt][1]);
          else
            mma<VBF>(o[2 * grp + jm], a, pf[kt][0], pf[kt][1]);
        }
    }
  }
};

}  // namespace tq::cuda::dk
