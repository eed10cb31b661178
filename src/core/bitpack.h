// Bit packing of small codes (SPEC §2; scalar reference).
// Layout: an LSB-first bit stream. Code i of width b occupies stream bits [i·b, (i+1)·b); stream
// bit j is bit (j mod 8) of byte j/8. For b = 4 that is two codes per byte, low nibble first;
// for b = 2 four per byte; for b = 3, 8 codes in 3 bytes. Mixed widths append to one stream.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tq {

inline size_t packed_bytes(size_t n, int bits) { return (n * size_t(bits) + 7) / 8; }

// codes[i] < 2^bits is required (checked by TQ_ASSERT in the writer).
void pack_bits(const uint8_t* codes, size_t n, int bits, uint8_t* out);
void unpack_bits(const uint8_t* in, size_t n, int bits, uint8_t* codes);

// Stream writer/reader for mixed widths. The writer zero-fills as it goes.
class BitWriter {
 public:
  explicit BitWriter(uint8_t* out) : out_(out) {}
  void put(uint32_t value, int bits);
  size_t bits_written() const { return pos_; }

 private:
  uint8_t* out_;
  size_t pos_ = 0;
};

class BitReader {
 public:
  explicit BitReader(const uint8_t* in) : in_(in) {}
  uint32_t get(int bits);
  // Moves the read position forward without reading (O(1)).
  void skip(size_t bits) { pos_ += bits; }
  size_t bits_read() const { return pos_; }

 private:
  const uint8_t* in_;
  size_t pos_ = 0;
};

}  // namespace tq
