// GPU cache layouts (shared by the append kernel, the decode kernel and the host-side unpacker).
//
// A page holds 32 tokens of every KV head: page = [kv_head][K tile][V tile]. A tile holds one
// head's 32 tokens of K (or V) in "fragment order": lane l of the warp that reads the tile finds,
// in its own words, exactly the codes of the elements it feeds to the tensor cores
// (mma.m16n8k16 A fragments), so no shuffles or shared memory are needed to decode.
//
// Lane element i (0 <= i < D) of lane l = 4g + t maps to (token, dim):
//   K (A of S^T = K·Q^T):  r = i%8, b = i/8, mt = b%2, ks = b/2
//        token = 16mt + g + 8((r>>1)&1),  dim = 16ks + 8(r>>2) + 2t + (r&1)
//   V (A of O^T = V^T·P^T): r = i%8, b = i/8, kt = b%2, mt = b/2
//        dim = 16mt + g + 8((r>>1)&1),    token = 16kt + 8(r>>2) + 2t + (r&1)
// So lane elements [0, D/4) are dims [0, D/4) for both K and V (the outlier part of the split
// types), and every 32 consecutive lane elements share one 32-dim block (q8_0/q4_0 scales).
//
// A tile = the code words of its parts, then its per-token fp16 scalars (norms or scales).
// Part p of a format covers lane elements [first, first + n); each lane owns W = n·bits/32
// words of it, stored [W/U][32 lanes][U] (U = 4, 2 or 1 words: 16-, 8- or 4-byte loads).
// Within a group of 32 lane elements (bits words), the code of element e sits at (see
// code_slot): LUT3: nibble e%8 of word e/8 (e < 24), else bit 3 of nibble e%8 of words 0..2;
// LUT2: bits 4(e%8) + 2((e/8)%2) of word e/16; LUT1: bit 4(e%8) + e/8; LUT4: magnitude as LUT3
// in words 0..2, sign in word 3 at bit (15 − e/2) + 16(e%2); Q8: byte e%4 of word e/4;
// Q4: nibble (e%8)/2 + 4(e%2) of word e/8; BF16/F16: half e%2 of word e/2; FP8 (E4M3FN
// byte, as Q8): byte e%4 of word e/4.
//
// fp8_e4m3 (DESIGN.md §2.5, the CPU codec's numbers): code byte = E4M3FN(x/s), s = fp16(amax/448)
// of the token's head vector; the tile's scalars are one array of the 32 tokens' s in token
// order (as q8_0's block scales). Same bytes as the CPU codec's token block [s][d codes], only
// placed in fragment order: 8 + 16/D bpv.
#pragma once
#include <cstdint>

#include "tq/gpu_format.h"

#ifdef __CUDACC__
#define TQ_HD __host__ __device__ __forceinline__
#else
#define TQ_HD inline
#endif

namespace tq::cuda {

// The format enum is the one the CPU registry's traits name (include/tq/gpu_format.h); the
// format tables of src/cuda are indexed by it.
using Fmt = ::tq::GpuFormat;
enum class Kind : int { LUT1, LUT2, LUT3, LUT4, Q8, Q4, BF16, FP8 };

TQ_HD constexpr int kind_bits(Kind k) {
  return k == Kind::LUT1 ? 1 : k == Kind::LUT2 ? 2 : k == Kind::LUT3 ? 3
       : k == Kind::LUT4 ? 4 : (k == Kind::Q8 || k == Kind::FP8) ? 8 : k == Kind::Q4 ? 4 : 16;
}
TQ_HD constexpr bool kind_is_lut(Kind k) { return int(k) <= int(Kind::LUT4); }

TQ_HD constexpr int nparts(Fmt f) {
  return (f == Fmt::kTurbo2_5 || f == Fmt::kTurbo3_5 || f == Fmt::kTurbo3p) ? 2 : 1;
}
TQ_HD constexpr Kind part_kind(Fmt f, int p) {
  switch (f) {
    case Fmt::kBF16: return Kind::BF16;
    case Fmt::kQ8_0: return Kind::Q8;
    case Fmt::kQ4_0: return Kind::Q4;
    case Fmt::kTurbo2: return Kind::LUT2;
    case Fmt::kTurbo3: return Kind::LUT3;
    case Fmt::kTurbo4: return Kind::LUT4;
    case Fmt::kTurbo2_5: return p == 0 ? Kind::LUT3 : Kind::LUT2;
    case Fmt::kTurbo3_5: return p == 0 ? Kind::LUT4 : Kind::LUT3;
    case Fmt::kTurbo3p: return p == 0 ? Kind::LUT2 : Kind::LUT1;
    case Fmt::kFp8E4M3: return Kind::FP8;
    default: return Kind::BF16;
  }
}
TQ_HD constexpr bool is_split(Fmt f) { return f == Fmt::kTurbo2_5 || f == Fmt::kTurbo3_5; }
// The rotated Lloyd-Max types (turbo2 .. turbo3p, consecutive in the enum): a per-token norm
// in scalar_slot order, codebooks and rotations in FormatConsts.
TQ_HD constexpr bool is_turbo(Fmt f) {
  return int(f) >= int(Fmt::kTurbo2) && int(f) <= int(Fmt::kTurbo3p);
}
// The head dims with kernels, and the (K, V) pairs the cache stores at a head dim: the same
// format for K and V, or turbo3p keys (key-only) with turbo3 values; the split types need
// D >= 128 (their outlier part is D/4 lane elements, a whole number of 32-groups).
TQ_HD constexpr bool head_dim_supported(int D) { return D == 64 || D == 128 || D == 256; }
TQ_HD constexpr bool pair_supported(Fmt kf, Fmt vf, int D) {
  if (int(kf) < 0 || int(kf) >= int(Fmt::kCount) || vf == Fmt::kTurbo3p) return false;
  if (kf == Fmt::kTurbo3p) return vf == Fmt::kTurbo3;
  return kf == vf && (!is_split(kf) || D >= 128);
}
// Lane elements covered by part p, and the first one. T3P's two parts (mse codes, QJL signs)
// cover the same elements.
TQ_HD constexpr int part_elems(Fmt f, int p, int D) {
  return is_split(f) ? (p == 0 ? D / 4 : D - D / 4) : D;
}
TQ_HD constexpr int part_first(Fmt f, int p, int D) {
  return (is_split(f) && p == 1) ? D / 4 : 0;
}
TQ_HD constexpr int part_words(Fmt f, int p, int D) {
  return part_elems(f, p, D) * kind_bits(part_kind(f, p)) / 32;
}
TQ_HD constexpr int unit_words(int W) { return W % 4 == 0 ? 4 : W % 2 == 0 ? 2 : 1; }
TQ_HD constexpr int part_offset_bytes(Fmt f, int p, int D) {
  return p == 0 ? 0 : part_words(f, 0, D) * 128;
}
TQ_HD constexpr int codes_bytes(Fmt f, int D) {
  return part_words(f, 0, D) * 128 + (nparts(f) > 1 ? part_words(f, 1, D) * 128 : 0);
}
// Per-token fp16 scalar arrays (32 tokens each) after the codes: turbo norm; split: norm of
// the outlier part, norm of the rest; T3P: norm, residual norm γ; q8_0/q4_0: one scale per
// 32-dim block ([block][token]); fp8_e4m3: the token's scale ([token]).
TQ_HD constexpr int nscalars(Fmt f, int D) {
  return f == Fmt::kBF16 ? 0 : (f == Fmt::kQ8_0 || f == Fmt::kQ4_0) ? D / 32
       : (is_split(f) || f == Fmt::kTurbo3p) ? 2 : 1;
}
// Position of token tok in a turbo scalar array: the 4 tokens g, g+8, g+16, g+24 that one lane
// needs are adjacent (one 8-byte load).
TQ_HD constexpr int scalar_slot(int tok) { return 4 * (tok & 7) + (tok >> 3); }
TQ_HD constexpr int tile_bytes(Fmt f, int D) { return codes_bytes(f, D) + nscalars(f, D) * 64; }
// Tokens per GPU page. The CPU cache pages hold 256 tokens (KvCacheOptions::page_tokens); the
// GPU page is the decode kernel's unit of work instead: one warp reads one page as two m16
// tiles of keys (the M dimension of S^T = K·Q'^T) and one k32 step of values (the int8 mma's
// K dimension), and the fragment order above is defined over exactly 32 tokens. A page of
// 256 tokens would only change the block-table granularity (8x fewer entries) at the price of
// 8x coarser allocation; the GPU and CPU caches share no memory, so nothing forces one size.
constexpr int kPageTokens = 32;

// turbo3 keys and values are read by the int8 tensor-core path (mma.m16n8k32, see
// decode_kernels.cuh): their lane elements follow the int8 A fragment instead. Lane element
// i = 32ks + 4(4mt + a) + j (register a of m-tile mt of 32-group ks, byte j):
//   K (A of S^T = K·Q^T):   token = 16mt + g + 8(a&1),   dim = 32ks + 16(a>>1) + 4t + j
//   V (A of O^T = V^T·P^T): dim = 32ks + 16mt + g + 8(a&1),
//                           token = 16(a>>1) + 8(j>>1) + 2t + (j&1)
// (V: the token order within the k dimension is the one the transposed P' fragment gives, see
// the decode kernel; still, every 32 consecutive lane elements cover one 32-dim block).
TQ_HD constexpr bool i8_layout(Fmt f, bool /*is_v*/) { return f == Fmt::kTurbo3; }

// (token, dim) of lane element i of lane l.
TQ_HD void elem_to_td(bool is_v, int lane, int i, int& tok, int& dim, bool i8 = false) {
  const int g = lane >> 2, t = lane & 3, r = i & 7, b = i >> 3;
  if (i8) {
    const int ks = i >> 5, reg = (i >> 2) & 7, mt = reg >> 2, a = reg & 3, j = i & 3;
    if (!is_v) {
      tok = 16 * mt + g + 8 * (a & 1);
      dim = 32 * ks + 16 * (a >> 1) + 4 * t + j;
    } else {
      dim = 32 * ks + 16 * mt + g + 8 * (a & 1);
      tok = 16 * (a >> 1) + 8 * (j >> 1) + 2 * t + (j & 1);
    }
  } else if (!is_v) {
    tok = 16 * (b & 1) + g + 8 * ((r >> 1) & 1);
    dim = 16 * (b >> 1) + 8 * (r >> 2) + 2 * t + (r & 1);
  } else {
    dim = 16 * (b >> 1) + g + 8 * ((r >> 1) & 1);
    tok = 16 * (b & 1) + 8 * (r >> 2) + 2 * t + (r & 1);
  }
}
// Inverse: (token, dim) → lane, lane element.
TQ_HD void td_to_elem(bool is_v, int tok, int dim, int& lane, int& i, bool i8 = false) {
  if (i8 && !is_v) {
    const int ks = dim >> 5, ah = (dim >> 4) & 1, t = (dim >> 2) & 3, j = dim & 3;
    const int mt = tok >> 4, al = (tok >> 3) & 1, g = tok & 7;
    lane = 4 * g + t;
    i = 32 * ks + 4 * (4 * mt + 2 * ah + al) + j;
  } else if (i8) {
    const int ks = dim >> 5, mt = (dim >> 4) & 1, al = (dim >> 3) & 1, g = dim & 7;
    const int ah = tok >> 4, jh = (tok >> 3) & 1, t = (tok >> 1) & 3, jl = tok & 1;
    lane = 4 * g + t;
    i = 32 * ks + 4 * (4 * mt + 2 * ah + al) + 2 * jh + jl;
  } else if (!is_v) {
    const int ks = dim >> 4, hi = (dim >> 3) & 1, t = (dim >> 1) & 3, lo = dim & 1;
    const int mt = tok >> 4, r1 = (tok >> 3) & 1, g = tok & 7;
    lane = 4 * g + t;
    i = (2 * ks + mt) * 8 + hi * 4 + r1 * 2 + lo;
  } else {
    const int mt = dim >> 4, r1 = (dim >> 3) & 1, g = dim & 7;
    const int kt = tok >> 4, hi = (tok >> 3) & 1, t = (tok >> 1) & 3, lo = tok & 1;
    lane = 4 * g + t;
    i = (2 * mt + kt) * 8 + hi * 4 + r1 * 2 + lo;
  }
}

// Where the code of part element e lives: up to 3 (word, bit, nbits, code-bit-shift) pieces
// within the lane's words of the part. Returns the number of pieces.
struct Slot {
  int word, bit, nbits, shift;
};
TQ_HD int code_slot(Kind k, int e, Slot* s) {
  const int grp = e >> 5, ee = e & 31, bits = kind_bits(k), base = grp * bits;
  switch (k) {
    case Kind::LUT3:
    case Kind::LUT4: {
      // LUT4 stores the 3-bit magnitude here; the sign is placed by the caller (lut4_sign_slot).
      const int kk = ee >> 3, pos = ee & 7;
      if (kk < 3) {
        s[0] = {base + kk, 4 * pos, 3, 0};
        return 1;
      }
      for (int b = 0; b < 3; ++b) s[b] = {base + b, 4 * pos + 3, 1, b};
      return 3;
    }
    case Kind::LUT2: {
      const int kk = ee >> 3, pos = ee & 7;
      s[0] = {base + (kk >> 1), 4 * pos + 2 * (kk & 1), 2, 0};
      return 1;
    }
    case Kind::LUT1: {
      const int kk = ee >> 3, pos = ee & 7;
      s[0] = {base, 4 * pos + kk, 1, 0};
      return 1;
    }
    case Kind::Q8:
    case Kind::FP8: s[0] = {base + (ee >> 2), 8 * (ee & 3), 8, 0}; return 1;
    case Kind::Q4: {
      const int jj = (ee & 7) >> 1, sh = ee & 1;
      s[0] = {base + (ee >> 3), 4 * (jj + 4 * sh), 4, 0};
      return 1;
    }
    default: s[0] = {base + (ee >> 1), 16 * (ee & 1), 16, 0}; return 1;
  }
}
TQ_HD Slot lut4_sign_slot(int e) {
  const int grp = e >> 5, ee = e & 31;
  return {grp * 4 + 3, (15 - (ee >> 1)) + 16 * (ee & 1), 1, 0};
}
// Two E4M3FN bytes (bits 0-7, 8-15 of pair) → two fp16 (low, high half) holding each value
// × 2^-8, exactly: sign to bit 15, exponent|mantissa shifted left by 7 (fp16 has 8 more
// exponent bias and 7 more mantissa bits; E4M3FN subnormals m·2^-9 land on fp16 subnormals
// m·2^-17). The decode's software path (PTX for GPUs before sm_89); the NaN codes (S.1111.111,
// which the encoder never writes) would read as ±480.
TQ_HD constexpr uint32_t e4m3x2_to_f16x2_div256(uint32_t pair) {
  const uint32_t u = ((pair & 0xFFu) << 8) | ((pair & 0xFF00u) << 16);  // byte b → b << 8
  return (u & 0x80008000u) | ((u >> 1) & 0x3F803F80u);
}

// Byte offset of word w of lane l within a part of W words.
TQ_HD int word_byte_offset(int W, int w, int lane) {
  const int U = unit_words(W);
  return ((w / U) * 32 * U + lane * U + (w % U)) * 4;
}

}  // namespace tq::cuda
