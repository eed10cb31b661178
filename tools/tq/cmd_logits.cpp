// `tq logits`: the logits of every position of a prompt, for checking the forward pass against
// another engine (scripts/verify_reference.py). Writes n_tokens × n_vocab float32 (row-major,
// little endian) to --out and prints {"tokens": [...], "n_vocab": V} on stdout.
#include <cstdio>
#include <fstream>

#include "command.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/paths.h"
#include "model/tokenizer.h"
#include "runtime_flags.h"

namespace {

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("logits", "Dump the logits of every prompt position (float32)");
  struct Opts {
    std::string model, prompt, out;
    std::vector<int32_t> ids;
    tq::cli::RuntimeFlags rt;
  };
  static Opts o;
  cmd->add_option("-m,--model", o.model,
                  std::string("GGUF model (default: ") + tq::kDefaultModelFile + ")");
  cmd->add_option("-p,--prompt", o.prompt, "Prompt text");
  cmd->add_option("--ids", o.ids, "Token ids instead of a prompt")->delimiter(',');
  cmd->add_option("--out", o.out, "Output file (float32 n_tokens × n_vocab)")->required();
  o.rt.add(cmd);
  cmd->callback([] {
    o.rt.apply_threads();
    const std::string mpath = o.model.empty() ? tq::default_model_path() : o.model;
    auto f = tq::GgufFile::open(mpath);
    auto model = tq::LlamaModel::load(*f);
    auto tok = tq::Tokenizer::from_gguf(*f);
    std::vector<int32_t> ids = o.ids.empty() ? tok->encode(o.prompt, true) : o.ids;
    if (ids.empty()) throw tq::Error("no tokens (give -p or --ids)");
    tq::KvCacheOptions co = o.rt.cache_options();
    co.max_tokens = int(ids.size());
    co.max_seqs = 1;
    tq::KvCache cache(model->kv_shape(), co);
    const int seq = cache.new_seq();
    std::vector<float> hidden;
    model->forward(cache, seq, ids.data(), int(ids.size()), &hidden, nullptr);
    const int V = model->hparams().n_vocab;
    std::vector<float> logits(ids.size() * size_t(V));
    model->logits(hidden.data(), int(ids.size()), logits.data());
    std::ofstream out(o.out, std::ios::binary);
    out.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * 4));
    if (!out) throw tq::Error("cannot write '" + o.out + "'");
    tq::cli::print_json({{"tokens", ids}, {"n_vocab", V}});
  });
}
TQ_COMMAND(setup, 95);

}  // namespace
