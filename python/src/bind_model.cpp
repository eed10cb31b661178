// turboquant._core.Model: a GGUF model with its tokenizer, running what the `tq` tool runs
// (generate, perplexity, compare, calibrate) and returning the numbers of the tool's --json.
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>
#include <xxhash.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "codecs/kvquant.h"
#include "common.h"
#include "eval/calibrate.h"
#include "eval/compare.h"
#include "eval/generate.h"
#include "eval/perplexity.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/paths.h"
#include "model/tokenizer.h"

namespace tqpy {

nb::dict polarvq_params_dict(const tq::PolarVqParams& p);
tq::PolarVqParams polarvq_params(const nb::dict& d);

namespace {

std::string read_text(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw tq::Error("cannot read " + what + " '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct PyModel {
  std::string path;
  std::unique_ptr<tq::GgufFile> f;
  std::unique_ptr<tq::LlamaModel> model;
  std::unique_ptr<tq::Tokenizer> tok;

  uint64_t fingerprint() const {  // as `tq perplexity` / `tq compare`: every tensor
    std::vector<std::string> names;
    for (const auto& t : f->tensors()) names.push_back(t.name);
    return f->fingerprint(names);
  }

  // Cache options from keywords, codebooks loaded and checked against this model as the CLI
  // does (a path), or checked (a Codebooks object).
  tq::KvCacheOptions options(const nb::dict& kw) const {
    std::string cb_path;
    tq::KvCacheOptions o = cache_options(kw, &cb_path);
    require_codebooks(o, !cb_path.empty());
    tq::validate_cache_options(o, model->hparams().n_layer);
    const auto types = option_types(o);
    if (!cb_path.empty()) {
      o.codebooks = tq::load_codebooks(cb_path, *f, *model, types);
    } else if (o.codebooks) {
      const auto& hp = model->hparams();
      if (o.codebooks->model_fingerprint != tq::codebook_fingerprint(*f, hp.n_layer))
        throw tq::Error("the codebooks were calibrated for another model (fingerprint mismatch "
                        "with '" + path + "')");
    }
    return o;
  }

  // The text of a call: text= wins, else the file (default: `fallback`).
  std::string text_of(const std::string& text, const std::string& file, std::string fallback,
                      std::string& label) const {
    if (!text.empty()) {
      label = "<text>";
      return text;
    }
    label = file.empty() ? fallback : file;
    return read_text(label, "text file");
  }
};

nb::dict row_dict(const tq::CompareRow& r, bool pareto, int ctx, long scored) {
  nb::dict d;
  d["label"] = r.label;
  d["ctk"] = r.ctk;
  d["ctv"] = r.ctv;
  d["preset"] = r.preset;
  d["reference"] = r.reference;
  d["boundary_layers"] = r.boundary_layers;
  d["residual"] = r.residual;
  d["sinks"] = r.sinks;
  d["key_centring"] = r.key_centring;
  d["centred_layers"] = r.centred_layers;
  d["key_means"] = r.key_means;
  d["bpv"] = r.bpv;
  d["bpv_k"] = r.bpv_k;
  d["bpv_v"] = r.bpv_v;
  d["compression"] = r.compression;
  d["kv_bytes"] = r.kv_bytes;
  d["kv_mib_8192"] = r.kv_mib_8192;
  d["ppl"] = r.ppl;
  d["ppl_stderr"] = r.ppl_stderr;
  d["dppl_pct"] = r.dppl_pct;
  d["kld_mean"] = r.kld_mean;
  d["kld_p99"] = r.kld_p99;
  d["top1"] = r.top1;
  d["decode_tps"] = r.decode_tps;
  d["prefill_tps"] = r.prefill_tps;
  d["seconds"] = r.seconds;
  d["pareto"] = pareto;
  d["ctx"] = ctx;
  d["tokens_scored"] = scored;
  return d;
}

}  // namespace

void bind_model(nb::module_& m) {
  nb::class_<PyModel>(m, "Model",
                      "A GGUF model (llama, qwen2 architectures) with its tokenizer, run by the "
                      "engine's CPU forward pass; methods return what `tq ... --json` prints.")
      .def(
          "__init__",
          [](PyModel* self, const std::string& path) {
            const std::string p = path.empty() ? tq::default_model_path() : path;
            auto f = tq::GgufFile::open(p);
            std::unique_ptr<tq::LlamaModel> model;
            {
              nb::gil_scoped_release r;
              model = tq::LlamaModel::load(*f);
            }
            auto tok = tq::Tokenizer::from_gguf(*f);
            new (self) PyModel{p, std::move(f), std::move(model), std::move(tok)};
          },
          nb::arg("path") = "",
          "Model(path=''): loads a GGUF file ('' = the default model, $TQ_MODEL or "
          "models/SmolLM2-135M-Instruct.Q4_1.gguf).")
      .def_prop_ro("path", [](const PyModel& s) { return s.path; })
      .def_prop_ro(
          "hparams",
          [](const PyModel& s) {
            const auto& h = s.model->hparams();
            nb::dict d;
            d["arch"] = h.arch;
            d["n_layer"] = h.n_layer;
            d["n_embd"] = h.n_embd;
            d["n_ff"] = h.n_ff;
            d["n_head"] = h.n_head;
            d["n_kv_head"] = h.n_kv_head;
            d["head_dim"] = h.head_dim;
            d["n_vocab"] = h.n_vocab;
            d["n_ctx_train"] = h.n_ctx_train;
            d["rope_base"] = h.rope_base;
            d["rope"] = h.rope == tq::RopePairing::kNeox ? "neox" : "normal";
            return d;
          },
          "Hyperparameters: arch, n_layer, n_embd, n_ff, n_head, n_kv_head, head_dim, n_vocab, "
          "n_ctx_train, rope_base, rope.")
      .def(
          "tokenize",
          [](const PyModel& s, const std::string& text, bool add_bos) {
            return s.tok->encode(text, add_bos);
          },
          nb::arg("text"), nb::arg("add_bos") = true,
          "Token ids of a text (BOS only if the model wants one).")
      .def(
          "detokenize", [](const PyModel& s, const std::vector<int32_t>& ids) {
            for (int32_t id : ids)
              if (id < 0 || id >= s.tok->n_vocab())
                throw tq::Error("token id " + std::to_string(id) + " outside the vocabulary");
            return nb::bytes(s.tok->decode(ids).data(), s.tok->decode(ids).size());
          },
          nb::arg("ids"), "The bytes of the tokens' text.")
      .def(
          "logits",
          [](const PyModel& s, const std::vector<int32_t>& tokens, const nb::kwargs& kw) {
            if (tokens.empty()) throw tq::Error("logits: no tokens");
            const auto& hp = s.model->hparams();
            for (int32_t id : tokens)
              if (id < 0 || id >= hp.n_vocab)
                throw tq::Error("token id " + std::to_string(id) + " outside the vocabulary");
            if (int(tokens.size()) > hp.n_ctx_train)
              throw tq::Error("logits: more tokens than the model's context length");
            tq::KvCacheOptions o = s.options(kw);
            o.max_tokens = int(tokens.size());
            o.max_seqs = 1;
            auto out = new_array<float>({size_t(hp.n_vocab)});
            nb::gil_scoped_release r;
            tq::KvCache cache(s.model->kv_shape(), o);
            std::vector<float> logits;
            s.model->forward(cache, cache.new_seq(), tokens.data(), int(tokens.size()), nullptr,
                             &logits);
            std::copy(logits.begin(), logits.end(), out.data());
            return out;
          },
          nb::arg("tokens"), nb::arg("kwargs"),
          "Logits (n_vocab,) of the last token after one prefill of `tokens` through a fresh "
          "cache with the given cache options.")
      .def(
          "generate",
          [](const PyModel& s, const std::string& prompt, int n_predict, float temp, float top_p,
             bool chat, int ctx, const nb::kwargs& kw) {
            tq::GenerateOptions go;
            go.cache = s.options(kw);
            go.n_predict = n_predict;
            go.temp = temp;
            go.top_p = top_p;
            go.ctx = ctx;
            go.seed = go.cache.seed;  // as the CLI: --seed is the cache's and the sampler's
            const std::string text =
                chat ? s.tok->apply_chat_template({{"user", prompt}}, true) : prompt;
            const std::vector<int32_t> ids = s.tok->encode(text, true);
            tq::GenerateResult r;
            {
              nb::gil_scoped_release rel;
              r = tq::run_generate(*s.model, *s.tok, ids, go);
            }
            nb::dict d;
            d["prompt"] = prompt;
            const std::string out = s.tok->decode(r.tokens);
            d["text"] = nb::str(out.data(), out.size());
            d["tokens"] = r.tokens;
            d["prompt_tokens"] = r.prompt_tokens;
            d["prefill_tps"] = r.prefill_tps;
            d["decode_tps"] = r.decode_tps;
            d["decode_cpu_tps"] = r.decode_cpu_tps;
            d["ctk"] = go.cache.type_k;
            d["ctv"] = go.cache.type_v;
            d["kv_bytes"] = r.kv_bytes;
            d["bpv_k"] = r.bpv_k;
            d["bpv_v"] = r.bpv_v;
            return d;
          },
          nb::arg("prompt"), nb::arg("n_predict") = 64, nb::arg("temp") = 0.f,
          nb::arg("top_p") = 0.95f, nb::arg("chat") = false, nb::arg("ctx") = 0,
          nb::arg("kwargs"),
          "`tq generate --json`: greedy (temp=0) or sampled generation; cache options as "
          "keywords (k, v, boundary, residual, sinks, ...; seed is also the sampler's).")
      .def(
          "perplexity",
          [](const PyModel& s, const std::string& file, const std::string& text, int ctx,
             int chunks, const std::string& kld_base, const nb::kwargs& kw) {
            tq::PerplexityOptions po;
            po.cache = s.options(kw);
            std::string label;
            const std::string body = s.text_of(text, file, tq::default_text_path(), label);
            const std::vector<int32_t> tokens = s.tok->encode(body, true);
            po.n_ctx = ctx;
            po.n_chunks = chunks;
            po.kld_base = kld_base;
            po.progress = false;
            po.model_fingerprint = s.fingerprint();
            tq::PerplexityResult r;
            {
              nb::gil_scoped_release rel;
              r = tq::run_perplexity(*s.model, tokens, s.tok->wants_bos(), s.tok->bos(), po);
            }
            nb::dict d;
            d["model"] = s.path;
            d["text"] = label;
            d["ctk"] = po.cache.type_k;
            d["ctv"] = po.cache.type_v;
            d["ctx"] = r.n_ctx;
            d["chunks"] = r.chunks;
            d["ppl"] = r.ppl;
            d["ppl_stderr"] = r.ppl_stderr;
            d["kld_mean"] = r.has_kld ? nb::cast(r.kld_mean) : nb::none();
            d["kld_p99"] = r.has_kld ? nb::cast(r.kld_p99) : nb::none();
            d["top1"] = r.has_kld ? nb::cast(r.top1) : nb::none();
            d["bpv_k"] = r.bpv_k;
            d["bpv_v"] = r.bpv_v;
            d["kv_bytes"] = r.kv_bytes;
            d["key_centring"] = tq::key_centring_name(po.cache.key_centring);
            d["centred_layers"] = r.centred_layers;
            d["tokens"] = r.tokens;
            d["prefill_tps"] = r.prefill_tps;
            d["seconds"] = r.seconds;
            d["wrote_kld_base"] = r.wrote_base;
            return d;
          },
          nb::arg("file") = "", nb::arg("text") = "", nb::arg("ctx") = 512,
          nb::arg("chunks") = -1, nb::arg("kld_base") = "", nb::arg("kwargs"),
          "`tq perplexity --json`: perplexity (and KLD vs a base file) of a cache type over a "
          "text file (default data/eval.txt) or text=; chunks of ctx tokens.")
      .def(
          "compare",
          [](const PyModel& s, const std::string& types, const std::string& file,
             const std::string& text, int ctx, int chunks, int decode, const nb::kwargs& kw) {
            if (types.empty()) throw tq::Error("compare: --types is required");
            if (kw.contains("k") || kw.contains("v"))
              throw tq::Error("compare: give the cache types with types= (e.g. 'q8_0/turbo3'), "
                              "not k=/v=");
            const auto entries = tq::parse_type_list(types);
            if (ctx < 4) throw tq::Error("compare: -c must be at least 4");
            if (chunks == 0 || chunks < -1)
              throw tq::Error("compare: --chunks must be at least 1");
            if (decode < 0) throw tq::Error("compare: --decode must be >= 0");
            tq::CompareOptions co;
            co.n_ctx = ctx;
            co.n_chunks = chunks;
            std::string cb_path;
            co.cache = cache_options(kw, &cb_path);
            co.residual_given = kw.contains("residual");
            co.sinks_given = kw.contains("sinks");
            co.decode_tokens = decode;
            std::vector<std::string> row_types;
            for (const auto& e : entries)
              for (const auto& t : option_types(tq::row_cache_options(e, co)))
                row_types.push_back(t);
            for (const auto& t : row_types)
              tq::check_calibration_given(t, !cb_path.empty() || co.cache.codebooks);
            if (!cb_path.empty())
              co.cache.codebooks = tq::load_codebooks(cb_path, *s.f, *s.model, row_types);
            for (const auto& e : entries)
              tq::validate_cache_options(tq::row_cache_options(e, co),
                                         s.model->hparams().n_layer);
            co.model_fingerprint = s.fingerprint();
            std::string label;
            const std::string body = s.text_of(text, file, tq::default_text_path(), label);
            const std::vector<int32_t> tokens = s.tok->encode(body, true);
            tq::CompareResult r;
            {
              nb::gil_scoped_release rel;
              r = tq::run_compare(*s.model, tokens, s.tok->wants_bos(), s.tok->bos(), entries,
                                  co);
            }
            const auto front = tq::pareto_frontier(r.rows);
            nb::list rows;
            for (size_t i = 0; i < r.rows.size(); ++i)
              rows.append(row_dict(r.rows[i],
                                   std::find(front.begin(), front.end(), i) != front.end(),
                                   r.n_ctx, r.tokens_scored));
            nb::dict d;
            d["model"] = s.path;
            d["text"] = label;
            d["ctx"] = r.n_ctx;
            d["chunks"] = r.chunks;
            d["tokens_scored"] = r.tokens_scored;
            d["tokens_run"] = r.tokens_run;
            d["decode_tokens"] = r.decode_tokens;
            d["rows"] = rows;
            return d;
          },
          nb::arg("types"), nb::arg("file") = "", nb::arg("text") = "", nb::arg("ctx") = 512,
          nb::arg("chunks") = -1, nb::arg("decode") = 16, nb::arg("kwargs"),
          "`tq compare --json`: the f16 reference, then every row of `types` ('turbo3,q8_0/"
          "turbo3,turboquant_k3v4_nc,kivi2@R=64', ...) over the same chunks.")
      .def(
          "calibrate",
          [](const PyModel& s, const nb::dict& params, const std::string& file,
             const std::string& text, int samples, int ctx, uint64_t seed, size_t max_per_head,
             size_t vq_points) {
            const auto t0 = std::chrono::steady_clock::now();
            if (samples <= 0) throw tq::Error("--samples must be positive");
            if (ctx < 2) throw tq::Error("-c must be at least 2");
            if (max_per_head < 16) throw tq::Error("--max-per-head must be at least 16");
            const bool kvq = params.contains("preset") &&
                             nb::cast<std::string>(params["preset"]) == "kvquant" &&
                             params.size() == 1;
            tq::PolarVqParams p;
            if (!kvq) p = polarvq_params(params);
            std::string label;
            const std::string body = s.text_of(text, file, tq::default_calib_path(), label);
            const std::vector<int32_t> tokens = s.tok->encode(body, false);
            const auto& hp = s.model->hparams();
            tq::SampleOptions so;
            so.n_seq = samples;
            so.ctx = ctx;
            so.seed = seed;
            so.max_per_head = max_per_head;
            so.center_keys = !kvq;  // polar-vq keys are mean-centred in the cache by default
            tq::CodebookFile cb;
            double sample_s = 0;
            size_t per_head = 0;
            {
              nb::gil_scoped_release rel;
              const auto ts = std::chrono::steady_clock::now();
              auto heads = tq::collect_kv_samples(*s.model, tokens, so);
              sample_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts)
                             .count();
              per_head = heads.empty() ? 0 : heads[0].n;
              tq::CalibrateOptions co;
              co.seed = seed;
              co.max_vq_points = vq_points;
              cb = kvq ? tq::calibrate_kvquant(s.model->kv_shape(), heads, co)
                       : tq::calibrate_polarvq(p, hp.n_layer, hp.n_kv_head, hp.head_dim,
                                               hp.rope, heads, co);
            }
            cb.model_fingerprint = tq::codebook_fingerprint(*s.f, hp.n_layer);
            cb.corpus_hash = XXH64(body.data(), body.size(), 0);
            cb.samples = uint64_t(samples);
            cb.ctx = uint32_t(ctx);
            char fp[32], ch[32];
            std::snprintf(fp, sizeof fp, "%016llx", (unsigned long long)cb.model_fingerprint);
            std::snprintf(ch, sizeof ch, "%016llx", (unsigned long long)cb.corpus_hash);
            nb::dict d;
            d["model"] = s.path;
            d["text"] = label;
            d["preset"] = cb.params.preset;
            d["samples"] = samples;
            d["ctx"] = ctx;
            d["seed"] = seed;
            d["text_tokens"] = tokens.size();
            d["vectors_per_head"] = per_head;
            d["model_fingerprint"] = fp;
            d["corpus_hash"] = ch;
            d["sampling_seconds"] = sample_s;
            d["codebooks"] = Codebooks{std::make_shared<const tq::CodebookFile>(std::move(cb)), ""};
            d["seconds"] =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            return d;
          },
          nb::arg("params"), nb::arg("file") = "", nb::arg("text") = "", nb::arg("samples") = 128,
          nb::arg("ctx") = 512, nb::arg("seed") = 1, nb::arg("max_per_head") = 4096,
          nb::arg("vq_points") = 4096,
          "`tq calibrate --json`: samples windows of a text (default data/calib.txt), learns "
          "the codebooks of params ({'preset': 'balanced'}, {'preset': 'kvquant'}, or explicit "
          "polar-vq parameters) and returns the JSON fields with 'codebooks' (a Codebooks).")
      .def("__repr__", [](const PyModel& s) { return "Model('" + s.path + "')"; });
}

}  // namespace tqpy
