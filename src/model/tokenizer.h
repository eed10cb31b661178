// Tokenizers of GGUF models, from their tokenizer.ggml.* metadata:
//  - "gpt2": byte-level BPE with ranked merges, after a pre-tokenizer split chosen from
//    tokenizer.ggml.pre (smollm, llama-bpe/llama3 (Llama 3), qwen2, default gpt2);
//  - "llama": SentencePiece-style BPE by token score, "▁" for spaces, byte fallback <0xXX>.
// Special tokens (control, user-defined) in the text are matched whole, as llama.cpp does with
// parse_special.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model/gguf.h"

namespace tq {

// GPT-2's byte alphabet (byte-level BPE vocabularies): printable Latin-1 bytes stand for
// themselves, the 68 others for U+0100 upwards in byte order. byte_level_char: its UTF-8.
uint32_t byte_level_codepoint(uint8_t b);
std::string byte_level_char(uint8_t b);

class Tokenizer {
 public:
  // From tokenizer.ggml.* metadata. Throws tq::Error for another tokenizer model or malformed
  // metadata (missing arrays, mismatched lengths, out-of-range special ids).
  static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& f);
  ~Tokenizer();

  // add_bos only if the model wants a BOS (tokenizer.ggml.add_bos_token, default per model
  // type); special tokens in text (e.g. <|im_start|>) are parsed as specials. Any bytes (invalid
  // UTF-8 included) encode so that decode() gives them back; a byte the vocabulary has no token
  // for (neither its byte-level character nor a <0xXX> token) is a tq::Error naming it.
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const;
  std::string token_to_piece(int32_t id) const;  // raw bytes of the token
  // Concatenated pieces; for "llama" models the space added in front of the text by encode()
  // is removed again, so decode(encode(s)) == s.
  std::string decode(const std::vector<int32_t>& ids) const;
  int32_t bos() const;
  int32_t eos() const;
  int n_vocab() const;
  bool is_eog(int32_t id) const;  // eos, eot, <|im_end|>, <|eot_id|> ...
  bool is_control(int32_t id) const;
  bool wants_bos() const;
  std::string model() const;  // "gpt2" or "llama"
  std::string pre() const;    // pre-tokenizer in use ("smollm", "llama3", ...)
  const std::string& token_text(int32_t id) const;  // the vocabulary entry as stored

  // Chat formatting from tokenizer.chat_template: ChatML (<|im_start|>role\n...<|im_end|>\n),
  // Llama-3 (<|start_header_id|>...), Llama-2 ([INST]) detected by substrings of the template
  // (ChatML when there is no template). A ChatML template's built-in default system message is
  // used when the conversation has none.
  std::string apply_chat_template(
      const std::vector<std::pair<std::string, std::string>>& role_content,
      bool add_assistant_prompt) const;

  struct Impl;

 private:
  Tokenizer();
  std::unique_ptr<Impl> impl_;
};

}  // namespace tq
