// Shared by the fuzz targets and fuzz/make_seeds.cpp: small models and tokenizers written with
// the project's GGUF writer (model/gguf_writer.h).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "model/gguf_writer.h"
#include "model/tokenizer.h"

namespace tq::fuzz {

// GPT-2's byte alphabet, as the tokenizer reads it.
inline std::string gpt2_byte_char(int b) { return byte_level_char(uint8_t(b)); }

// Tokenizer metadata: a byte-level BPE ("gpt2", pre-tokenizer `pre`) with the whole byte
// alphabet, a few merges and special tokens, or a SentencePiece ("llama") vocabulary with
// byte fallback.
// Returns the vocabulary size.
inline int add_tokenizer(GgufWriter& w, bool spm, const std::string& pre = "smollm") {
  std::vector<std::string> tok;
  std::vector<int32_t> type;
  std::vector<float> score;
  auto add = [&](const std::string& s, int32_t t, float sc = 0.f) {
    tok.push_back(s);
    type.push_back(t);
    score.push_back(sc);
  };
  if (spm) {
    add("<unk>", 2);
    add("<s>", 3);
    add("</s>", 3);
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      add(name, 6);
    }
    const std::string U = "\xE2\x96\x81";  // SentencePiece's space
    const std::string pieces[] = {U,   U + "t", "h", "e",  "t", "he",  U + "the",
                                  "a", U + "a", "n", "an", "d", "and", U + "and"};
    float sc = -1.f;
    for (const std::string& p : pieces) add(p, 1, sc -= 0.5f);
    add("<tool>", 4);
    w.set_string("tokenizer.ggml.model", "llama");
  } else {
    add("<|endoftext|>", 3);
    for (int b = 0; b < 256; ++b) add(gpt2_byte_char(b), 1);
    const std::string G = gpt2_byte_char(' ');
    const std::vector<std::string> merges = {G + " t", "h e",    "t h", G + "t h", G + "th e",
                                             "e r",    G + " a", "a n", "an d",    G + "a nd"};
    for (const auto& m : merges) {
      const auto sp = m.find(' ');
      add(m.substr(0, sp) + m.substr(sp + 1), 1);
    }
    add("<|im_start|>", 3);
    add("<|im_end|>", 3);
    add("<tool>", 4);
    w.set_string("tokenizer.ggml.model", "gpt2");
    w.set_string("tokenizer.ggml.pre", pre);
    w.set_string_array("tokenizer.ggml.merges", merges);
    w.set_u32("tokenizer.ggml.eos_token_id", 0);
    w.set_u32("tokenizer.ggml.bos_token_id", 0);
  }
  w.set_string_array("tokenizer.ggml.tokens", tok);
  w.set_i32_array("tokenizer.ggml.token_type", type);
  w.set_f32_array("tokenizer.ggml.scores", score);
  return int(tok.size());
}

// A tiny random Llama-family model (F32 or F16 weights, or Q8_0 when width is a multiple of 32).
struct TinySpec {
  std::string arch = "llama";
  int layers = 1, width = 16, heads = 2, kv_heads = 1, head_dim = 8, ff = 24, vocab = 32;
  uint32_t type = 0;  // GgmlType: 0 F32, 1 F16, 8 Q8_0
  bool tokenizer = false;
};

inline std::vector<uint8_t> tiny_model(const TinySpec& s) {
  GgufWriter w;
  const std::string& a = s.arch;
  w.set_string("general.architecture", a);
  w.set_u32(a + ".block_count", uint32_t(s.layers));
  w.set_u32(a + ".embedding_length", uint32_t(s.width));
  w.set_u32(a + ".feed_forward_length", uint32_t(s.ff));
  w.set_u32(a + ".attention.head_count", uint32_t(s.heads));
  w.set_u32(a + ".attention.head_count_kv", uint32_t(s.kv_heads));
  w.set_u32(a + ".attention.key_length", uint32_t(s.head_dim));
  w.set_u32(a + ".context_length", 64);
  w.set_f32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_f32(a + ".rope.freq_base", 10000.f);
  const int vocab = s.tokenizer ? add_tokenizer(w, false) : s.vocab;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 0.3f);
  auto add = [&](const std::string& name, std::vector<int64_t> ne, float mean = 0.f) {
    int64_t n = 1;
    for (auto x : ne) n *= x;
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = mean + nd(rng);
    const bool q8 = s.type == 8 && ne[0] % 32 == 0;
    if (s.type == 1) {
      std::vector<uint16_t> h(v.size());
      for (size_t i = 0; i < v.size(); ++i) {
        // f32 -> f16 by truncation (the values are small and normal): enough for a seed.
        uint32_t u;
        std::memcpy(&u, &v[i], 4);
        const int e = int((u >> 23) & 0xFF) - 127 + 15;
        h[i] = uint16_t(((u >> 16) & 0x8000) |
                        (e > 0 ? (uint32_t(e) << 10) | ((u >> 13) & 0x3FF) : 0));
      }
      w.add_tensor(name, GgmlType::F16, ne, h.data(), h.size() * 2);
    } else if (q8) {
      std::vector<uint8_t> b;
      for (size_t i = 0; i < v.size(); i += 32) {
        const uint16_t d = 0x2000;  // f16 2^-7
        b.push_back(uint8_t(d & 0xFF));
        b.push_back(uint8_t(d >> 8));
        for (int j = 0; j < 32; ++j)
          b.push_back(uint8_t(int8_t(std::max(-127.f, std::min(127.f, v[i + j] * 128.f)))));
      }
      w.add_tensor(name, GgmlType::Q8_0, ne, b.data(), b.size());
    } else {
      w.add_tensor(name, GgmlType::F32, ne, v.data(), v.size() * 4);
    }
  };
  const int64_t E = s.width, Q = int64_t(s.heads) * s.head_dim,
                K = int64_t(s.kv_heads) * s.head_dim;
  add("token_embd.weight", {E, vocab});
  add("output_norm.weight", {E}, 1.f);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", {E}, 1.f);
    add(p + "attn_q.weight", {E, Q});
    add(p + "attn_k.weight", {E, K});
    add(p + "attn_v.weight", {E, K});
    if (a == "qwen2") {
      add(p + "attn_q.bias", {Q});
      add(p + "attn_k.bias", {K});
      add(p + "attn_v.bias", {K});
    }
    add(p + "attn_output.weight", {Q, E});
    add(p + "ffn_norm.weight", {E}, 1.f);
    add(p + "ffn_gate.weight", {E, s.ff});
    add(p + "ffn_up.weight", {E, s.ff});
    add(p + "ffn_down.weight", {s.ff, E});
  }
  return w.serialize();
}

}  // namespace tq::fuzz
