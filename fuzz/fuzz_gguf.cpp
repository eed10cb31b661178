// Fuzz target: the GGUF reader and the model configuration (metadata → shapes). Any input must
// end in a tq::Error or a model that loads, and a model that loads must run a short forward
// pass within its buffers (ASan) — the crafted head_count that wrapped n_head · head_dim is the
// kind of file this looks for. Seeds: fuzz/corpus/fuzz_gguf (tq_fuzz_seeds).
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "cache/kv_cache.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/model_config.h"
#include "model/tokenizer.h"
#include "tq/error.h"

namespace {

// Models whose f32 weights stay small (the fuzzer's memory limit; real models are not the point).
bool small_enough(const tq::GgufFile& f) {
  int64_t total = 0;
  for (const auto& t : f.tensors()) {
    total += t.n_elements();
    if (total > (int64_t(1) << 20)) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tq::set_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<tq::GgufFile> f;
  try {
    f = tq::GgufFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.gguf");
  } catch (const tq::Error&) {
    return 0;
  }
  // Everything a command reads from the metadata: summaries, typed getters, the fingerprint.
  for (const auto& k : f->keys()) {
    (void)f->value_summary(k);
    try {
      (void)f->get_float(k);
    } catch (const tq::Error&) {
    }
    try {
      (void)f->get_int_array(k);
    } catch (const tq::Error&) {
    }
  }
  try {
    std::vector<std::string> names;
    for (const auto& t : f->tensors()) names.push_back(t.name);
    (void)f->fingerprint(names);
  } catch (const tq::Error&) {
  }
  try {
    auto tok = tq::Tokenizer::from_gguf(*f);
    const auto ids = tok->encode("Hello world <|im_start|> 12345 \xF0\x9F\x98\x80 \xFF", true);
    (void)tok->decode(ids);
  } catch (const tq::Error&) {
  }
  tq::LlamaHparams hp;
  try {
    hp = tq::read_llama_hparams(*f);
    tq::check_tensors_finite(*f);
  } catch (const tq::Error&) {
    return 0;
  }
  if (!small_enough(*f)) return 0;
  std::unique_ptr<tq::LlamaModel> model;
  try {
    model = tq::LlamaModel::load(*f);
  } catch (const tq::Error&) {
    return 0;
  }
  // A configuration that loads must be one the forward pass can run: two tokens, f16 cache.
  tq::KvCacheOptions co;
  co.max_tokens = 8;
  co.max_seqs = 1;
  tq::KvCache cache(model->kv_shape(), co);
  const int seq = cache.new_seq();
  const int32_t ids[2] = {0, int32_t(hp.n_vocab - 1)};
  std::vector<float> logits;
  try {
    model->forward(cache, seq, ids, std::min(2, hp.n_ctx_train), nullptr, &logits);
  } catch (const tq::Error&) {
    return 0;
  }
  if (logits.size() != size_t(hp.n_vocab)) std::abort();
  return 0;
}
