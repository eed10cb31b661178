// Fuzz target: the tokenizers on arbitrary bytes. Byte 0 picks the tokenizer (synthetic
// byte-level BPE with each pre-tokenizer, synthetic SentencePiece with byte fallback, and the
// default model's own tokenizer when models/ has it); the rest is the text. Every id must be in
// the vocabulary and decode(encode(text)) must give the text back, byte for byte (the promise
// of model/tokenizer.h), unless the text holds a byte the vocabulary has no token for: then
// encode() must refuse it with a tq::Error. Seeds: fuzz/corpus/fuzz_tokenizer.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "tq/error.h"

namespace {

struct Loaded {
  std::unique_ptr<tq::GgufFile> file;
  std::unique_ptr<tq::Tokenizer> tok;
  bool spellable[256];  // the vocabulary has a token sequence for this byte on its own
};
std::vector<Loaded>& tokenizers() {
  static std::vector<Loaded> t;
  return t;
}

void add(std::unique_ptr<tq::GgufFile> f) {
  Loaded l;
  l.tok = tq::Tokenizer::from_gguf(*f);
  l.file = std::move(f);
  for (int b = 0; b < 256; ++b) {
    const std::string s(1, char(b));
    try {
      l.spellable[b] = l.tok->decode(l.tok->encode(s, false)) == s;
    } catch (const tq::Error&) {
      l.spellable[b] = false;
    }
  }
  tokenizers().push_back(std::move(l));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  for (const char* pre : {"smollm", "llama3", "qwen2", "gpt2"}) {
    tq::GgufWriter w;
    tq::fuzz::add_tokenizer(w, false, pre);
    add(tq::GgufFile::from_bytes(w.serialize(), std::string("synthetic-") + pre));
  }
  tq::GgufWriter w;
  tq::fuzz::add_tokenizer(w, true);
  add(tq::GgufFile::from_bytes(w.serialize(), "synthetic-spm"));
  const char* env = std::getenv("TQ_FUZZ_MODEL");
  const std::string model =
      env ? env : std::string(TQ_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  std::error_code ec;
  if (std::filesystem::exists(model, ec))
    add(tq::GgufFile::open(model));
  else
    std::fprintf(stderr, "fuzz_tokenizer: %s not found: synthetic tokenizers only\n",
                 model.c_str());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& all = tokenizers();
  const Loaded& l = all[data[0] % all.size()];
  const tq::Tokenizer& tok = *l.tok;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  bool spellable = true;
  for (char c : text) spellable &= l.spellable[static_cast<unsigned char>(c)];
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(text, false);
  } catch (const tq::Error&) {
    // Only a byte the vocabulary cannot spell may refuse the text (SmolLM2 lacks 21).
    if (spellable) std::abort();
    return 0;
  }
  if (!spellable) std::abort();
  for (int32_t id : ids)
    if (id < 0 || id >= tok.n_vocab()) std::abort();
  const std::string back = tok.decode(ids);
  if (back != text) {
    std::fprintf(stderr, "round trip failed (%s): %zu bytes in, %zu out\n", tok.pre().c_str(),
                 text.size(), back.size());
    std::abort();
  }
  // With a BOS the ids differ only by it.
  const std::vector<int32_t> with_bos = tok.encode(text, true);
  if (with_bos.size() < ids.size()) std::abort();
  return 0;
}
