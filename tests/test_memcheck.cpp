// The memory check before a run (src/model/memcheck): the KV bytes it predicts are what the
// cache then reserves, and a run that cannot fit is refused with one line before anything is
// allocated (library and `tq generate` on a synthetic GGUF).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "cache/kv_cache.h"
#include "cli_util.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "model/llama.h"
#include "model/memcheck.h"
#include "tq/error.h"

namespace tq {
namespace {

std::string tmp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("tq_mem_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

// A small llama-shaped model (8 KV heads of 128, 4 layers: 16 KiB of f16 KV per token) with a
// context length of 2^30 tokens and a byte-level SentencePiece vocabulary, so `tq generate` runs.
std::string write_model(const std::string& name) {
  const int L = 4, E = 256, NH = 8, NKV = 8, D = 128, F = 256;
  std::vector<std::string> toks = {"<unk>", "<s>", "</s>"};
  std::vector<int32_t> types = {2, 3, 3};
  std::vector<float> scores = {0, 0, 0};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    toks.push_back(buf);
    types.push_back(6);
    scores.push_back(0);
  }
  const int V = int(toks.size());
  GgufWriter g;
  g.set_string("general.architecture", "llama");
  g.set_u32("llama.block_count", L);
  g.set_u32("llama.embedding_length", E);
  g.set_u32("llama.feed_forward_length", F);
  g.set_u32("llama.attention.head_count", NH);
  g.set_u32("llama.attention.head_count_kv", NKV);
  g.set_u32("llama.attention.key_length", D);
  g.set_u32("llama.attention.value_length", D);
  g.set_u32("llama.context_length", 1u << 30);
  g.set_string("tokenizer.ggml.model", "llama");
  g.set_string_array("tokenizer.ggml.tokens", toks);
  g.set_i32_array("tokenizer.ggml.token_type", types);
  g.set_f32_array("tokenizer.ggml.scores", scores);
  g.set_u32("tokenizer.ggml.bos_token_id", 1);
  g.set_u32("tokenizer.ggml.eos_token_id", 2);
  g.set_u32("tokenizer.ggml.unknown_token_id", 0);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 0.05f);
  auto add = [&](const std::string& n, std::vector<int64_t> ne, float mean = 0.f) {
    int64_t k = 1;
    for (auto x : ne) k *= x;
    std::vector<float> v(static_cast<size_t>(k));
    for (auto& x : v) x = mean + nd(rng);
    g.add_tensor(n, GgmlType::F32, ne, v.data(), v.size() * 4);
  };
  add("token_embd.weight", {E, V});
  add("output_norm.weight", {E}, 1.f);
  for (int l = 0; l < L; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", {E}, 1.f);
    add(p + "attn_q.weight", {E, NH * D});
    add(p + "attn_k.weight", {E, NKV * D});
    add(p + "attn_v.weight", {E, NKV * D});
    add(p + "attn_output.weight", {NH * D, E});
    add(p + "ffn_norm.weight", {E}, 1.f);
    add(p + "ffn_gate.weight", {E, F});
    add(p + "ffn_up.weight", {E, F});
    add(p + "ffn_down.weight", {F, E});
  }
  const std::string path = tmp_path(name);
  g.write(path);
  return path;
}

// The predicted KV bytes are the page space the cache then reserves, plus its f16 windows.
TEST(Memcheck, KvBytesAreWhatTheCacheReserves) {
  const std::string path = write_model("kv.gguf");
  auto f = GgufFile::open(path);
  auto m = LlamaModel::load(*f);
  for (const char* type : {"f16", "q8_0", "turbo3", "turbo4"})
    for (int tokens : {1, 700, 4096}) {
      KvCacheOptions co;
      co.type_k = co.type_v = type;
      co.max_tokens = tokens;
      co.max_seqs = 1;
      const size_t predicted = kv_cache_bytes(m->kv_shape(), co);
      const KvCache cache(m->kv_shape(), co);
      EXPECT_GE(predicted, cache.reserved_bytes()) << type << " " << tokens;
      // The rest is the f16 window: at most (block tokens) f16 rows per (layer, head, K|V).
      EXPECT_LE(predicted - cache.reserved_bytes(), size_t(4 * 8 * 2) * 256 * 128 * 2)
          << type << " " << tokens;
    }
  std::filesystem::remove(path);
}

TEST(Memcheck, RunThatCannotFitIsRefusedBeforeAllocating) {
  const std::string path = write_model("big.gguf");
  auto f = GgufFile::open(path);
  auto m = LlamaModel::load(*f);
  KvCacheOptions co;
  co.max_tokens = 1 << 26;  // 64 Mi tokens × 16 KiB = 1 TiB of f16 KV
  co.max_seqs = 1;
  const RunMemory need = run_memory(*m, co);
  EXPECT_GT(need.kv, size_t(1) << 40);
  EXPECT_GT(need.weights, size_t(4) * 1024 * 1024);  // ~5 MB of f32 weights
  try {
    check_memory(*m, co);
    FAIL() << "a 1 TiB run was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("not enough memory"), std::string::npos) << msg;
    EXPECT_NE(msg.find("available"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  co.max_tokens = 4096;
  EXPECT_NO_THROW(check_memory(*m, co));

  // The tool: one line on stderr, exit status 1, and quickly (nothing of 1 TiB was touched).
  const CliResult r = run_tq("generate -m " + path + " -p hello -n 2 -c 67108864 -t 1");
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("not enough memory"), std::string::npos) << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  // TQ_MEMORY_LIMIT lowers what is available: a 4096-token run is refused under 1 MB.
  setenv("TQ_MEMORY_LIMIT", "1000000", 1);
  const CliResult s = run_tq("generate -m " + path + " -p hello -n 2 -c 4096 -t 1");
  unsetenv("TQ_MEMORY_LIMIT");
  EXPECT_EQ(s.status, 1) << s.err;
  EXPECT_NE(s.err.find("TQ_MEMORY_LIMIT"), std::string::npos) << s.err;
  const CliResult ok = run_tq("generate -m " + path + " -p hello -n 2 -c 4096 -t 1");
  EXPECT_EQ(ok.status, 0) << ok.err;
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace tq
