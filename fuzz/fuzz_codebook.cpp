// Fuzz target: the codebook file reader (codecs/polarvq_file.h) and the codecs built from what
// it accepts. Byte 0 is the mode: even = the rest is a file as is (exercises magic, version,
// length and checksum checks); odd = the rest is a file whose length field and checksum are
// rewritten to match, so that mutations reach the payload parser. A file that reads must give
// codecs that construct (or refuse with tq::Error) and, when they construct, encode, decode and
// score a block within their buffers. Seeds: fuzz/corpus/fuzz_codebook.
#include <xxhash.h>

#include <cstring>
#include <random>
#include <vector>

#include "codecs/polarvq.h"
#include "codecs/polarvq_file.h"
#include "tq/codec.h"
#include "tq/error.h"

namespace {

void exercise(const tq::Codec& c) {
  const int d = c.dim(), T = c.block_tokens();
  if (size_t(T) * size_t(d) > (1u << 16)) return;  // memory bound of the fuzz run
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> x(size_t(T) * d), y(x.size()), q(d), s(T);
  for (auto& v : x) v = nd(rng);
  for (auto& v : q) v = nd(rng);
  std::vector<uint8_t> code(c.block_bytes());
  c.encode(x.data(), 1, code.data());
  c.decode(code.data(), 1, y.data());
  auto qs = c.prepare_query(q.data());
  c.score(*qs, code.data(), 1, s.data());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::vector<uint8_t> b(data + 1, data + size);
  if ((data[0] & 1) && b.size() >= 20) {
    const uint32_t len = uint32_t(b.size() - 20);
    std::memcpy(b.data() + 8, &len, 4);
    const uint64_t sum = XXH64(b.data() + 12, len, 0);
    std::memcpy(b.data() + 12 + len, &sum, 8);
  }
  tq::CodebookFile f;
  try {
    f = tq::parse_codebook_file(b.data(), b.size(), "fuzz.tqcb");
  } catch (const tq::Error&) {
    return 0;
  }
  if (f.heads.empty() || f.head_dim < 2 || f.head_dim > 512) return 0;
  for (bool key : {true, false}) {
    tq::CodecOptions o;
    o.is_key = key;
    o.rope = f.rope;
    try {
      if (f.params.preset == "kvquant") {
        if (f.kvq.empty()) continue;
        o.calibration = f.kvq_head(0, 0);
        exercise(*tq::make_codec(key ? "kvquant4" : "kvquant3", int(f.head_dim), o));
      } else {
        o.calibration = f.head(0, 0);
        exercise(tq::PolarVqCodec(f.params, int(f.head_dim), o));
      }
    } catch (const tq::Error&) {
    }
  }
  return 0;
}
