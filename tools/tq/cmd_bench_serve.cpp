// `tq bench serve --device cuda --synthetic llama3-8b`: end-to-end decode throughput of the GPU
// runtime per cache type and batch size at a long context (SPEC §9, issue 14).
//
// The B sequences are brought to the context length by appending random K/V directly to every
// layer's cache (GpuRuntime::fill_random) instead of running B prompts of 32k tokens; each
// timed decode step then runs the whole model (32 layers: GEMMs, fused kernels, append and
// attention over the compressed cache, sampling) for all B sequences, as a CUDA graph. For each
// type: the largest batch of ctx-token sequences that the free GPU memory holds; per (type, B):
// median ms per step over --steps steps, tok/s = B / step time, KV GB read per step, and the
// roofline tok/s (weights + KV bytes per step over the copy bandwidth measured in the same run).
// Prefill tok/s: one prompt of --prefill tokens through chunked prefill.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "command.h"
#include "tq/error.h"
#ifdef TQ_HAVE_GPU
#include "gpu/cpu_reference.h"
#include "gpu/runtime.h"
#include "model/gguf.h"
#endif

namespace {

struct Opts {
  std::string device = "cuda";
  std::string synthetic;
  std::string model;  // a GGUF instead of a synthetic shape
  std::string types = "bf16,q8_0,q4_0,fp8_e4m3,turbo2,turbo3,turbo4";
  std::string batch = "1,8,16,max";
  std::string out;
  std::string write_gguf;  // write the synthetic model (with a byte-level tokenizer) and stop
  std::string pytorch;     // JSON of bench/gpu/pytorch_anchor.py to merge
  int ctx = 32768;
  int steps = 20;
  int prefill = 2048;
  int chunk = 512;
  int max_batch_cap = 1024;
  double reserve_gib = 3.0;
  bool no_graphs = false;
  bool no_small_linear = false;
  bool no_pdl = false;
  std::string decode_grid = "auto";
  bool eager_too = false;
  bool json = false;
  uint64_t seed = 1;
};

#ifdef TQ_HAVE_GPU
std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) v.push_back(item);
  if (v.empty()) throw tq::Error("empty list '" + s + "'");
  return v;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

void bench_serve(const Opts& o) {
  using namespace tq::gpu;
  if (o.device != "cuda") throw tq::Error("bench serve: only --device cuda is implemented");
  if (o.synthetic.empty() == o.model.empty())
    throw tq::Error("bench serve: give one of --synthetic NAME and -m FILE");
  if (!gpu_available()) throw tq::Error("bench serve: no CUDA GPU is available");
  if (o.ctx <= 0 || o.steps <= 0 || o.prefill < 0 || o.chunk <= 0)
    throw tq::Error("bench serve: --ctx, --steps, --chunk must be positive");
  if (!o.write_gguf.empty()) {
    if (o.synthetic.empty()) throw tq::Error("bench serve: --write-gguf needs --synthetic NAME");
    const tq::LlamaHparams shp = synthetic_hparams(o.synthetic);
    write_gguf(shp, GpuModel::synthetic(shp, o.seed)->download(), o.write_gguf, true);
    std::fprintf(stderr, "wrote %s (synthetic %s, seed %llu, byte-level tokenizer)\n",
                 o.write_gguf.c_str(), o.synthetic.c_str(), (unsigned long long)o.seed);
    return;
  }
  FILE* tab = o.json ? stderr : stdout;  // --json: stdout holds the JSON document alone
  std::unique_ptr<GpuModel> model;
  if (!o.model.empty()) model = GpuModel::from_gguf(*tq::GgufFile::open(o.model));
  const tq::LlamaHparams hp = model ? model->hparams() : synthetic_hparams(o.synthetic);
  const std::vector<std::string> types = split(o.types), batches = split(o.batch);
  for (const std::string& b : batches)
    if (b != "max" && (b.find_first_not_of("0123456789") != std::string::npos || std::stoi(b) <= 0))
      throw tq::Error("bench serve: --batch entries are positive integers or 'max', got '" + b +
                      "'");
  for (const std::string& t : types) page_bytes_for(t, hp);  // unknown types fail up front

  if (!model) model = GpuModel::synthetic(hp, o.seed);
  const double copy = measure_copy_tbps(size_t(2) << 30);
  nlohmann::json J;
  J["gpu"] = gpu_name();
  J["copy_tbps"] = copy;
  J["model"] = o.model.empty() ? o.synthetic : o.model;
  J["ctx"] = o.ctx;
  J["steps"] = o.steps;
  J["decode_grid"] = o.decode_grid;
  J["small_linear"] = !o.no_small_linear;
  J["pdl"] = !o.no_pdl;
  J["weights_gb"] = double(model->weight_bytes()) / 1e9;
  J["fill"] = "random K/V appended to every layer's cache at the context length (no prefill)";
  J["rows"] = nlohmann::json::array();
  J["max_batch"] = nlohmann::json::object();
  J["prefill"] = nlohmann::json::array();
  J["graphs"] = nlohmann::json::object();
  std::fprintf(stderr, "# tq bench serve: %s, %s, ctx %d, copy %.2f TB/s, weights %.2f GB\n",
               J["gpu"].get<std::string>().c_str(), J["model"].get<std::string>().c_str(), o.ctx,
               copy, double(model->weight_bytes()) / 1e9);
  std::fprintf(tab, "%-9s %5s %9s %10s %8s %12s %6s\n", "type", "B", "tok/s", "ms/step", "KV GB",
               "roofline t/s", "% roof");
  std::fflush(tab);
  const int runs = int(batches.size());
  for (const std::string& t : types) {
    const size_t pb = page_bytes_for(t, hp) * size_t(hp.n_layer);
    // every batch run adds (2 warm-up + steps) tokens to the first sequences
    const int ctx_max = o.ctx + (o.eager_too ? 2 : 1) * runs * (o.steps + 2) + 1;
    const int pps = (ctx_max + 31) / 32;
    size_t free_b = 0, total_b = 0;
    device_memory(&free_b, &total_b);
    const double usable = double(free_b) - o.reserve_gib * double(1ull << 30);
    const int fit = usable > 0 ? int(usable / (double(pps) * double(pb))) : 0;
    const int max_b = std::min(fit, o.max_batch_cap);
    J["max_batch"][t] = fit;
    if (max_b < 1) {
      std::fprintf(tab, "%-9s: no %d-token sequence fits in %.1f GB free\n", t.c_str(), o.ctx,
                   double(free_b) / 1e9);
      continue;
    }
    {
      RuntimeConfig rc;
      rc.cache_type = t;
      rc.max_seqs = max_b;
      rc.max_ctx = pps * 32;
      rc.n_pages = max_b * pps;
      rc.max_chunk = 16;
      rc.graphs = !o.no_graphs;
      rc.decode_grid = o.decode_grid;
      rc.small_linear = !o.no_small_linear;
      rc.pdl = !o.no_pdl;
      GpuRuntime rt(*model, rc);
      std::vector<int> seqs;
      for (int b = 0; b < max_b; ++b) seqs.push_back(rt.new_seq());
      const auto f0 = std::chrono::steady_clock::now();
      rt.fill_random(seqs, o.ctx, o.seed + 17);
      const double fill_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - f0).count();
      std::fprintf(stderr, "  %s: %d sequences of %d tokens filled in %.1f s (%.1f GB of KV)\n",
                   t.c_str(), max_b, o.ctx, fill_s, double(rt.pool_bytes()) / 1e9);
      for (const std::string& bs : batches) {
        const int B = bs == "max" ? max_b : std::stoi(bs);
        if (B > max_b) {
          std::fprintf(tab, "%-9s %5d  (does not fit: largest batch %d)\n", t.c_str(), B, max_b);
          continue;
        }
        const std::vector<int> sub(seqs.begin(), seqs.begin() + B);
        const double ms = median(rt.timed_decode(sub, o.steps));
        double eager_ms = 0;
        if (o.eager_too && !o.no_graphs) {
          rt.set_graphs(false);
          eager_ms = median(rt.timed_decode(sub, o.steps));
          rt.set_graphs(true);
        }
        const double kv = double(B) * double((o.ctx + 31) / 32) * double(pb);
        const double roof_s = (double(model->step_weight_bytes()) + kv) / (copy * 1e12);
        const double tok_s = B / (ms * 1e-3), roof = B / roof_s;
        std::fprintf(tab, "%-9s %5d %9.1f %10.3f %8.2f %12.1f %5.1f%%", t.c_str(), B, tok_s, ms,
                     kv / 1e9, roof, 100.0 * tok_s / roof);
        if (eager_ms > 0) std::fprintf(tab, "   eager %.3f ms", eager_ms);
        std::fprintf(tab, "\n");
        std::fflush(tab);
        J["rows"].push_back({{"type", t},
                             {"B", B},
                             {"ctx", o.ctx},
                             {"tok_s", tok_s},
                             {"ms_per_step", ms},
                             {"kv_gb", kv / 1e9},
                             {"roofline_tok_s", roof},
                             {"max_batch", bs == "max"}});
        if (eager_ms > 0) J["rows"].back()["eager_ms_per_step"] = eager_ms;
      }
      J["graphs"][t] = rt.graph_status();
    }
    if (o.prefill > 0) {
      RuntimeConfig rc;
      rc.cache_type = t;
      rc.max_seqs = 1;
      rc.max_ctx = o.prefill;
      rc.max_chunk = o.chunk;
      GpuRuntime rt(*model, rc);
      std::vector<int32_t> prompt(o.prefill);
      for (int i = 0; i < o.prefill; ++i) prompt[i] = int32_t((i * 7919) % hp.n_vocab);
      std::vector<double> times;
      for (int r = 0; r < 3; ++r) {
        const int s = rt.new_seq();
        const auto t0 = std::chrono::steady_clock::now();
        rt.prefill(s, prompt.data(), o.prefill, nullptr);
        times.push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        rt.free_seq(s);
      }
      times.erase(times.begin());  // warm-up
      const double tps = o.prefill / median(times);
      std::fprintf(tab, "%-9s prefill %d tokens (chunks of %d): %.0f tok/s\n", t.c_str(), o.prefill,
                   o.chunk, tps);
      J["prefill"].push_back(
          {{"type", t}, {"tokens", o.prefill}, {"chunk", o.chunk}, {"tok_s", tps}});
    }
  }
  if (!o.pytorch.empty()) {
    std::ifstream f(o.pytorch);
    if (!f) throw tq::Error("cannot read --pytorch file '" + o.pytorch + "'");
    try {
      J["pytorch"] = nlohmann::json::parse(f)["pytorch"];
    } catch (const std::exception& e) {
      throw tq::Error("--pytorch file '" + o.pytorch + "' is not the anchor's JSON");
    }
  }
  if (!o.out.empty()) {
    std::ofstream f(o.out);
    if (!f) throw tq::Error("cannot write '" + o.out + "'");
    f << J.dump(1) << "\n";
  }
  if (o.json) tq::cli::print_json(J);
}
#endif

void setup(CLI::App& app) {
  static Opts o;
  CLI::App* bench = app.get_subcommand("bench");
  auto* cmd = bench->add_subcommand(
      "serve", "GPU serving: decode tok/s per cache type and batch at a long context");
  cmd->add_option("--device", o.device, "cuda (the only device of this benchmark)");
  cmd->add_option("--synthetic", o.synthetic,
                  "synthetic model shape (seeded random weights on the GPU)");
  cmd->add_option("-m,--model", o.model, "a llama / qwen2 GGUF instead (weights in bf16)");
  cmd->add_option("--types", o.types, "GPU cache types, comma-separated");
  cmd->add_option("--batch", o.batch, "batch sizes, comma-separated; 'max' = largest that fits");
  cmd->add_option("--ctx", o.ctx, "context length of every sequence");
  cmd->add_option("--steps", o.steps, "timed decode steps per (type, batch)");
  cmd->add_option("--prefill", o.prefill, "prompt tokens of the prefill measurement (0: none)");
  cmd->add_option("--chunk", o.chunk, "prefill chunk (tokens per forward)");
  cmd->add_option("--max-batch-cap", o.max_batch_cap, "upper bound of the 'max' batch");
  cmd->add_option("--reserve-gib", o.reserve_gib, "GPU memory kept free beside the caches");
  cmd->add_option("--pytorch", o.pytorch, "merge this PyTorch anchor JSON (pytorch_anchor.py)");
  cmd->add_option("--out", o.out, "write the JSON document to this file");
  cmd->add_option("--seed", o.seed, "weights / cache fill seed");
  cmd->add_option("--write-gguf", o.write_gguf,
                  "write the --synthetic model as a GGUF (bf16, byte-level tokenizer) for "
                  "`tq perplexity/generate` on the device, and stop");
  cmd->add_flag("--no-graphs", o.no_graphs, "eager launches instead of CUDA graphs");
  cmd->add_flag("--no-small-linear", o.no_small_linear,
                "cuBLAS GEMMs and separate norm/convert/SwiGLU kernels at every batch size "
                "(default: the fused small-batch linear kernel up to 8 rows)");
  cmd->add_flag("--no-pdl", o.no_pdl, "no programmatic dependent launch of the runtime's kernels");
  cmd->add_option("--decode-grid", o.decode_grid,
                  "attention decode grid: auto (the launch plan's choice), split or stream");
  cmd->add_flag("--eager-too", o.eager_too, "also time each row with eager launches");
  cmd->add_flag("--json", o.json, "print the JSON document on stdout");
  cmd->callback([] {
#ifdef TQ_HAVE_GPU
    bench_serve(o);
#else
    throw tq::Error("bench serve: this tq was built without CUDA (configure with -DTQ_CUDA=ON)");
#endif
  });
}

}  // namespace

TQ_COMMAND(setup, 91);
