// Bit packing of small codes (DESIGN.md §2; scalar reference).
// Layout: an LSB-first bit stream. Code i of width b occupies stream bits [i·b, (i+1)·b); stream
// bit j is bit (j mod 8) of byte j/8. For b = 4 that is two codes per byte, low nibble first;
// for b = 2 four per byte; for b = 3, 8 codes in 3 bytes. Mixed widths append to one stream.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

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
  // size: readable bytes from `in` (0 = unknown). With a size, reads of fields that lie 8 or
  // more bytes before the end take one unaligned 64-bit load instead of a loop over bytes.
  explicit BitReader(const uint8_t* in, size_t size = 0) : in_(in), size_(size) {}
  // The next `bits` (1..24) bits, LSB-first.
  uint32_t get(int bits) {
    const size_t byte = pos_ >> 3;
    if (size_ != 0 && byte + 8 <= size_) {
      uint64_t w;
      std::memcpy(&w, in_ + byte, 8);
      const uint32_t v = uint32_t((w >> (pos_ & 7)) & ((uint64_t(1) << bits) - 1));
      pos_ += size_t(bits);
      return v;
    }
    return get_slow(bits);
  }
  // Moves the read position forward without reading (O(1)).
  void skip(size_t bits) { pos_ += bits; }
  size_t bits_read() const { return pos_; }

 private:
  uint32_t get_slow(int bits);
  const uint8_t* in_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace tq
