// tq_fuzz_seeds DIR: writes the seed corpora of the fuzz targets into DIR/<target>/ (the
// committed fuzz/corpus). Every seed is made by the project's own writers (GgufWriter,
// write_codebook_file, format_plan), plus mutated headers and truncations; each is a few KB at
// most.
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "codecs/polarvq_file.h"
#include "eval/plan.h"
#include "fuzz_common.h"
#include "tq/error.h"

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

namespace {

void put(const fs::path& dir, const std::string& name, const Bytes& b) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}
void put(const fs::path& dir, const std::string& name, uint8_t prefix, const std::string& s) {
  Bytes b{prefix};
  b.insert(b.end(), s.begin(), s.end());
  put(dir, name, b);
}

// Overwrites the 4-byte value of metadata key `key` (a u32/i32/f32 scalar) in a GGUF image.
void patch_u32(Bytes& b, const std::string& key, uint32_t v) {
  for (size_t i = 8; i + key.size() + 8 <= b.size(); ++i)
    if (std::memcmp(&b[i], key.data(), key.size()) == 0 && b[i - 8] == key.size()) {
      std::memcpy(&b[i + key.size() + 4], &v, 4);  // after the u32 type
      return;
    }
  throw tq::Error("seed: key " + key + " not found");
}
void patch_f32(Bytes& b, const std::string& key, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  patch_u32(b, key, u);
}

Bytes codebook_bytes(const tq::CodebookFile& f, const fs::path& tmp) {
  tq::write_codebook_file(tmp.string(), f);
  std::ifstream in(tmp, std::ios::binary);
  Bytes b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  fs::remove(tmp);
  return b;
}

tq::CodebookFile polar_file(const tq::PolarVqParams& p, int d) {
  tq::CodebookFile f;
  f.params = p;
  f.n_layer = 1;
  f.n_head_kv = 1;
  f.head_dim = uint32_t(d);
  f.ctx = 64;
  auto h = std::make_shared<tq::PolarVqCalibration>();
  h->dim = d;
  const int A = 1 << p.angle_bits;
  for (int i = 0; i < d / 2; ++i)
    for (int c = 0; c < A; ++c) h->angle_centroids.push_back(-3.1f + 6.2f * (c + 0.5f) / A);
  for (int j = 0; j < d; ++j) h->value_perm.push_back(d - 1 - j);
  for (bool key : {true, false}) {
    if (!p.has_vq(key)) continue;
    const int g = p.vq_dim_for(key);
    int s = std::max(1, std::min(p.subspaces, d / g));
    while ((d / g) % s) --s;
    std::vector<float>& book = key ? h->key_vq : h->value_vq;
    for (int i = 0; i < s * p.vq_size * g; ++i) book.push_back(0.01f * float(i % 17) - 0.08f);
  }
  f.heads.push_back(h);
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: tq_fuzz_seeds DIR\n");
    return 2;
  }
  const fs::path root = argv[1];
  try {
    // --- GGUF: tiny models, tokenizer metadata, mutated headers.
    const fs::path g = root / "fuzz_gguf";
    tq::fuzz::TinySpec s;
    s.tokenizer = true;
    const Bytes llama = tq::fuzz::tiny_model(s);
    put(g, "llama_f32_tok.gguf", llama);
    tq::fuzz::TinySpec q;
    q.arch = "qwen2";
    q.type = 1;
    put(g, "qwen2_f16_bias.gguf", tq::fuzz::tiny_model(q));
    tq::fuzz::TinySpec q8;
    q8.width = 32, q8.heads = 4, q8.kv_heads = 2, q8.ff = 32, q8.vocab = 16, q8.type = 8;
    put(g, "llama_q8_0.gguf", tq::fuzz::tiny_model(q8));
    Bytes b = tq::fuzz::tiny_model(tq::fuzz::TinySpec{});
    put(g, "llama_f32.gguf", b);
    Bytes v2 = b;
    v2[4] = 2;
    put(g, "llama_v2.gguf", v2);
    Bytes heads = b;  // the heap overflow of issue 17: n_head · head_dim wrapped in int
    patch_u32(heads, "llama.attention.head_count", (1u << 29) + 2);
    put(g, "head_count_wrap.gguf", heads);
    Bytes base = b;
    patch_f32(base, "llama.rope.freq_base", -10000.f);
    put(g, "negative_rope_base.gguf", base);
    Bytes width = b;
    patch_u32(width, "llama.embedding_length", 18);
    put(g, "bad_embedding_length.gguf", width);
    put(g, "truncated.gguf", Bytes(b.begin(), b.begin() + 200));

    // --- Tokenizer: selector byte + text.
    const fs::path t = root / "fuzz_tokenizer";
    const std::string texts[] = {
        "Hello world, the answer is 42.\n",
        "  leading spaces and\ttabs\r\n\n",
        "<|im_start|>user\nhi<|im_end|>\n<tool>x",
        "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80\xF0\x9F\x91\x8D",
        std::string("\x04\x06\x13\x14\x16\x1D\x00\x7F", 8),
        "\xFF\xFE\xC3\x28\xE2\x82\x80\xF0\x9F\x98",
        "it's don't we'll I'M 1234567 3.14159",
    };
    for (int sel = 0; sel < 6; ++sel)
      for (size_t i = 0; i < std::size(texts); ++i)
        put(t, "t" + std::to_string(sel) + "_" + std::to_string(i), uint8_t(sel), texts[i]);

    // --- Codebook files: mode byte (0 as is, 1 length and checksum fixed up) + file.
    const fs::path c = root / "fuzz_codebook";
    const fs::path tmp = fs::temp_directory_path() / ("tq_seed_" + std::to_string(::getpid()));
    auto quality = tq::polarvq_preset("quality");
    auto stage1 = tq::polarvq_preset("stage1");
    tq::PolarVqParams custom = tq::polarvq_preset("stage1");
    custom.preset = "custom";
    custom.vq_size = 4, custom.vq_dim = 8, custom.subspaces = 2;
    tq::PolarVqParams pq_values = custom;
    pq_values.vq_keys = false;
    pq_values.key_block_tokens = 4;
    int n = 0;
    for (const auto& p : {quality, stage1, custom, pq_values}) {
      const Bytes f = codebook_bytes(polar_file(p, 16), tmp);
      for (uint8_t mode : {uint8_t(0), uint8_t(1)}) {
        Bytes m{mode};
        m.insert(m.end(), f.begin(), f.end());
        put(c, "polar" + std::to_string(n) + "_mode" + std::to_string(mode), m);
      }
      ++n;
    }
    {
      tq::CodebookFile f;
      f.params.preset = "kvquant";
      f.n_layer = 1, f.n_head_kv = 1, f.head_dim = 16;
      f.heads.push_back(std::make_shared<tq::PolarVqCalibration>());
      f.heads[0]->dim = 16;
      auto k = std::make_shared<tq::KvQuantCalibration>();
      k->key_center.assign(16, 0.f), k->key_range.assign(16, 1.f);
      k->value_center.assign(16, 0.f), k->value_range.assign(16, 1.f);
      for (int i = 0; i < 8; ++i) k->key_levels3.push_back(-1.f + 2.f * i / 7);
      for (int i = 0; i < 16; ++i) k->key_levels4.push_back(-1.f + 2.f * i / 15);
      k->value_levels3 = k->key_levels3;
      k->value_levels4 = k->key_levels4;
      f.kvq.push_back(k);
      Bytes m{1};
      const Bytes fb = codebook_bytes(f, tmp);
      m.insert(m.end(), fb.begin(), fb.end());
      put(c, "kvquant_mode1", m);
    }

    // --- Plan files (format_plan): small plans of both centring kinds, a version 1 file (as
    // written before keys were centred by default), and truncations.
    {
      const fs::path pd = root / "fuzz_plan";
      tq::Plan p;
      p.model_fingerprint = 0x0123456789abcdefull;
      p.model_file = "m.gguf";
      p.n_layer = 3, p.n_kv_head = 2, p.head_dim = 64;
      p.calib_file = "calib.txt";
      p.calib_hash = 42;
      p.ctx = 64, p.chunks = 1, p.tokens_scored = 31;
      p.candidates = {"turbo2", "turbo3", "q8_0", "f16"};
      p.bits_k = {2.75, 3.75, 8.5, 16};
      p.bits_v = {2.25, 3.25, 8.5, 16};
      p.kld_k = {{0.3, 0.1, 0.01, 0}, {0.2, 0.05, 0.004, 0}, {0.01, 0.005, 0.001, 0}};
      p.kld_v = {{0.1, 0.03, 0.002, 0}, {0.02, 0.01, 0.001, 0}, {0.2, 0.02, 0.003, 0}};
      tq::solve_plan(p, 3.0);
      const std::string a = tq::format_plan(p);
      tq::Plan q = p;
      q.key_centring = tq::KeyCentring::kOff;
      q.key_means_per_page = false;
      q.sinks = 4, q.residual = 16, q.seed = 7;
      q.n_layer = 1;
      q.kld_k.resize(1), q.kld_v.resize(1);
      tq::solve_plan(q, 8.0);
      q.verified_kld = 0.0123, q.verified_bpv = 7.9;
      const std::string b = tq::format_plan(q);
      std::string v1 = a;
      const std::string ver = "\"version\": 2", cen = "\"key_centring\": \"default\"";
      v1.replace(v1.find(ver), ver.size(), "\"version\": 1");
      v1.replace(v1.find(cen), cen.size(), "\"center_keys\": true");
      auto text = [&](const std::string& name, const std::string& s) {
        put(pd, name, Bytes(s.begin(), s.end()));
      };
      text("plan3", a);
      text("plan1_off_verified", b);
      text("plan3_v1", v1);
      text("plan3_half", a.substr(0, a.size() / 2));
      text("plan3_three_quarters", a.substr(0, a.size() * 3 / 4));
      text("plan1_cut_end", b.substr(0, b.size() - 3));
    }

    // --- Numeric flags: two range bytes + text.
    const fs::path nf = root / "fuzz_numeric_flag";
    const char* nums[] = {
        "64", "-5", "2147483647", "nan",    "inf",  "-1", "1e400",  "0.95",
        "+3", "-",  "",           "100000", "0x10", " 7", "1.5e-3", "9223372036854775808"};
    for (size_t i = 0; i < std::size(nums); ++i) {
      Bytes m{uint8_t(i), uint8_t(i * 3)};
      m.insert(m.end(), nums[i], nums[i] + std::strlen(nums[i]));
      put(nf, "n" + std::to_string(i), m);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tq_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
