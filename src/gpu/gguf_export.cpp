// turboquant GPU runtime — a synthetic model's weights as a GGUF for the CPU path (see
// cpu_reference.h).
#include <cstring>

#include "gpu/cpu_reference.h"
#include "model/gguf_writer.h"
#include "model/tokenizer.h"
#include "tq/error.h"

namespace tq::gpu {
namespace {

// A byte-level BPE vocabulary of n_vocab tokens: <|endoftext|> (BOS and EOS), the 256 byte
// characters, one merge ("Ġ t"), then unused fillers: any text encodes (byte by byte).
void add_byte_tokenizer(GgufWriter& g, int n_vocab) {
  if (n_vocab < 258) throw Error("write_gguf: a tokenizer needs a vocabulary of >= 258");
  std::vector<std::string> tok = {"<|endoftext|>"};
  std::vector<int32_t> type = {3};  // control
  for (int b = 0; b < 256; ++b) {
    tok.push_back(byte_level_char(uint8_t(b)));
    type.push_back(1);
  }
  const std::string G = byte_level_char(uint8_t(' '));
  tok.push_back(G + "t");
  type.push_back(1);
  while (int(tok.size()) < n_vocab) {
    tok.push_back("<unused_" + std::to_string(tok.size()) + ">");
    type.push_back(5);  // unused
  }
  g.set_string("tokenizer.ggml.model", "gpt2");
  g.set_string("tokenizer.ggml.pre", "default");
  g.set_string_array("tokenizer.ggml.tokens", tok);
  g.set_i32_array("tokenizer.ggml.token_type", type);
  g.set_string_array("tokenizer.ggml.merges", {G + " t"});
  g.set_u32("tokenizer.ggml.bos_token_id", 0);
  g.set_u32("tokenizer.ggml.eos_token_id", 0);
  g.set_bool("tokenizer.ggml.add_bos_token", true);
}

}  // namespace

void write_gguf(const LlamaHparams& hp, const HostWeights& w, const std::string& path,
                bool with_tokenizer) {
  GgufWriter g;
  const std::string a = hp.arch;
  const int E = hp.n_embd, D = hp.head_dim, F = hp.n_ff, V = hp.n_vocab;
  const int HQ = hp.n_head * D, HK = hp.n_kv_head * D;
  g.set_string("general.architecture", a);
  g.set_u32(a + ".block_count", uint32_t(hp.n_layer));
  g.set_u32(a + ".embedding_length", uint32_t(E));
  g.set_u32(a + ".feed_forward_length", uint32_t(F));
  g.set_u32(a + ".attention.head_count", uint32_t(hp.n_head));
  g.set_u32(a + ".attention.head_count_kv", uint32_t(hp.n_kv_head));
  g.set_u32(a + ".attention.key_length", uint32_t(D));
  g.set_u32(a + ".attention.value_length", uint32_t(D));
  g.set_u32(a + ".context_length", uint32_t(hp.n_ctx_train));
  g.set_f32(a + ".attention.layer_norm_rms_epsilon", hp.rms_eps);
  g.set_f32(a + ".rope.freq_base", hp.rope_base);
  // rows [r0, r0 + n) of a bf16 [rows][in] matrix, as a GGUF Linear of ne = {in, n}
  auto rows16 = [&](const std::string& name, const std::vector<uint16_t>& m, int in, int r0,
                    int n) {
    g.add_tensor(name, GgmlType::BF16, {in, n}, m.data() + size_t(r0) * in, size_t(n) * in * 2);
  };
  auto vec32 = [&](const std::string& name, const float* v, int n) {
    g.add_tensor(name, GgmlType::F32, {n}, v, size_t(n) * 4);
  };
  rows16("token_embd.weight", w.tok_embd, E, 0, V);
  rows16("output.weight", w.output, E, 0, V);
  vec32("output_norm.weight", w.output_norm.data(), E);
  for (int l = 0; l < hp.n_layer; ++l) {
    const HostWeights::Layer& L = w.layers[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    rows16(p + "attn_q.weight", L.wqkv, E, 0, HQ);
    rows16(p + "attn_k.weight", L.wqkv, E, HQ, HK);
    rows16(p + "attn_v.weight", L.wqkv, E, HQ + HK, HK);
    rows16(p + "attn_output.weight", L.wo, HQ, 0, E);
    rows16(p + "ffn_gate.weight", L.wgu, E, 0, F);
    rows16(p + "ffn_up.weight", L.wgu, E, F, F);
    rows16(p + "ffn_down.weight", L.wdown, F, 0, E);
    vec32(p + "attn_norm.weight", L.attn_norm.data(), E);
    vec32(p + "ffn_norm.weight", L.ffn_norm.data(), E);
    if (!L.bqkv.empty()) {
      vec32(p + "attn_q.bias", L.bqkv.data(), HQ);
      vec32(p + "attn_k.bias", L.bqkv.data() + HQ, HK);
      vec32(p + "attn_v.bias", L.bqkv.data() + HQ + HK, HK);
    }
  }
  if (with_tokenizer) add_byte_tokenizer(g, V);
  g.write(path);
}

}  // namespace tq::gpu
