// `tq info [-m MODEL] [--json] [--metadata]`: what a GGUF model is — format version,
// architecture, hyperparameters, tokenizer, tensor types and sizes.
// `tq info --codebooks FILE [--json]`: the header of a polar-vq codebook file (`tq calibrate`).
#include <cstdio>
#include <map>
#include <memory>

#include "codecs/polarvq_file.h"
#include "command.h"
#include "model/gguf.h"
#include "model/paths.h"
#include "model/tokenizer.h"
#include "tq/error.h"

namespace {

std::string hex64(uint64_t v) {
  char b[32];
  std::snprintf(b, sizeof b, "%016llx", (unsigned long long)v);
  return b;
}

// The header of a codebook file: what it was made for and from.
void print_codebooks(const std::string& path, bool json) {
  const tq::CodebookFile f = tq::read_codebook_file(path);
  const tq::PolarVqParams& p = f.params;
  const bool kvq = p.preset == tq::kKvqPreset;  // kvquant files carry no polar-vq parameters
  const nlohmann::json params = kvq ? nlohmann::json::object() : nlohmann::json{
      {"mag_bits", p.mag_bits},     {"angle_bits", p.angle_bits},
      {"group_size", p.group_size}, {"key_block_tokens", p.key_block_tokens},
      {"value_bits", p.value_bits}, {"value_group", p.value_group},
      {"vq_size", p.vq_size},       {"vq_dim", p.vq_dim},
      {"subspaces", p.subspaces},   {"key_vq_dim", p.key_vq_dim},
      {"vq_keys", p.vq_keys},       {"vq_values", p.vq_values}};
  if (json) {
    tq::cli::print_json({{"path", path},
                         {"format_version", tq::kCodebookFormatVersion},
                         {"preset", p.preset},
                         {"params", params},
                         {"model_fingerprint", hex64(f.model_fingerprint)},
                         {"corpus_hash", hex64(f.corpus_hash)},
                         {"samples", f.samples},
                         {"ctx", f.ctx},
                         {"n_layer", f.n_layer},
                         {"n_head_kv", f.n_head_kv},
                         {"head_dim", f.head_dim},
                         {"rope", f.rope == tq::RopePairing::kNeox ? "neox" : "normal"}});
    return;
  }
  std::printf("file            %s (%s, format v%u)\n", path.c_str(),
              kvq ? "kvquant calibration" : "polar-vq codebooks", tq::kCodebookFormatVersion);
  std::printf("preset          %s\n", p.preset.c_str());
  if (kvq)
    std::printf("contents        per-channel key ranges, value ranges and levels for %zu heads\n",
                f.kvq.size());
  else
    std::printf("parameters      %s\n", params.dump().c_str());
  std::printf("calibration     %llu samples x %u tokens (corpus hash %s)\n",
              (unsigned long long)f.samples, f.ctx, hex64(f.corpus_hash).c_str());
  std::printf("model           fingerprint %s, %u layers x %u KV heads, head_dim %u, rope %s\n",
              hex64(f.model_fingerprint).c_str(), f.n_layer, f.n_head_kv, f.head_dim,
              f.rope == tq::RopePairing::kNeox ? "neox" : "normal");
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Show a GGUF model's format, hyperparameters, "
                                         "tokenizer and tensor types");
  static std::string model, codebooks;
  static bool json = false, metadata = false;
  cmd->add_option("-m,--model", model,
                  std::string("GGUF model file (default: ") + tq::kDefaultModelFile + ")");
  cmd->add_option("--codebooks", codebooks,
                  "Instead: show the header of a polar-vq codebook file (`tq calibrate`): "
                  "preset, parameters, samples, calibration context, model fingerprint");
  cmd->add_flag("--json", json, "Print one JSON document");
  cmd->add_flag("--metadata", metadata, "Also list every metadata key with its value");
  cmd->callback([] {
    if (!codebooks.empty()) return print_codebooks(codebooks, json);
    const std::string path = model.empty() ? tq::default_model_path() : model;
    auto f = tq::GgufFile::open(path);
    const std::string arch = f->get_string("general.architecture", "");
    const auto key = [&](const std::string& k) { return arch + "." + k; };
    const int64_t n_layer = f->get_int(key("block_count"), 0);
    const int64_t n_embd = f->get_int(key("embedding_length"), 0);
    const int64_t n_head = f->get_int(key("attention.head_count"), 0);
    const int64_t n_head_kv = f->get_int(key("attention.head_count_kv"), n_head);
    const int64_t head_dim = f->get_int(key("attention.key_length"),
                                        n_head > 0 ? n_embd / n_head : 0);
    const int64_t n_ff = f->get_int(key("feed_forward_length"), 0);
    const int64_t n_ctx = f->get_int(key("context_length"), 0);
    const double rope_base = f->get_float(key("rope.freq_base"), 10000.0);
    const int64_t rope_dim = f->get_int(key("rope.dimension_count"), head_dim);
    // llama.cpp's rope style per architecture: adjacent pairs ("normal") for llama, halves
    // ("neox") for qwen2 and most others.
    const std::string rope_type = (arch == "llama" || arch == "mistral") ? "normal" : "neox";
    const double eps = f->get_float(key("attention.layer_norm_rms_epsilon"), 0.0);

    std::string tok_model = f->get_string("tokenizer.ggml.model", "");
    std::string tok_pre = f->get_string("tokenizer.ggml.pre", "");
    int64_t n_vocab = f->has("tokenizer.ggml.tokens")
                          ? int64_t(f->array_size("tokenizer.ggml.tokens")) : 0;
    std::string tok_error;
    std::unique_ptr<tq::Tokenizer> tok;
    try {
      tok = tq::Tokenizer::from_gguf(*f);
    } catch (const tq::Error& e) {
      tok_error = e.what();
    }
    std::string chat = "none";
    const std::string tmpl = f->get_string("tokenizer.chat_template", "");
    if (tmpl.find("<|start_header_id|>") != std::string::npos) chat = "llama3";
    else if (tmpl.find("[INST]") != std::string::npos) chat = "llama2";
    else if (tmpl.find("<|im_start|>") != std::string::npos) chat = "chatml";
    else if (!tmpl.empty()) chat = "other (ChatML used)";

    std::map<std::string, int> hist;
    int64_t n_params = 0;
    uint64_t tensor_bytes = 0;
    for (const auto& t : f->tensors()) {
      ++hist[tq::ggml_type_name(t.type)];
      n_params += t.n_elements();
      tensor_bytes += t.nbytes;
    }

    if (json) {
      nlohmann::json types = nlohmann::json::object();
      for (const auto& [k, v] : hist) types[k] = v;
      nlohmann::json j = {
          {"path", path},
          {"file_bytes", f->file_size()},
          {"gguf_version", f->version()},
          {"alignment", f->alignment()},
          {"architecture", arch},
          {"name", f->get_string("general.name", "")},
          {"n_layer", n_layer},
          {"n_embd", n_embd},
          {"n_head", n_head},
          {"n_head_kv", n_head_kv},
          {"head_dim", head_dim},
          {"n_ff", n_ff},
          {"context_length", n_ctx},
          {"rope_freq_base", rope_base},
          {"rope_dim", rope_dim},
          {"rope_type", rope_type},
          {"rms_eps", eps},
          {"tokenizer", {{"model", tok_model},
                         {"pre", tok_pre},
                         {"n_vocab", n_vocab},
                         {"bos", tok ? tok->bos() : -1},
                         {"eos", tok ? tok->eos() : -1},
                         {"add_bos", tok ? tok->wants_bos() : false},
                         {"chat_template", chat},
                         {"error", tok_error.empty() ? nlohmann::json(nullptr)
                                                     : nlohmann::json(tok_error)}}},
          {"n_tensors", f->tensors().size()},
          {"n_params", n_params},
          {"tensor_bytes", tensor_bytes},
          {"tensor_types", types}};
      if (metadata) {
        nlohmann::json m = nlohmann::json::object();
        for (const auto& k : f->keys()) m[k] = f->value_summary(k);
        j["metadata"] = m;
      }
      tq::cli::print_json(j);
      return;
    }
    std::printf("file            %s (%.1f MiB)\n", path.c_str(),
                double(f->file_size()) / 1048576.0);
    std::printf("format          GGUF v%u, alignment %zu, %zu metadata keys\n", f->version(),
                f->alignment(), f->keys().size());
    std::printf("architecture    %s (%s)\n", arch.c_str(),
                f->get_string("general.name", "unnamed").c_str());
    std::printf("layers          %lld\n", (long long)n_layer);
    std::printf("embedding       %lld (feed-forward %lld)\n", (long long)n_embd, (long long)n_ff);
    std::printf("heads           %lld query, %lld KV (GQA group %lld), head_dim %lld\n",
                (long long)n_head, (long long)n_head_kv,
                (long long)(n_head_kv > 0 ? n_head / n_head_kv : 0), (long long)head_dim);
    std::printf("context length  %lld\n", (long long)n_ctx);
    std::printf("rope            base %g, %lld dims, %s\n", rope_base, (long long)rope_dim,
                rope_type.c_str());
    std::printf("rms_norm eps    %g\n", eps);
    std::printf("tokenizer       %s (pre %s), %lld tokens, bos %d, eos %d, add_bos %s, chat %s\n",
                tok_model.c_str(), tok_pre.empty() ? "-" : tok_pre.c_str(), (long long)n_vocab,
                tok ? tok->bos() : -1, tok ? tok->eos() : -1,
                tok && tok->wants_bos() ? "yes" : "no", chat.c_str());
    if (!tok_error.empty()) std::printf("                (unusable: %s)\n", tok_error.c_str());
    std::printf("tensors         %zu, %.1f M parameters, %.1f MiB\n", f->tensors().size(),
                double(n_params) / 1e6, double(tensor_bytes) / 1048576.0);
    std::printf("tensor types   ");
    for (const auto& [k, v] : hist) std::printf(" %s: %d", k.c_str(), v);
    std::printf("%s\n", hist.empty() ? " none" : "");
    if (metadata) {
      std::printf("\nmetadata:\n");
      for (const auto& k : f->keys())
        std::printf("  %-44s %s\n", k.c_str(), f->value_summary(k).c_str());
    }
  });
}
TQ_COMMAND(setup, 30);

}  // namespace
