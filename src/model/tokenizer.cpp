// Tokenizers for GGUF models. Written from the format descriptions (GPT-2 byte-level BPE, the
// pre-tokenizer regexes named by tokenizer.ggml.pre, SentencePiece BPE by score with byte
// fallback); checked against llama.cpp and Hugging Face tokenizers in tests/test_tokenizer.cpp.
#include "model/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <queue>

#include "model/unicode.h"
#include "tq/error.h"

namespace tq {

uint32_t byte_level_codepoint(uint8_t b) {
  auto printable = [](uint32_t x) {
    return (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174;
  };
  if (printable(b)) return b;
  uint32_t cp = 256;
  for (uint32_t x = 0; x < b; ++x) cp += !printable(x);
  return cp;
}

std::string byte_level_char(uint8_t b) {
  std::string s;
  unicode::append_utf8(s, byte_level_codepoint(b));
  return s;
}

namespace {

// tokenizer.ggml.token_type values (llama.cpp's).
enum TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

enum class Pre { Gpt2, Smollm, Llama3, Qwen2 };

using unicode::Unit;

struct Span {
  size_t begin, end;  // byte offsets into the fragment
};

// --- Pre-tokenizer matchers. Each returns the number of units matched at position i of
// u[0..n), following the alternatives of the regex in order (first alternative that matches
// wins; quantifiers greedy, with the backtracking the regex would do). ---

bool ws(const Unit& x) { return unicode::is_whitespace(x.cp); }
bool letter(const Unit& x) { return unicode::is_letter(x.cp); }
bool number(const Unit& x) { return unicode::is_number(x.cp); }
// [^\s\p{L}\p{N}]
bool other(const Unit& x) { return !ws(x) && !letter(x) && !number(x); }

uint32_t lower_ascii(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

// 's 't 're 've 'm 'll 'd (ASCII apostrophe only).
size_t match_contraction(const Unit* u, size_t i, size_t n, bool ignore_case) {
  if (u[i].cp != '\'' || i + 1 >= n) return 0;
  auto at = [&](size_t k) -> uint32_t {
    if (i + k >= n) return 0;
    return ignore_case ? lower_ascii(u[i + k].cp) : u[i + k].cp;
  };
  const uint32_t a = at(1), b = at(2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  return 0;
}

// \s+(?!\S) then \s+ : a whitespace run, leaving its last unit to the next token when the run is
// followed by a non-space (so that " word" keeps its space).
size_t match_ws_run(const Unit* u, size_t i, size_t n) {
  if (!ws(u[i])) return 0;
  size_t k = i;
  while (k < n && ws(u[k])) ++k;
  if (k == n || k - i == 1) return k - i;  // at the end, or a single space: \s+ takes it
  return k - i - 1;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t match_gpt2(const Unit* u, size_t i, size_t n) {
  if (size_t m = match_contraction(u, i, n, false)) return m;
  const size_t j = (u[i].cp == ' ' && i + 1 < n) ? i + 1 : i;
  for (auto cls : {letter, number, other}) {
    if (cls(u[j])) {
      size_t k = j;
      while (k < n && cls(u[k])) ++k;
      return k - i;
    }
  }
  return match_ws_run(u, i, n);
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
// \s*[\r\n]+|\s+(?!\S)|\s+        (Llama 3; Qwen2 has \p{N} instead of \p{N}{1,3})
size_t match_llama3(const Unit* u, size_t i, size_t n, size_t max_digits) {
  if (size_t m = match_contraction(u, i, n, true)) return m;
  auto nl = [](const Unit& x) { return x.cp == '\r' || x.cp == '\n'; };
  // [^\r\n\p{L}\p{N}]?\p{L}+
  {
    size_t j = i;
    if (!letter(u[j]) && !nl(u[j]) && !number(u[j]) && j + 1 < n && letter(u[j + 1])) ++j;
    if (letter(u[j])) {
      size_t k = j;
      while (k < n && letter(u[k])) ++k;
      return k - i;
    }
  }
  // \p{N}{1,max}
  if (number(u[i])) {
    size_t k = i;
    while (k < n && k - i < max_digits && number(u[k])) ++k;
    return k - i;
  }
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  {
    const size_t j = (u[i].cp == ' ' && i + 1 < n) ? i + 1 : i;
    if (other(u[j])) {
      size_t k = j;
      while (k < n && other(u[k])) ++k;
      while (k < n && nl(u[k])) ++k;
      return k - i;
    }
  }
  if (!ws(u[i])) return 1;  // cannot happen: every unit is a letter, number, space or other
  // \s*[\r\n]+ : up to and including the last newline of the whitespace run.
  size_t k = i, last_nl = n;
  while (k < n && ws(u[k])) {
    if (nl(u[k])) last_nl = k;
    ++k;
  }
  if (last_nl != n) return last_nl + 1 - i;
  return match_ws_run(u, i, n);
}

void split_with(const std::vector<Unit>& u, size_t b, size_t e, Pre pre, std::vector<Span>& out) {
  size_t i = b;
  while (i < e) {
    size_t m = 0;
    const Unit* base = u.data() + b;
    const size_t n = e - b;
    switch (pre) {
      case Pre::Gpt2:
      case Pre::Smollm:
        m = match_gpt2(base, i - b, n);
        break;
      case Pre::Llama3:
        m = match_llama3(base, i - b, n, 3);
        break;
      case Pre::Qwen2:
        m = match_llama3(base, i - b, n, 1);
        break;
    }
    if (m == 0) m = 1;
    out.push_back({u[i].pos, u[i + m - 1].pos + u[i + m - 1].len});
    i += m;
  }
}

std::vector<Span> pre_tokenize(std::string_view text, Pre pre) {
  const std::vector<Unit> u = unicode::decode_utf8(text);
  std::vector<Span> out;
  if (pre != Pre::Smollm) {
    split_with(u, 0, u.size(), pre, out);
    return out;
  }
  // SmolLM: every digit is its own piece; the rest is split by the GPT-2 regex, each run
  // between digits on its own (as a sequence of two pre-tokenizers does).
  size_t run = 0;
  for (size_t i = 0; i <= u.size(); ++i) {
    if (i == u.size() || number(u[i])) {
      split_with(u, run, i, Pre::Gpt2, out);
      if (i < u.size()) out.push_back({u[i].pos, u[i].pos + u[i].len});
      run = i + 1;
    }
  }
  return out;
}

}  // namespace

struct Tokenizer::Impl {
  bool spm = false;  // "llama" (SentencePiece) rather than "gpt2" (byte-level BPE)
  Pre pre = Pre::Gpt2;
  std::string pre_name;
  bool ignore_merges = false;  // Llama 3: a pre-token that is itself a token is used whole
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<float> scores;
  std::unordered_map<std::string, int32_t> ids;
  std::unordered_map<std::string, int32_t> merge_rank;  // "left right" -> rank
  int32_t bos = -1, eos = -1, unk = -1, eot = -1, eom = -1;
  bool add_bos = false, add_space_prefix = false;
  std::vector<std::vector<int32_t>> specials_by_byte;  // by first byte, longest first
  std::vector<bool> eog;
  std::string chat_template;
  uint32_t byte_cp[256] = {};                     // GPT-2 byte -> printable code point
  std::unordered_map<uint32_t, uint8_t> cp_byte;  // and back
  int32_t byte_token[256];                        // SPM <0xXX> tokens (-1 if absent)

  void bpe_word(const std::string& mapped, std::vector<int32_t>& out) const;
  // A byte the vocabulary has no token for. It used to become the unknown token — in SmolLM2's
  // vocabulary <|endoftext|>, which put document boundaries into a text — so decode(encode(s))
  // was not s; no token sequence can spell the byte, so encode() refuses the text instead.
  // (SmolLM2 lacks 21 of the 256 byte tokens: 0x04 0x06 0x13 0x14 0x16 0x1D 0xC0 0xC1 0xF1
  // 0xF2 0xF5-0xFF, i.e. rare controls, bytes invalid in UTF-8 and the lead bytes of planes 4-15.)
  [[noreturn]] void unencodable_byte(unsigned char b) const {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", b);
    throw Error(std::string("tokenizer: the text holds byte ") + hex +
                ", which this model's vocabulary has no token for (it cannot be encoded)");
  }
  // The same for a character of the GPT-2 byte alphabet.
  [[noreturn]] void unencodable(const std::string& mapped_char) const {
    const auto u = unicode::decode_utf8(mapped_char);
    const auto it = u.empty() ? cp_byte.end() : cp_byte.find(u[0].cp);
    unencodable_byte(it == cp_byte.end() ? 0 : it->second);
  }
  void encode_bpe(std::string_view frag, std::vector<int32_t>& out) const;
  void encode_spm(std::string_view frag, bool prefix_space, std::vector<int32_t>& out) const;
  int32_t lookup(const std::string& s) const {
    auto it = ids.find(s);
    return it == ids.end() ? -1 : it->second;
  }
};

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& f) {
  const auto fail = [&](const std::string& what) -> void {
    throw Error("tokenizer of " + f.path() + ": " + what);
  };
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  Impl& m = *t->impl_;
  if (!f.has("tokenizer.ggml.model")) fail("no tokenizer.ggml.model in the file");
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model == "llama")
    m.spm = true;
  else if (model != "gpt2")
    fail("unsupported tokenizer model '" + model + "' (supported: gpt2, llama)");

  if (!f.has("tokenizer.ggml.tokens")) fail("no tokenizer.ggml.tokens");
  m.tokens = f.get_string_array("tokenizer.ggml.tokens");
  const size_t n = m.tokens.size();
  if (n == 0 || n > size_t(INT32_MAX)) fail("empty or oversized vocabulary");
  if (f.has("tokenizer.ggml.token_type")) {
    m.types = f.get_int_array("tokenizer.ggml.token_type");
    if (m.types.size() != n) fail("token_type has a different length than tokens");
  } else {
    m.types.assign(n, kNormal);
  }
  if (f.has("tokenizer.ggml.scores")) {
    m.scores = f.get_float_array("tokenizer.ggml.scores");
    if (m.scores.size() != n) fail("scores has a different length than tokens");
  } else {
    m.scores.assign(n, 0.0f);
  }
  m.ids.reserve(n);
  for (size_t i = 0; i < n; ++i) m.ids[m.tokens[i]] = int32_t(i);

  const auto special_id = [&](const char* key, int32_t def) -> int32_t {
    const std::string k = std::string("tokenizer.ggml.") + key;
    if (!f.has(k)) return def;
    const int64_t v = f.get_int(k);
    if (v < 0 || v >= int64_t(n))
      fail(k + " = " + std::to_string(v) + " is outside the vocabulary of " + std::to_string(n));
    return int32_t(v);
  };
  m.bos = special_id("bos_token_id", m.spm ? std::min<int32_t>(1, int32_t(n) - 1) : -1);
  m.eos = special_id("eos_token_id", m.spm ? std::min<int32_t>(2, int32_t(n) - 1) : -1);
  m.unk = special_id("unknown_token_id", m.spm ? 0 : -1);
  m.eot = special_id("eot_token_id", -1);
  m.eom = special_id("eom_token_id", -1);
  m.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", m.spm);
  m.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", m.spm);
  m.chat_template = f.get_string("tokenizer.chat_template", "");

  if (!m.spm) {
    if (!f.has("tokenizer.ggml.merges")) fail("a gpt2 tokenizer needs tokenizer.ggml.merges");
    const auto merges = f.get_string_array("tokenizer.ggml.merges");
    m.merge_rank.reserve(merges.size());
    for (size_t r = 0; r < merges.size(); ++r) {
      if (merges[r].find(' ') == std::string::npos)
        fail("merge " + std::to_string(r) + " has no space between its two parts");
      m.merge_rank.emplace(merges[r], int32_t(r));  // the first (best) rank wins
    }
    m.pre_name = f.get_string("tokenizer.ggml.pre", "default");
    const std::string& p = m.pre_name;
    // Digits one by one, then the GPT-2 regex (llama.cpp groups these vocabularies so).
    if (p == "smollm" || p == "starcoder" || p == "refact" || p == "codeshell" ||
        p == "command-r" || p == "exaone" || p == "minerva-7b")
      m.pre = Pre::Smollm;
    else if (p == "llama-bpe" || p == "llama3" || p == "llama-v3" || p == "smaug-bpe" ||
             p == "falcon3" || p == "dbrx") {
      m.pre = Pre::Llama3;
      m.ignore_merges = true;
    } else if (p == "qwen2" || p == "deepseek-r1-qwen")
      m.pre = Pre::Qwen2;
    else if (p == "default" || p == "gpt-2" || p == "gpt2" || p == "mpt" || p == "olmo" ||
             p == "phi-2")
      m.pre = Pre::Gpt2;  // the GPT-2 regex
    else
      fail("unsupported pre-tokenizer '" + p +
           "' (supported: smollm, starcoder, refact, command-r, llama-bpe, llama3, qwen2, "
           "gpt-2, mpt, olmo, default)");
    for (uint32_t b = 0; b < 256; ++b) {
      m.byte_cp[b] = byte_level_codepoint(uint8_t(b));
      m.cp_byte[m.byte_cp[b]] = uint8_t(b);
    }
  } else {
    m.pre_name = "spm";
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    m.byte_token[b] = m.lookup(name);
  }

  // Tokens matched whole in the text: control, user-defined and unknown-type tokens.
  m.specials_by_byte.assign(256, {});
  for (size_t i = 0; i < n; ++i) {
    const int32_t ty = m.types[i];
    if ((ty == kControl || ty == kUserDefined || ty == kUnknown) && !m.tokens[i].empty())
      m.specials_by_byte[static_cast<unsigned char>(m.tokens[i][0])].push_back(int32_t(i));
  }
  for (auto& v : m.specials_by_byte)
    std::stable_sort(v.begin(), v.end(),
                     [&](int32_t a, int32_t b) { return m.tokens[a].size() > m.tokens[b].size(); });

  m.eog.assign(n, false);
  for (int32_t id : {m.eos, m.eot, m.eom})
    if (id >= 0) m.eog[id] = true;
  for (size_t i = 0; i < n; ++i) {
    const std::string& s = m.tokens[i];
    if (m.types[i] == kControl &&
        (s == "<|im_end|>" || s == "<|eot_id|>" || s == "<|endoftext|>" || s == "<|end|>" ||
         s == "<|eom_id|>" || s == "<end_of_turn>" || s == "</s>" || s == "<|end_of_text|>"))
      m.eog[i] = true;
  }
  return t;
}

// Byte-level BPE of one pre-token (already in the GPT-2 byte alphabet): start from single
// characters and repeatedly merge the adjacent pair of lowest rank (leftmost first).
void Tokenizer::Impl::bpe_word(const std::string& w, std::vector<int32_t>& out) const {
  if (ignore_merges) {
    if (int32_t id = lookup(w); id >= 0) {
      out.push_back(id);
      return;
    }
  }
  struct Sym {
    size_t pos, len;
    int prev, next;
  };
  std::vector<Sym> sym;
  for (size_t i = 0; i < w.size();) {
    const size_t l = std::min(unicode::utf8_len(static_cast<unsigned char>(w[i])), w.size() - i);
    sym.push_back({i, l, int(sym.size()) - 1, int(sym.size()) + 1});
    i += l;
  }
  if (sym.empty()) return;
  sym.back().next = -1;
  struct Cand {
    int32_t rank;
    int left;
    size_t left_len, right_len;
    bool operator<(const Cand& o) const {  // priority_queue pops the "largest": lowest rank
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Cand> heap;
  std::string key;
  const auto consider = [&](int l) {
    if (l < 0 || sym[l].next < 0) return;
    const Sym& a = sym[l];
    const Sym& b = sym[a.next];
    key.assign(w, a.pos, a.len);
    key += ' ';
    key.append(w, b.pos, b.len);
    auto it = merge_rank.find(key);
    if (it != merge_rank.end()) heap.push({it->second, l, a.len, b.len});
  };
  for (int i = 0; i + 1 < int(sym.size()); ++i) consider(i);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Sym& a = sym[c.left];
    if (a.len == 0 || a.next < 0) continue;  // merged away
    Sym& b = sym[a.next];
    if (a.len != c.left_len || b.len != c.right_len) continue;  // stale
    a.len += b.len;
    b.len = 0;
    a.next = b.next;
    if (a.next >= 0) sym[a.next].prev = c.left;
    consider(a.prev);
    consider(c.left);
  }
  for (int i = 0; i >= 0; i = sym[i].next) {
    const std::string piece = w.substr(sym[i].pos, sym[i].len);
    if (int32_t id = lookup(piece); id >= 0) {
      out.push_back(id);
      continue;
    }
    // Not in the vocabulary (a broken vocabulary): fall back to its characters.
    for (size_t k = 0; k < piece.size();) {
      const size_t l =
          std::min(unicode::utf8_len(static_cast<unsigned char>(piece[k])), piece.size() - k);
      const int32_t id = lookup(piece.substr(k, l));
      if (id < 0) unencodable(piece.substr(k, l));
      out.push_back(id);
      k += l;
    }
  }
}

void Tokenizer::Impl::encode_bpe(std::string_view frag, std::vector<int32_t>& out) const {
  std::string mapped;
  for (const Span& s : pre_tokenize(frag, pre)) {
    mapped.clear();
    for (size_t i = s.begin; i < s.end; ++i)
      unicode::append_utf8(mapped, byte_cp[static_cast<unsigned char>(frag[i])]);
    bpe_word(mapped, out);
  }
}

// SentencePiece BPE: spaces become U+2581, characters are merged pairwise, always the adjacent
// pair whose concatenation is the highest-scoring token (leftmost first); what stays outside the
// vocabulary is spelled with <0xXX> byte tokens.
void Tokenizer::Impl::encode_spm(std::string_view frag, bool prefix_space,
                                 std::vector<int32_t>& out) const {
  std::string text;
  std::vector<size_t> literal;  // offsets in text of a U+2581 that was in the input itself
  if (prefix_space) text += "\xE2\x96\x81";
  for (size_t i = 0; i < frag.size(); ++i) {
    if (frag[i] == ' ') {
      text += "\xE2\x96\x81";
    } else {
      if (frag.compare(i, 3, "\xE2\x96\x81") == 0) literal.push_back(text.size());
      text += frag[i];
    }
  }
  struct Sym {
    size_t pos, len;
    int prev, next;
    bool frozen;  // a literal U+2581: never merged, spelled with byte tokens (else it would
                  // decode as a space)
  };
  // One symbol per valid UTF-8 character and per invalid byte: a lead byte's claimed length
  // swallowed the next bytes (e.g. the U+2581 of a following space, decoded back as "▁").
  std::vector<Sym> sym;
  size_t next_literal = 0;
  for (const unicode::Unit& u : unicode::decode_utf8(text)) {
    const bool frozen = next_literal < literal.size() && literal[next_literal] == u.pos;
    next_literal += frozen;
    sym.push_back({u.pos, u.len, int(sym.size()) - 1, int(sym.size()) + 1, frozen});
  }
  if (sym.empty()) return;
  sym.back().next = -1;
  struct Cand {
    float score;
    int left;
    size_t len;  // length of the merged text when pushed
    bool operator<(const Cand& o) const {
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  std::priority_queue<Cand> heap;
  const auto consider = [&](int l) {
    if (l < 0 || sym[l].next < 0) return;
    const Sym& a = sym[l];
    const Sym& b = sym[a.next];
    if (a.frozen || b.frozen) return;
    const int32_t id = lookup(text.substr(a.pos, a.len + b.len));
    if (id >= 0) heap.push({scores[id], l, a.len + b.len});
  };
  for (int i = 0; i + 1 < int(sym.size()); ++i) consider(i);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Sym& a = sym[c.left];
    if (a.len == 0 || a.next < 0) continue;
    Sym& b = sym[a.next];
    if (a.len + b.len != c.len) continue;  // stale: one side changed since
    a.len += b.len;
    b.len = 0;
    a.next = b.next;
    if (a.next >= 0) sym[a.next].prev = c.left;
    consider(a.prev);
    consider(c.left);
  }
  for (int i = 0; i >= 0; i = sym[i].next) {
    const std::string piece = text.substr(sym[i].pos, sym[i].len);
    if (int32_t id = lookup(piece); id >= 0 && !sym[i].frozen) {
      out.push_back(id);
      continue;
    }
    for (unsigned char byte : piece) {
      if (byte_token[byte] < 0) unencodable_byte(byte);
      out.push_back(byte_token[byte]);
    }
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  const Impl& m = *impl_;
  std::vector<int32_t> out;
  if (add_bos && m.add_bos && m.bos >= 0) out.push_back(m.bos);
  // Split out special tokens; encode the text between them. SentencePiece models get the
  // leading space at the start and after every special token, as llama.cpp does.
  bool after_special = true;
  size_t frag = 0, i = 0;
  const auto flush = [&](size_t end) {
    if (end > frag) {
      const std::string_view piece = text.substr(frag, end - frag);
      if (m.spm)
        m.encode_spm(piece, m.add_space_prefix && after_special, out);
      else
        m.encode_bpe(piece, out);
      after_special = false;
    }
  };
  while (i < text.size()) {
    int32_t hit = -1;
    for (int32_t id : m.specials_by_byte[static_cast<unsigned char>(text[i])]) {
      const std::string& s = m.tokens[id];
      if (text.compare(i, s.size(), s) == 0) {
        hit = id;
        break;
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    flush(i);
    out.push_back(hit);
    after_special = true;
    i += m.tokens[hit].size();
    frag = i;
  }
  flush(text.size());
  return out;
}

std::string Tokenizer::token_to_piece(int32_t id) const {
  const Impl& m = *impl_;
  if (id < 0 || id >= n_vocab()) throw Error("token id " + std::to_string(id) + " out of range");
  const std::string& s = m.tokens[id];
  const int32_t ty = m.types[id];
  if (ty == kControl || ty == kUserDefined || ty == kUnknown) return s;
  if (m.spm) {
    if (ty == kByte && m.byte_token[0] >= 0) {
      unsigned v = 0;
      if (std::sscanf(s.c_str(), "<0x%02X>", &v) == 1) return std::string(1, char(v));
    }
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s.compare(i, 3, "\xE2\x96\x81") == 0) {
        out += ' ';
        i += 2;
      } else {
        out += s[i];
      }
    }
    return out;
  }
  std::string out;
  for (const Unit& u : unicode::decode_utf8(s)) {
    auto it = m.cp_byte.find(u.cp);
    if (it != m.cp_byte.end())
      out += char(it->second);
    else
      out.append(s, u.pos, u.len);  // not in the byte alphabet: keep as written
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  const Impl& m = *impl_;
  std::string out;
  bool after_special = true;
  for (int32_t id : ids) {
    std::string p = token_to_piece(id);
    const int32_t ty = m.types[id];
    const bool special = ty == kControl || ty == kUserDefined || ty == kUnknown;
    if (m.spm && m.add_space_prefix && after_special && !special && !p.empty() && p[0] == ' ')
      p.erase(0, 1);  // the space encode() put in front
    // As encode(): the text after any special token (control or user-defined) got the space.
    after_special = special;
    out += p;
  }
  return out;
}

int32_t Tokenizer::bos() const { return impl_->bos; }
int32_t Tokenizer::eos() const { return impl_->eos; }
int Tokenizer::n_vocab() const { return int(impl_->tokens.size()); }
bool Tokenizer::is_eog(int32_t id) const {
  return id >= 0 && id < n_vocab() && impl_->eog[size_t(id)];
}
bool Tokenizer::is_control(int32_t id) const {
  return id >= 0 && id < n_vocab() && impl_->types[size_t(id)] == kControl;
}
bool Tokenizer::wants_bos() const { return impl_->add_bos && impl_->bos >= 0; }
std::string Tokenizer::model() const { return impl_->spm ? "llama" : "gpt2"; }
std::string Tokenizer::pre() const { return impl_->pre_name; }
const std::string& Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= n_vocab()) throw Error("token id " + std::to_string(id) + " out of range");
  return impl_->tokens[size_t(id)];
}

namespace {

// The default system message a ChatML template inserts when the conversation has none, e.g.
// SmolLM2's "{{ '<|im_start|>system\nYou are a helpful AI assistant ...<|im_end|>\n' }}".
std::string chatml_default_system(const std::string& tmpl) {
  const std::string open = "<|im_start|>system";
  size_t p = tmpl.find(open);
  while (p != std::string::npos) {
    size_t b = p + open.size();
    if (tmpl.compare(b, 1, "\n") == 0)
      b += 1;
    else if (tmpl.compare(b, 2, "\\n") == 0)
      b += 2;
    else {
      p = tmpl.find(open, p + 1);
      continue;
    }
    const size_t e = tmpl.find("<|im_end|>", b);
    if (e == std::string::npos) return "";
    std::string s = tmpl.substr(b, e - b);
    // A literal (no Jinja inside), in a branch for a conversation without a system message.
    if (s.find("{{") != std::string::npos || s.find("{%") != std::string::npos ||
        s.find('\'') != std::string::npos || tmpl.find("!= 'system'") == std::string::npos)
      return "";
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == 'n') {
        out += '\n';
        ++i;
      } else {
        out += s[i];
      }
    }
    return out;
  }
  return "";
}

}  // namespace

std::string Tokenizer::apply_chat_template(
    const std::vector<std::pair<std::string, std::string>>& msgs, bool add_assistant_prompt) const {
  const std::string& tmpl = impl_->chat_template;
  std::string out;
  if (tmpl.find("<|start_header_id|>") != std::string::npos) {  // Llama 3
    for (const auto& [role, content] : msgs)
      out += "<|start_header_id|>" + role + "<|end_header_id|>\n\n" + content + "<|eot_id|>";
    if (add_assistant_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
    return out;
  }
  if (tmpl.find("[INST]") != std::string::npos) {  // Llama 2 / Mistral
    const auto token_text_or = [&](int32_t id, const char* def) {
      return id >= 0 ? impl_->tokens[size_t(id)] : std::string(def);
    };
    std::string system;
    bool first_user = true;
    for (const auto& [role, content] : msgs) {
      if (role == "system") {
        system = content;
      } else if (role == "user") {
        if (!first_user) out += token_text_or(impl_->bos, "<s>");
        out += "[INST] ";
        if (!system.empty()) out += "<<SYS>>\n" + system + "\n<</SYS>>\n\n";
        system.clear();
        out += content + " [/INST]";
        first_user = false;
      } else {
        out += " " + content + " " + token_text_or(impl_->eos, "</s>");
      }
    }
    return out;
  }
  // ChatML (also the fallback when the file has no template, as in llama.cpp).
  if (msgs.empty() || msgs.front().first != "system") {
    const std::string sys = chatml_default_system(tmpl);
    if (!sys.empty()) out += "<|im_start|>system\n" + sys + "<|im_end|>\n";
  }
  for (const auto& [role, content] : msgs)
    out += "<|im_start|>" + role + "\n" + content + "<|im_end|>\n";
  if (add_assistant_prompt) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace tq
