// tq_codec_ref: the C++ side of the Python codec tests (tests/python/test_codec.py). Runs one
// codec on float32 files written by the test and writes what the C++ API returns, so that the
// Python binding's results can be compared with it byte for byte.
//
//   tq_codec_ref TYPE DIM SEED IS_KEY X.bin Q.bin W.bin OUT_PREFIX
// X.bin: n × DIM float32 vectors; Q.bin: DIM float32; W.bin: n float32 weights. Writes
// OUT_PREFIX.codes (encode), .decoded (decode of those codes), .scores (prepare_query + score),
// .wsum (accumulate + finish).
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "tq/codec.h"

namespace {

template <class T>
std::vector<T> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw tq::Error("cannot read '" + path + "'");
  const auto bytes = size_t(in.tellg());
  std::vector<T> v(bytes / sizeof(T));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * sizeof(T)));
  return v;
}

template <class T>
void write_all(const std::string& path, const std::vector<T>& v) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(T)));
  if (!out) throw tq::Error("cannot write '" + path + "'");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 9) {
    std::fprintf(stderr, "usage: tq_codec_ref TYPE DIM SEED IS_KEY X.bin Q.bin W.bin OUT\n");
    return 2;
  }
  try {
    tq::CodecOptions o;
    o.seed = std::strtoull(argv[3], nullptr, 10);
    o.is_key = std::string(argv[4]) == "1";
    const int d = std::atoi(argv[2]);
    auto c = tq::make_codec(argv[1], d, o);
    const auto x = read_all<float>(argv[5]);
    const auto q = read_all<float>(argv[6]);
    const auto w = read_all<float>(argv[7]);
    const size_t n = x.size() / size_t(d), nb = n / size_t(c->block_tokens());
    const std::string out = argv[8];
    std::vector<uint8_t> codes(nb * c->block_bytes());
    c->encode(x.data(), nb, codes.data());
    std::vector<float> dec(n * size_t(d)), scores(n), acc(c->acc_size(), 0.f);
    std::vector<float> wsum(static_cast<size_t>(d));
    c->decode(codes.data(), nb, dec.data());
    auto qs = c->prepare_query(q.data());
    c->score(*qs, codes.data(), nb, scores.data());
    c->accumulate(codes.data(), nb, w.data(), acc.data());
    c->finish(acc.data(), wsum.data());
    write_all(out + ".codes", codes);
    write_all(out + ".decoded", dec);
    write_all(out + ".scores", scores);
    write_all(out + ".wsum", wsum);
  } catch (const tq::Error& e) {
    std::fprintf(stderr, "tq_codec_ref: %s\n", e.what());
    return 1;
  }
  return 0;
}
