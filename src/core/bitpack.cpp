#include "core/bitpack.h"

#include "tq/error.h"

namespace tq {

void BitWriter::put(uint32_t value, int bits) {
  TQ_ASSERT(bits >= 0 && bits <= 24 && (bits == 0 || (value >> bits) == 0));
  for (int i = 0; i < bits;) {
    const size_t byte = pos_ >> 3;
    const int off = int(pos_ & 7);
    if (off == 0) out_[byte] = 0;
    const int take = std::min(8 - off, bits - i);
    out_[byte] |= uint8_t(((value >> i) & ((1u << take) - 1)) << off);
    pos_ += take;
    i += take;
  }
}

uint32_t BitReader::get_slow(int bits) {
  uint32_t v = 0;
  for (int i = 0; i < bits;) {
    const size_t byte = pos_ >> 3;
    const int off = int(pos_ & 7);
    const int take = std::min(8 - off, bits - i);
    v |= uint32_t((in_[byte] >> off) & ((1u << take) - 1)) << i;
    pos_ += take;
    i += take;
  }
  return v;
}

void pack_bits(const uint8_t* codes, size_t n, int bits, uint8_t* out) {
  TQ_ASSERT(bits >= 1 && bits <= 8);
  if (bits == 8) {
    for (size_t i = 0; i < n; ++i) out[i] = codes[i];
    return;
  }
  BitWriter w(out);
  for (size_t i = 0; i < n; ++i) w.put(codes[i], bits);
}

void unpack_bits(const uint8_t* in, size_t n, int bits, uint8_t* codes) {
  TQ_ASSERT(bits >= 1 && bits <= 8);
  if (bits == 8) {
    for (size_t i = 0; i < n; ++i) codes[i] = in[i];
    return;
  }
  BitReader r(in);
  for (size_t i = 0; i < n; ++i) codes[i] = uint8_t(r.get(bits));
}

}  // namespace tq
