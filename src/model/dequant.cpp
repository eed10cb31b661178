// ggml tensor types: block geometry and scalar dequantization to f32.
//
// Block layouts (ggml's definitions; all little-endian, fp16 scales):
//   Q4_0  (32 values, 18 B): d; 16 bytes of nibbles. Value j (< 16) is the low nibble of byte j,
//         value j + 16 its high nibble; x = d·(q − 8).
//   Q4_1  (32, 20 B): d, m; 16 bytes of nibbles as Q4_0; x = d·q + m.
//   Q5_0  (32, 22 B): d; qh (u32: bit j = 5th bit of value j); nibbles as Q4_0; x = d·(q − 16).
//   Q5_1  (32, 24 B): d, m; qh; nibbles; x = d·q + m.
//   Q8_0  (32, 34 B): d; 32 int8; x = d·q.
//   Q4_K  (256, 144 B): d, dmin; 12 bytes holding 8 six-bit scales and 8 six-bit mins; 128 bytes
//         of nibbles. Eight sub-blocks of 32; sub-block s: x = d·sc[s]·q − dmin·mn[s]. Values
//         64c..64c+31 are the low nibbles of bytes 32c..32c+31, values 64c+32.. the high ones.
//   Q5_K  (256, 176 B): as Q4_K plus qh[32] before the nibbles: the 5th bit of value 64c + l is
//         bit 2c of qh[l], of value 64c + 32 + l bit 2c + 1.
//   Q6_K  (256, 210 B): ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], d. Sixteen
//         sub-blocks of 16: x = d·scale[s]·(q − 32). See dequant_q6_k for the bit positions.
#include <cstring>
#include <string>

#include "core/half.h"
#include "model/gguf.h"
#include "tq/error.h"

namespace tq {

namespace {

struct TypeInfo {
  GgmlType type;
  const char* name;
  int64_t block;
  size_t bytes;
  bool dequant;
};

constexpr TypeInfo kTypes[] = {
    {GgmlType::F32, "f32", 1, 4, true},        {GgmlType::F16, "f16", 1, 2, true},
    {GgmlType::Q4_0, "q4_0", 32, 18, true},    {GgmlType::Q4_1, "q4_1", 32, 20, true},
    {GgmlType::Q5_0, "q5_0", 32, 22, true},    {GgmlType::Q5_1, "q5_1", 32, 24, true},
    {GgmlType::Q8_0, "q8_0", 32, 34, true},    {GgmlType::Q8_1, "q8_1", 32, 36, false},
    {GgmlType::Q2_K, "q2_K", 256, 84, false},  {GgmlType::Q3_K, "q3_K", 256, 110, false},
    {GgmlType::Q4_K, "q4_K", 256, 144, true},  {GgmlType::Q5_K, "q5_K", 256, 176, true},
    {GgmlType::Q6_K, "q6_K", 256, 210, true},  {GgmlType::Q8_K, "q8_K", 256, 292, false},
    {GgmlType::IQ4_NL, "iq4_nl", 32, 18, false}, {GgmlType::BF16, "bf16", 1, 2, true},
};

const TypeInfo* info(GgmlType t) {
  for (const auto& i : kTypes)
    if (i.type == t) return &i;
  return nullptr;
}

const TypeInfo& info_or_throw(GgmlType t) {
  const TypeInfo* i = info(t);
  if (i == nullptr) throw Error("unknown ggml tensor type " + std::to_string(uint32_t(t)));
  return *i;
}

inline float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0: blocks of 32.
void dequant_q4_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(int(qs[j] & 0x0F) - 8);
    y[j + 16] = d * float(int(qs[j] >> 4) - 8);
  }
}

void dequant_q4_1(const uint8_t* b, float* y) {
  const float d = half_at(b), m = half_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(qs[j] & 0x0F) + m;
    y[j + 16] = d * float(qs[j] >> 4) + m;
  }
}

void dequant_q5_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int lo = int(qs[j] & 0x0F) | int(((qh >> j) & 1u) << 4);
    const int hi = int(qs[j] >> 4) | int(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * float(lo - 16);
    y[j + 16] = d * float(hi - 16);
  }
}

void dequant_q5_1(const uint8_t* b, float* y) {
  const float d = half_at(b), m = half_at(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int lo = int(qs[j] & 0x0F) | int(((qh >> j) & 1u) << 4);
    const int hi = int(qs[j] >> 4) | int(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * float(lo) + m;
    y[j + 16] = d * float(hi) + m;
  }
}

void dequant_q8_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = d * float(qs[j]);
}

// The 12 scale bytes of Q4_K/Q5_K hold 8 six-bit scales and 8 six-bit mins: for s < 4 the low 6
// bits of bytes s (scale) and s + 4 (min); for s ≥ 4 the scale is the low nibble of byte s + 4
// with the top 2 bits of byte s − 4 above it, the min the high nibble of byte s + 4 with the
// top 2 bits of byte s above it.
void k_scale_min(const uint8_t* sc, int s, int& scale, int& min) {
  if (s < 4) {
    scale = sc[s] & 63;
    min = sc[s + 4] & 63;
  } else {
    scale = (sc[s + 4] & 0x0F) | ((sc[s - 4] >> 6) << 4);
    min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
  }
}

void dequant_q4_k(const uint8_t* b, float* y) {
  const float d = half_at(b), dmin = half_at(b + 2);
  const uint8_t* sc = b + 4;
  const uint8_t* qs = b + 16;
  for (int c = 0; c < 4; ++c) {  // 64 values per chunk: two sub-blocks of 32
    int s0, m0, s1, m1;
    k_scale_min(sc, 2 * c, s0, m0);
    k_scale_min(sc, 2 * c + 1, s1, m1);
    const float d0 = d * float(s0), o0 = dmin * float(m0);
    const float d1 = d * float(s1), o1 = dmin * float(m1);
    const uint8_t* q = qs + 32 * c;
    for (int l = 0; l < 32; ++l) {
      y[64 * c + l] = d0 * float(q[l] & 0x0F) - o0;
      y[64 * c + 32 + l] = d1 * float(q[l] >> 4) - o1;
    }
  }
}

void dequant_q5_k(const uint8_t* b, float* y) {
  const float d = half_at(b), dmin = half_at(b + 2);
  const uint8_t* sc = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int c = 0; c < 4; ++c) {
    int s0, m0, s1, m1;
    k_scale_min(sc, 2 * c, s0, m0);
    k_scale_min(sc, 2 * c + 1, s1, m1);
    const float d0 = d * float(s0), o0 = dmin * float(m0);
    const float d1 = d * float(s1), o1 = dmin * float(m1);
    const uint8_t* q = qs + 32 * c;
    for (int l = 0; l < 32; ++l) {
      const int lo = int(q[l] & 0x0F) | (((qh[l] >> (2 * c)) & 1) << 4);
      const int hi = int(q[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
      y[64 * c + l] = d0 * float(lo) - o0;
      y[64 * c + 32 + l] = d1 * float(hi) - o1;
    }
  }
}

// Q6_K: two halves of 128 values. In half h, with ql = ql_all + 64h, qh = qh_all + 32h and
// l < 32: value 128h + l       = low nibble of ql[l]      | bits 0-1 of qh[l] << 4
//         value 128h + 32 + l  = low nibble of ql[l + 32] | bits 2-3 of qh[l] << 4
//         value 128h + 64 + l  = high nibble of ql[l]     | bits 4-5 of qh[l] << 4
//         value 128h + 96 + l  = high nibble of ql[l + 32]| bits 6-7 of qh[l] << 4
// and value v uses scale[v / 16].
void dequant_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql_all = b;
  const uint8_t* qh_all = b + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half_at(b + 208);
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = ql_all + 64 * h;
    const uint8_t* qh = qh_all + 32 * h;
    float* out = y + 128 * h;
    const int8_t* sc = scales + 8 * h;
    for (int l = 0; l < 32; ++l) {
      const int q0 = (int(ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q1 = (int(ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q2 = (int(ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q3 = (int(ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      const int s = l / 16;
      out[l] = d * float(sc[s]) * float(q0);
      out[l + 32] = d * float(sc[s + 2]) * float(q1);
      out[l + 64] = d * float(sc[s + 4]) * float(q2);
      out[l + 96] = d * float(sc[s + 6]) * float(q3);
    }
  }
}

}  // namespace

const char* ggml_type_name(GgmlType t) {
  const TypeInfo* i = info(t);
  return i ? i->name : "unknown";
}

bool ggml_type_known(uint32_t t) { return info(GgmlType(t)) != nullptr; }

int64_t ggml_block_size(GgmlType t) { return info_or_throw(t).block; }

size_t ggml_block_bytes(GgmlType t) { return info_or_throw(t).bytes; }

bool ggml_can_dequantize(GgmlType t) {
  const TypeInfo* i = info(t);
  return i != nullptr && i->dequant;
}

void dequantize(GgmlType t, const void* src, float* dst, int64_t n) {
  const TypeInfo& ti = info_or_throw(t);
  if (!ti.dequant) throw Error(std::string("dequantize: unsupported tensor type ") + ti.name);
  if (n < 0 || n % ti.block != 0)
    throw Error("dequantize: " + std::to_string(n) + " elements is not a multiple of the " +
                ti.name + " block size " + std::to_string(ti.block));
  const uint8_t* p = static_cast<const uint8_t*>(src);
  const int64_t nb = n / ti.block;
  switch (t) {
    case GgmlType::F32: std::memcpy(dst, p, size_t(n) * 4); return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = half_at(p + 2 * i);
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    default: break;
  }
  void (*fn)(const uint8_t*, float*) = nullptr;
  switch (t) {
    case GgmlType::Q4_0: fn = dequant_q4_0; break;
    case GgmlType::Q4_1: fn = dequant_q4_1; break;
    case GgmlType::Q5_0: fn = dequant_q5_0; break;
    case GgmlType::Q5_1: fn = dequant_q5_1; break;
    case GgmlType::Q8_0: fn = dequant_q8_0; break;
    case GgmlType::Q4_K: fn = dequant_q4_k; break;
    case GgmlType::Q5_K: fn = dequant_q5_k; break;
    case GgmlType::Q6_K: fn = dequant_q6_k; break;
    default: TQ_ASSERT(false);
  }
  for (int64_t i = 0; i < nb; ++i) fn(p + size_t(i) * ti.bytes, dst + i * ti.block);
}

}  // namespace tq
