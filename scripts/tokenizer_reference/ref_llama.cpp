// Reference token ids from llama.cpp (libllama, vocab only): one line of ids per input line
// (each input line is a hex-encoded UTF-8 string). Usage: ref_llama VOCAB.gguf STRINGS.hex (built by run.sh with LLAMA_CPP=1)
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>
#include "llama.h"
int main(int argc, char** argv) {
  llama_backend_init();
  auto mp = llama_model_default_params();
  mp.vocab_only = true;
  llama_model* m = llama_model_load_from_file(argv[1], mp);
  if (!m) { std::fprintf(stderr, "load failed\n"); return 1; }
  const llama_vocab* v = llama_model_get_vocab(m);
  std::ifstream in(argv[2]);
  std::string line;
  while (std::getline(in, line)) {
    std::string s;
    for (size_t i = 0; i + 1 < line.size(); i += 2) s += char(std::stoi(line.substr(i, 2), nullptr, 16));
    std::vector<llama_token> t(s.size() + 16);
    int n = llama_tokenize(v, s.data(), int(s.size()), t.data(), int(t.size()), false, true);
    if (n < 0) { std::printf("ERR\n"); continue; }
    for (int i = 0; i < n; ++i) std::printf(i ? " %d" : "%d", t[i]);
    std::printf("\n");
  }
  return 0;
}
