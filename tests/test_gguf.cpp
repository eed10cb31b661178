// GGUF reader/writer round trips, corrupt-file handling, and dequantization of every supported
// ggml block type against blocks built here from the format definitions.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "model/paths.h"
#include "temp_dir.h"
#include "core/half.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "tq/error.h"

namespace {

using tq::GgmlType;
using tq::GgufFile;
using tq::GgufWriter;

std::string tmp_path(const std::string& name) {
  return tq::test::temp_path("gguf_" + name);
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream o(path, std::ios::binary);
  o.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// Opens bytes as a GGUF; returns the error message ("" if it opened).
std::string open_error(const std::vector<uint8_t>& bytes, const std::string& name = "x.gguf") {
  const std::string p = tmp_path(name);
  write_bytes(p, bytes);
  std::string msg;
  try {
    GgufFile::open(p);
  } catch (const tq::Error& e) {
    msg = e.what();
  }
  std::filesystem::remove(p);
  return msg;
}

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

GgufWriter sample_writer() {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", "tiny test model");
  w.set_u8("t.u8", 200);
  w.set_i8("t.i8", -100);
  w.set_u16("t.u16", 60000);
  w.set_i16("t.i16", -30000);
  w.set_u32("llama.block_count", 3);
  w.set_i32("t.i32", -2000000000);
  w.set_u64("t.u64", 1ull << 40);
  w.set_i64("t.i64", -(1ll << 50));
  w.set_f32("llama.rope.freq_base", 10000.0f);
  w.set_f64("t.f64", 0.125);
  w.set_bool("t.bool", true);
  w.set_string("t.empty", "");
  w.set_string_array("t.strs", {"a", "", "\xE2\x96\x81x", "<|im_start|>"});
  w.set_f32_array("t.f32s", {1.5f, -2.0f, 3.25f});
  w.set_i32_array("t.i32s", {7, -8, 9});
  std::vector<float> a(8 * 3);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i) * 0.5f;
  auto ab = f32_bytes(a);
  w.add_tensor("a.weight", GgmlType::F32, {8, 3}, ab.data(), ab.size());
  std::vector<uint8_t> q(34 * 2);
  for (size_t i = 0; i < q.size(); ++i) q[i] = uint8_t(i * 7);
  w.add_tensor("b.weight", GgmlType::Q8_0, {64}, q.data(), q.size());
  std::vector<uint8_t> e(2 * 5);
  w.add_tensor("c.bias", GgmlType::F16, {5}, e.data(), e.size());
  return w;
}

TEST(Gguf, WriterRoundTrip) {
  for (uint32_t align : {32u, 64u, 8u}) {
    for (uint32_t version : {3u, 2u}) {
      GgufWriter w = sample_writer();
      w.set_alignment(align);
      w.set_version(version);
      const std::string p = tmp_path("rt.gguf");
      w.write(p);
      auto f = GgufFile::open(p);
      EXPECT_EQ(f->version(), version);
      EXPECT_EQ(f->alignment(), align);
      EXPECT_EQ(f->data_offset() % align, 0u);
      EXPECT_EQ(f->architecture(), "llama");
      EXPECT_EQ(f->get_string("general.name"), "tiny test model");
      EXPECT_EQ(f->get_int("t.u8"), 200);
      EXPECT_EQ(f->get_int("t.i8"), -100);
      EXPECT_EQ(f->get_int("t.u16"), 60000);
      EXPECT_EQ(f->get_int("t.i16"), -30000);
      EXPECT_EQ(f->get_int("llama.block_count"), 3);
      EXPECT_EQ(f->get_int("t.i32"), -2000000000);
      EXPECT_EQ(f->get_int("t.u64"), int64_t(1) << 40);
      EXPECT_EQ(f->get_int("t.i64"), -(int64_t(1) << 50));
      EXPECT_EQ(f->get_float("llama.rope.freq_base"), 10000.0);
      EXPECT_EQ(f->get_float("t.f64"), 0.125);
      EXPECT_EQ(f->get_float("llama.block_count"), 3.0);  // integers read as floats too
      EXPECT_TRUE(f->get_bool("t.bool", false));
      EXPECT_EQ(f->get_int("t.bool"), 1);
      EXPECT_EQ(f->get_string("t.empty"), "");
      EXPECT_EQ(f->get_string_array("t.strs"),
                (std::vector<std::string>{"a", "", "\xE2\x96\x81x", "<|im_start|>"}));
      EXPECT_EQ(f->get_float_array("t.f32s"), (std::vector<float>{1.5f, -2.0f, 3.25f}));
      EXPECT_EQ(f->get_int_array("t.i32s"), (std::vector<int32_t>{7, -8, 9}));
      EXPECT_EQ(f->array_size("t.strs"), 4u);
      // Defaults and type errors.
      EXPECT_EQ(f->get_int("missing", 42), 42);
      EXPECT_EQ(f->get_string("missing", "d"), "d");
      EXPECT_EQ(f->get_float("missing", 1.5), 1.5);
      EXPECT_FALSE(f->get_bool("missing", false));
      EXPECT_FALSE(f->has("missing"));
      EXPECT_THROW(f->get_int("general.name"), tq::Error);
      EXPECT_THROW(f->get_string("t.u8"), tq::Error);
      EXPECT_THROW(f->get_float("t.strs"), tq::Error);
      EXPECT_THROW(f->get_int_array("t.strs"), tq::Error);
      try {
        f->get_int("no.such.key");
        FAIL();
      } catch (const tq::Error& e) {
        EXPECT_NE(std::string(e.what()).find("no.such.key"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find(p), std::string::npos);
      }
      // Keys in file order (general.alignment is added last when it is not the default).
      auto keys = f->keys();
      EXPECT_EQ(keys.front(), "general.architecture");
      EXPECT_EQ(keys.size(), align == 32 ? 17u : 18u);
      EXPECT_EQ(f->value_summary("t.strs"), "[string x 4: \"a\", \"\", \"\xE2\x96\x81x\", "
                                            "\"<|im_start|>\"]");
      EXPECT_EQ(f->value_summary("t.i8"), "-100");
      EXPECT_EQ(f->value_summary("general.name"), "\"tiny test model\"");
      // Tensors.
      ASSERT_EQ(f->tensors().size(), 3u);
      const auto& a = f->tensor("a.weight");
      EXPECT_EQ(a.type, GgmlType::F32);
      EXPECT_EQ(a.ne, (std::vector<int64_t>{8, 3}));
      EXPECT_EQ(a.n_elements(), 24);
      EXPECT_EQ(a.nbytes, 96u);
      for (int i = 0; i < 24; ++i) {
        float v;
        std::memcpy(&v, a.data + 4 * i, 4);
        EXPECT_EQ(v, float(i) * 0.5f);
      }
      const auto& b = f->tensor("b.weight");
      EXPECT_EQ(b.type, GgmlType::Q8_0);
      EXPECT_EQ(b.nbytes, 68u);
      EXPECT_EQ(b.data[5], uint8_t(35));
      for (const auto& t : f->tensors()) EXPECT_EQ(t.offset % align, 0u) << t.name;
      EXPECT_EQ(f->find_tensor("nope"), nullptr);
      EXPECT_THROW(f->tensor("nope"), tq::Error);
      std::filesystem::remove(p);
    }
  }
}

TEST(Gguf, Fingerprint) {
  const std::string p1 = tmp_path("fp1.gguf"), p2 = tmp_path("fp2.gguf"),
                    p3 = tmp_path("fp3.gguf");
  GgufWriter w = sample_writer();
  w.write(p1);
  w.set_string("general.name", "renamed");  // not part of the fingerprint
  w.write(p2);
  w.set_u32("llama.block_count", 4);  // part of it
  w.write(p3);
  auto f1 = GgufFile::open(p1), f2 = GgufFile::open(p2), f3 = GgufFile::open(p3);
  const std::vector<std::string> names = {"a.weight", "b.weight"};
  EXPECT_EQ(f1->fingerprint(names), f2->fingerprint(names));
  EXPECT_NE(f1->fingerprint(names), f3->fingerprint(names));
  EXPECT_NE(f1->fingerprint(names), f1->fingerprint({"a.weight"}));
  EXPECT_THROW(f1->fingerprint({"nope"}), tq::Error);
  for (auto& p : {p1, p2, p3}) std::filesystem::remove(p);
}

// ----- Corrupt files -----

// Position of the first occurrence of a byte string in the serialized file.
size_t find(const std::vector<uint8_t>& b, const std::string& s) {
  auto it = std::search(b.begin(), b.end(), s.begin(), s.end());
  EXPECT_NE(it, b.end()) << s;
  return size_t(it - b.begin());
}

template <typename T>
void poke(std::vector<uint8_t>& b, size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof v);
}

void expect_error(const std::vector<uint8_t>& bytes, const std::string& needle) {
  const std::string msg = open_error(bytes);
  EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
}

TEST(GgufErrors, MissingFileWrongMagicVersion) {
  try {
    GgufFile::open("/nonexistent/dir/model.gguf");
    FAIL();
  } catch (const tq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/model.gguf"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos);
  }
  EXPECT_THROW(GgufFile::open(std::filesystem::temp_directory_path().string()), tq::Error);
  const auto good = sample_writer().serialize();
  EXPECT_EQ(open_error(good), "");
  auto b = good;
  b[0] = 'X';
  expect_error(b, "bad magic");
  for (uint32_t v : {0u, 1u, 4u, 0xFFFFFFFFu}) {
    b = good;
    poke<uint32_t>(b, 4, v);
    expect_error(b, "unsupported GGUF version " + std::to_string(v));
  }
  expect_error({}, "too small");
  expect_error({'G', 'G', 'U', 'F'}, "too small");
}

TEST(GgufErrors, TruncatedAtEveryOffset) {
  const auto good = sample_writer().serialize();
  const std::string p = tmp_path("trunc.gguf");
  // Where the last tensor's bytes end: past that is only padding, which a reader may lack.
  write_bytes(p, good);
  size_t end = 0;
  {
    auto f = GgufFile::open(p);
    for (const auto& t : f->tensors())
      end = std::max(end, size_t(f->data_offset() + t.offset + t.nbytes));
  }
  ASSERT_GT(end, good.size() - 32);
  size_t errors = 0;
  for (size_t n = 0; n < end; ++n) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + long(n));
    write_bytes(p, cut);
    try {
      GgufFile::open(p);
      ADD_FAILURE() << "a file cut at " << n << " of " << good.size() << " bytes opened";
    } catch (const tq::Error& e) {
      ++errors;
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos);
    }
  }
  EXPECT_EQ(errors, end);
  std::filesystem::remove(p);
}

TEST(GgufErrors, CorruptFields) {
  const auto good = sample_writer().serialize();
  {  // A key's string length past the end of the file.
    auto b = good;
    poke<uint64_t>(b, find(b, "general.name") - 8, 1ull << 40);
    expect_error(b, "past the end of the file");
  }
  {  // A string value's length past the end.
    auto b = good;
    poke<uint64_t>(b, find(b, "tiny test model") - 8, ~0ull);
    expect_error(b, "past the end of the file");
  }
  {  // An array count past the end.
    auto b = good;
    poke<uint64_t>(b, find(b, "t.i32s") + 6 + 4 + 4, 1ull << 61);
    expect_error(b, "past the end of the file");
  }
  {  // An unknown value type.
    auto b = good;
    poke<uint32_t>(b, find(b, "t.u8") + 4, 13);
    expect_error(b, "unknown value type 13");
  }
  {  // Impossible counts.
    auto b = good;
    poke<uint64_t>(b, 8, 1ull << 60);
    expect_error(b, "tensor count");
    b = good;
    poke<uint64_t>(b, 16, 1ull << 60);
    expect_error(b, "metadata count");
  }
  // Tensor info: name, n_dims (u32), dims (i64 each), type (u32), offset (u64).
  const size_t cinfo = find(good, "c.bias") + 6;  // c.bias: 1 dim
  {
    auto b = good;
    poke<uint32_t>(b, cinfo + 4 + 8, 99);
    expect_error(b, "unknown type 99");
  }
  {
    auto b = good;
    poke<uint32_t>(b, cinfo, 5);
    expect_error(b, "dimensions");
  }
  {
    auto b = good;
    poke<int64_t>(b, cinfo + 4, -3);
    expect_error(b, "invalid dimension");
  }
  {  // A tensor extending past the end of the file.
    auto b = good;
    poke<int64_t>(b, cinfo + 4, 1 << 20);
    expect_error(b, "extends past the end of the file");
    b = good;
    poke<uint64_t>(b, cinfo + 4 + 8 + 4, 1ull << 40);
    expect_error(b, "extends past the end of the file");
    b = good;
    poke<uint64_t>(b, cinfo + 4 + 8 + 4, ~0ull & ~31ull);  // offset + size overflows
    expect_error(b, "extends past the end of the file");
  }
  {  // A misaligned tensor offset.
    auto b = good;
    poke<uint64_t>(b, cinfo + 4 + 8 + 4, 3);
    expect_error(b, "alignment");
  }
  {  // A row that is not a whole number of blocks (b.weight is Q8_0, 64 values).
    auto b = good;
    poke<int64_t>(b, find(b, "b.weight") + 8 + 4, 48);
    expect_error(b, "not a multiple of 32");
  }
  {  // Duplicate key / tensor name.
    auto b = good;
    const size_t at = find(b, "t.i16");
    std::memcpy(b.data() + at, "t.i32", 5);
    expect_error(b, "duplicate metadata key");
    GgufWriter w = sample_writer();
    std::vector<uint8_t> e(4);
    w.add_tensor("c.bias", GgmlType::F32, {1}, e.data(), e.size());
    expect_error(w.serialize(), "duplicate tensor 'c.bias'");
  }
  {  // A bad general.alignment.
    GgufWriter w = sample_writer();
    w.set_u32("general.alignment", 48);
    expect_error(w.serialize(), "power of two");
  }
  // Random corruption never crashes (each result is an error or a valid file).
  std::mt19937 rng(7);
  const std::string p = tmp_path("fuzz.gguf");
  for (int t = 0; t < 300; ++t) {
    auto b = good;
    for (int k = 0; k < 3; ++k) b[rng() % 600] = uint8_t(rng());
    write_bytes(p, b);
    try {
      auto f = GgufFile::open(p);
      for (const auto& tt : f->tensors()) {
        ASSERT_LE(tt.nbytes, f->file_size());
        volatile uint8_t sink = tt.nbytes ? tt.data[tt.nbytes - 1] : 0;
        (void)sink;
      }
      for (const auto& k : f->keys()) (void)f->value_summary(k);
    } catch (const tq::Error&) {
    }
  }
  std::filesystem::remove(p);
}

// ----- Dequantization -----

uint16_t h(float x) { return tq::f32_to_f16(x); }
float hf(float x) { return tq::round_f16(x); }

TEST(Dequant, BlockGeometry) {
  struct R {
    GgmlType t;
    int64_t block;
    size_t bytes;
    const char* name;
  };
  for (const R& r : std::vector<R>{{GgmlType::F32, 1, 4, "f32"},
                                   {GgmlType::F16, 1, 2, "f16"},
                                   {GgmlType::BF16, 1, 2, "bf16"},
                                   {GgmlType::Q4_0, 32, 18, "q4_0"},
                                   {GgmlType::Q4_1, 32, 20, "q4_1"},
                                   {GgmlType::Q5_0, 32, 22, "q5_0"},
                                   {GgmlType::Q5_1, 32, 24, "q5_1"},
                                   {GgmlType::Q8_0, 32, 34, "q8_0"},
                                   {GgmlType::Q8_1, 32, 36, "q8_1"},
                                   {GgmlType::Q2_K, 256, 84, "q2_K"},
                                   {GgmlType::Q3_K, 256, 110, "q3_K"},
                                   {GgmlType::Q4_K, 256, 144, "q4_K"},
                                   {GgmlType::Q5_K, 256, 176, "q5_K"},
                                   {GgmlType::Q6_K, 256, 210, "q6_K"},
                                   {GgmlType::Q8_K, 256, 292, "q8_K"},
                                   {GgmlType::IQ4_NL, 32, 18, "iq4_nl"}}) {
    EXPECT_EQ(tq::ggml_block_size(r.t), r.block) << r.name;
    EXPECT_EQ(tq::ggml_block_bytes(r.t), r.bytes) << r.name;
    EXPECT_STREQ(tq::ggml_type_name(r.t), r.name);
  }
  std::vector<uint8_t> blk(84);
  std::vector<float> out(256);
  EXPECT_THROW(tq::dequantize(GgmlType::Q2_K, blk.data(), out.data(), 256), tq::Error);
  EXPECT_THROW(tq::dequantize(GgmlType::Q4_0, blk.data(), out.data(), 31), tq::Error);
  EXPECT_THROW(tq::dequantize(GgmlType(77), blk.data(), out.data(), 32), tq::Error);
}

TEST(Dequant, Floats) {
  const std::vector<float> v = {0.f, -1.5f, 65504.f, 1e-7f, 3.14159f};
  std::vector<uint16_t> f16, b16;
  for (float x : v) {
    f16.push_back(tq::f32_to_f16(x));
    b16.push_back(tq::f32_to_bf16(x));
  }
  std::vector<float> out(v.size());
  tq::dequantize(GgmlType::F16, f16.data(), out.data(), int64_t(v.size()));
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(out[i], tq::round_f16(v[i]));
  tq::dequantize(GgmlType::BF16, b16.data(), out.data(), int64_t(v.size()));
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(out[i], tq::bf16_to_f32(b16[i]));
  tq::dequantize(GgmlType::F32, v.data(), out.data(), int64_t(v.size()));
  EXPECT_EQ(out, v);
}

// Blocks of 32 built from chosen quants: value j of a block is the low nibble of byte j (j < 16)
// or the high nibble of byte j - 16; the 5th bit of value j is bit j of qh.
TEST(Dequant, Blocks32) {
  std::mt19937 rng(42);
  const int nb = 3;
  for (int rep = 0; rep < 20; ++rep) {
    std::vector<int> q(32 * nb);
    std::vector<float> d(nb), m(nb);
    for (int b = 0; b < nb; ++b) {
      d[b] = hf(std::uniform_real_distribution<float>(-0.1f, 0.1f)(rng));
      m[b] = hf(std::uniform_real_distribution<float>(-1.f, 1.f)(rng));
    }
    std::vector<float> out(32 * nb);
    // Q4_0 and Q4_1: 4-bit quants.
    for (auto& x : q) x = int(rng() % 16);
    std::vector<uint8_t> q40(18 * nb), q41(20 * nb);
    for (int b = 0; b < nb; ++b) {
      uint16_t dh = h(d[b]), mh = h(m[b]);
      std::memcpy(&q40[18 * b], &dh, 2);
      std::memcpy(&q41[20 * b], &dh, 2);
      std::memcpy(&q41[20 * b + 2], &mh, 2);
      for (int j = 0; j < 16; ++j) {
        const uint8_t byte = uint8_t(q[32 * b + j] | (q[32 * b + j + 16] << 4));
        q40[18 * b + 2 + j] = byte;
        q41[20 * b + 4 + j] = byte;
      }
    }
    tq::dequantize(GgmlType::Q4_0, q40.data(), out.data(), 32 * nb);
    for (int i = 0; i < 32 * nb; ++i) ASSERT_EQ(out[i], d[i / 32] * float(q[i] - 8)) << i;
    tq::dequantize(GgmlType::Q4_1, q41.data(), out.data(), 32 * nb);
    for (int i = 0; i < 32 * nb; ++i) ASSERT_EQ(out[i], d[i / 32] * float(q[i]) + m[i / 32]);
    // Q5_0 and Q5_1: 5-bit quants.
    for (auto& x : q) x = int(rng() % 32);
    std::vector<uint8_t> q50(22 * nb), q51(24 * nb);
    for (int b = 0; b < nb; ++b) {
      uint16_t dh = h(d[b]), mh = h(m[b]);
      uint32_t qh = 0;
      for (int j = 0; j < 32; ++j) qh |= uint32_t(q[32 * b + j] >> 4) << j;
      std::memcpy(&q50[22 * b], &dh, 2);
      std::memcpy(&q50[22 * b + 2], &qh, 4);
      std::memcpy(&q51[24 * b], &dh, 2);
      std::memcpy(&q51[24 * b + 2], &mh, 2);
      std::memcpy(&q51[24 * b + 4], &qh, 4);
      for (int j = 0; j < 16; ++j) {
        const uint8_t byte = uint8_t((q[32 * b + j] & 15) | ((q[32 * b + j + 16] & 15) << 4));
        q50[22 * b + 6 + j] = byte;
        q51[24 * b + 8 + j] = byte;
      }
    }
    tq::dequantize(GgmlType::Q5_0, q50.data(), out.data(), 32 * nb);
    for (int i = 0; i < 32 * nb; ++i) ASSERT_EQ(out[i], d[i / 32] * float(q[i] - 16)) << i;
    tq::dequantize(GgmlType::Q5_1, q51.data(), out.data(), 32 * nb);
    for (int i = 0; i < 32 * nb; ++i) ASSERT_EQ(out[i], d[i / 32] * float(q[i]) + m[i / 32]);
    // Q8_0: signed bytes.
    for (auto& x : q) x = int(rng() % 256) - 128;
    std::vector<uint8_t> q80(34 * nb);
    for (int b = 0; b < nb; ++b) {
      uint16_t dh = h(d[b]);
      std::memcpy(&q80[34 * b], &dh, 2);
      for (int j = 0; j < 32; ++j) q80[34 * b + 2 + j] = uint8_t(int8_t(q[32 * b + j]));
    }
    tq::dequantize(GgmlType::Q8_0, q80.data(), out.data(), 32 * nb);
    for (int i = 0; i < 32 * nb; ++i) ASSERT_EQ(out[i], d[i / 32] * float(q[i])) << i;
  }
}

// The 12 scale bytes of Q4_K/Q5_K, packed from 8 six-bit scales and mins: bytes 0-3 hold
// scales 0-3 in their low 6 bits and the top 2 bits of scales 4-7 above; bytes 4-7 the same for
// mins 0-3 / mins 4-7; bytes 8-11 the low 4 bits of scale 4+k (low nibble) and min 4+k (high).
void pack_k_scales(const int* sc, const int* mn, uint8_t* out) {
  for (int k = 0; k < 4; ++k) {
    out[k] = uint8_t((sc[k] & 63) | ((sc[4 + k] >> 4) << 6));
    out[4 + k] = uint8_t((mn[k] & 63) | ((mn[4 + k] >> 4) << 6));
    out[8 + k] = uint8_t((sc[4 + k] & 15) | ((mn[4 + k] & 15) << 4));
  }
}

// Q4_K / Q5_K: value v of the super-block belongs to sub-block s = v / 32; within a chunk of 64
// (c = v / 64), the first 32 values are low nibbles of bytes 32c.., the next 32 high nibbles of
// the same bytes; Q5_K's 5th bit of value v is bit (v / 32) of qh[v % 32].
TEST(Dequant, Q4KQ5K) {
  std::mt19937 rng(5);
  for (int rep = 0; rep < 30; ++rep) {
    int sc[8], mn[8];
    for (int s = 0; s < 8; ++s) {
      sc[s] = int(rng() % 64);
      mn[s] = int(rng() % 64);
    }
    if (rep == 0)
      for (int s = 0; s < 8; ++s) sc[s] = mn[s] = 63;  // all bits set
    const float d = hf(std::uniform_real_distribution<float>(0.f, 0.01f)(rng));
    const float dmin = hf(std::uniform_real_distribution<float>(0.f, 0.01f)(rng));
    int q[256];
    for (int& x : q) x = int(rng() % 32);
    std::vector<uint8_t> b4(144, 0), b5(176, 0);
    const uint16_t dh = h(d), mh = h(dmin);
    for (auto* b : {b4.data(), b5.data()}) {
      std::memcpy(b, &dh, 2);
      std::memcpy(b + 2, &mh, 2);
      pack_k_scales(sc, mn, b + 4);
    }
    for (int v = 0; v < 256; ++v) {
      const int c = v / 64, l = v % 32, hi = (v % 64) >= 32;
      b4[16 + 32 * c + l] |= uint8_t((q[v] & 15) << (hi ? 4 : 0));
      b5[48 + 32 * c + l] |= uint8_t((q[v] & 15) << (hi ? 4 : 0));
      b5[16 + l] |= uint8_t((q[v] >> 4) << (v / 32));
    }
    float out[256];
    tq::dequantize(GgmlType::Q4_K, b4.data(), out, 256);
    for (int v = 0; v < 256; ++v) {
      const int s = v / 32;
      const float want = d * float(sc[s]) * float(q[v] & 15) - dmin * float(mn[s]);
      ASSERT_NEAR(out[v], want, 1e-6f * (1 + std::fabs(want))) << v;
    }
    tq::dequantize(GgmlType::Q5_K, b5.data(), out, 256);
    for (int v = 0; v < 256; ++v) {
      const int s = v / 32;
      const float want = d * float(sc[s]) * float(q[v]) - dmin * float(mn[s]);
      ASSERT_NEAR(out[v], want, 1e-6f * (1 + std::fabs(want))) << v;
    }
  }
}

// Q6_K: 6-bit quants minus 32, sixteen int8 scales (one per 16 values), one fp16 d. In half
// H = v / 128, with w = v % 128, l = w % 32 and g = w / 32 (0-3): the low 4 bits are in
// ql[64H + l + 32·(g odd)], low nibble for g < 2, high for g ≥ 2; the top 2 bits are bits
// 2g, 2g+1 of qh[32H + l].
TEST(Dequant, Q6K) {
  std::mt19937 rng(6);
  for (int rep = 0; rep < 30; ++rep) {
    int8_t sc[16];
    for (auto& s : sc) s = int8_t(int(rng() % 256) - 128);
    const float d = hf(std::uniform_real_distribution<float>(-0.01f, 0.01f)(rng));
    int q[256];
    for (int& x : q) x = int(rng() % 64);
    std::vector<uint8_t> b(210, 0);
    for (int v = 0; v < 256; ++v) {
      const int H = v / 128, w = v % 128, l = w % 32, g = w / 32;
      b[64 * H + l + 32 * (g & 1)] |= uint8_t((q[v] & 15) << (g >= 2 ? 4 : 0));
      b[128 + 32 * H + l] |= uint8_t((q[v] >> 4) << (2 * g));
    }
    std::memcpy(b.data() + 192, sc, 16);
    const uint16_t dh = h(d);
    std::memcpy(b.data() + 208, &dh, 2);
    float out[256];
    tq::dequantize(GgmlType::Q6_K, b.data(), out, 256);
    for (int v = 0; v < 256; ++v) {
      const float want = d * float(sc[v / 16]) * float(q[v] - 32);
      ASSERT_NEAR(out[v], want, 1e-6f * (1 + std::fabs(want))) << v;
    }
  }
}

// ----- The default model -----

TEST(GgufModel, DefaultModel) {
  std::string path = std::string(TQ_SOURCE_DIR) + "/" + tq::kDefaultModelFile;
  if (const char* e = std::getenv("TQ_MODEL"); e != nullptr && *e != '\0') path = e;
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "model missing: " << path;
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->architecture(), "llama");
  EXPECT_EQ(f->get_int("llama.block_count"), 30);
  EXPECT_EQ(f->get_int("llama.embedding_length"), 576);
  EXPECT_EQ(f->get_int("llama.attention.head_count"), 9);
  EXPECT_EQ(f->get_int("llama.attention.head_count_kv"), 3);
  EXPECT_EQ(f->tensors().size(), 272u);
  const auto& emb = f->tensor("token_embd.weight");
  EXPECT_EQ(emb.ne, (std::vector<int64_t>{576, 49152}));
  const auto& wq = f->tensor("blk.0.attn_q.weight");
  EXPECT_EQ(wq.type, GgmlType::Q4_1);
  EXPECT_EQ(wq.ne, (std::vector<int64_t>{576, 576}));
  // Every tensor dequantizes to finite values of a sane size.
  for (const auto& t : f->tensors()) {
    ASSERT_TRUE(tq::ggml_can_dequantize(t.type)) << t.name;
    std::vector<float> row(size_t(t.ne[0]));
    tq::dequantize(t.type, t.data, row.data(), t.ne[0]);
    double s = 0;
    for (float x : row) {
      ASSERT_TRUE(std::isfinite(x)) << t.name;
      s += double(x) * x;
    }
    EXPECT_GT(s, 0.0) << t.name;
    EXPECT_LT(std::sqrt(s / double(row.size())), 100.0) << t.name;
  }
  const uint64_t fp = f->fingerprint({"blk.0.attn_k.weight", "blk.0.attn_v.weight"});
  EXPECT_EQ(fp, f->fingerprint({"blk.0.attn_k.weight", "blk.0.attn_v.weight"}));
  EXPECT_NE(fp, f->fingerprint({"blk.1.attn_k.weight", "blk.1.attn_v.weight"}));
}

// `tq info`: the tool end to end, on a written file and (when present) the default model.
std::string run(const std::string& cmd, int& rc) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  rc = pclose(p);
  return out;
}

TEST(ToolInfo, JsonAndErrors) {
  const std::string p = tmp_path("info.gguf");
  GgufWriter w = sample_writer();
  w.set_u32("llama.embedding_length", 8);
  w.set_u32("llama.attention.head_count", 2);
  w.write(p);
  int rc = -1;
  std::string out = run(std::string(TQ_TOOL_PATH) + " info --json --metadata -m " + p, rc);
  ASSERT_EQ(rc, 0) << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["architecture"], "llama");
  EXPECT_EQ(j["n_layer"], 3);
  EXPECT_EQ(j["head_dim"], 4);
  EXPECT_EQ(j["n_tensors"], 3);
  EXPECT_EQ(j["tensor_types"]["q8_0"], 1);
  EXPECT_EQ(j["metadata"]["t.i8"], "-100");
  out = run(std::string(TQ_TOOL_PATH) + " info -m " + p + ".missing 2>&1", rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("cannot open"), std::string::npos) << out;
  std::filesystem::remove(p);

  const std::string model = std::string(TQ_SOURCE_DIR) + "/" + tq::kDefaultModelFile;
  if (!std::filesystem::exists(model)) GTEST_SKIP() << "model missing: " << model;
  out = run(std::string(TQ_TOOL_PATH) + " info --json -m " + model, rc);
  ASSERT_EQ(rc, 0) << out;
  j = nlohmann::json::parse(out);
  EXPECT_EQ(j["n_layer"], 30);
  EXPECT_EQ(j["n_head"], 9);
  EXPECT_EQ(j["n_head_kv"], 3);
  EXPECT_EQ(j["head_dim"], 64);
  EXPECT_EQ(j["tokenizer"]["model"], "gpt2");
  EXPECT_EQ(j["tokenizer"]["n_vocab"], 49152);
  EXPECT_EQ(j["tensor_types"]["q4_1"], 210);
}

}  // namespace
