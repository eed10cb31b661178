// `--device cpu|cuda` of `tq generate` and `tq perplexity`: which backend runs the model
// (eval/runner.h). On cuda the weights go to the GPU in bf16 (from any GGUF type) and the cache
// is the paged GPU cache (docs/gpu-runtime.md); what the GPU cannot hold is refused in one
// line, never run on the CPU instead.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "eval/runner.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "runtime_flags.h"
#include "tq/codec.h"
#include "tq/error.h"
#ifdef TQ_HAVE_GPU
#include "gpu/gpu_runner.h"
#endif

namespace tq::cli {

struct DeviceFlag {
  std::string device = "cpu";

  void add(CLI::App* cmd) {
    cmd->add_option("--device", device,
                    "cpu, or cuda: the model on the GPU (bf16 weights, the paged GPU cache of "
                    "-ctk/-ctv, which must be equal and have a GPU form, e.g. bf16, fp8_e4m3, "
                    "q8_0, q4_0, turbo2/3/4; default bf16 there)")
        ->check(CLI::IsMember({"cpu", "cuda"}))
        ->capture_default_str();
  }
  bool cuda() const { return device == "cuda"; }

  // The backend for a run of `max_tokens` tokens. cpu: a CpuRunner over `model` with `opts`.
  // cuda: the file's weights on the GPU; tq::Error for options the GPU cache does not have.
  std::unique_ptr<SeqRunner> runner(const RuntimeFlags& rt, const KvCacheOptions& opts,
                                    const GgufFile& f, const LlamaModel& model, int max_tokens) {
    if (!cuda()) return std::make_unique<CpuRunner>(model, opts, max_tokens);
    check_gpu_options(rt, opts);
#ifdef TQ_HAVE_GPU
    if (!gpu::gpu_available()) throw Error("--device cuda: no CUDA GPU is available");
    gpu_model_ = gpu::GpuModel::from_gguf(f);
    return std::make_unique<gpu::GpuRunner>(*gpu_model_, opts.type_k, max_tokens, 512, opts.seed);
#else
    (void)f;
    throw Error(
        "--device cuda: this tq was built without CUDA (configure with -DTQ_CUDA=ON "
        "and nvcc)");
#endif
  }

  // On cuda the unset -ctk/-ctv mean bf16 (f16 has no GPU form).
  void default_types(RuntimeFlags& rt) const {
    if (!cuda()) return;
    if (!rt.was_given("--ctk")) rt.ctk = "bf16";
    if (!rt.was_given("--ctv")) rt.ctv = "bf16";
  }

 private:
  static void check_gpu_options(const RuntimeFlags& rt, const KvCacheOptions& o) {
    auto refuse = [](const std::string& what) {
      throw Error("--device cuda: " + what +
                  " (the GPU cache has one type for every layer's K "
                  "and V)");
    };
    if (!rt.plan.empty()) refuse("--plan is CPU-only");
    if (!rt.codebooks.empty()) refuse("--codebooks is CPU-only");
    if (!o.layer_type_k.empty() || !o.layer_type_v.empty() || o.boundary_layers > 0)
      refuse("--layer-k/--layer-v/--boundary are CPU-only");
    if (o.residual_window > 0 || o.sink_tokens > 0) refuse("--residual/--sinks are CPU-only");
    if (o.type_k != o.type_v) refuse("-ctk " + o.type_k + " and -ctv " + o.type_v + " differ");
    if (type_traits(o.type_k).gpu == GpuFormat::kNone)
      throw Error("--device cuda: cache type '" + o.type_k +
                  "' has no GPU form (see `tq types`: bf16, fp8_e4m3, q8_0, q4_0, turbo2, "
                  "turbo3, turbo4, turbo2.5, turbo3.5)");
    // Key centring (issue 13) lives in the CPU cache: the GPU stores keys as they come.
    const bool centred =
        o.key_centring == KeyCentring::kOn ||
        (o.key_centring == KeyCentring::kTypeDefault && type_traits(o.type_k).center_keys);
    if (centred)
      throw Error("--device cuda: the GPU cache does not mean-centre keys; " + o.type_k +
                  " keys are centred by default on the CPU (add --no-center-keys to run them "
                  "uncentred on the GPU)");
  }
#ifdef TQ_HAVE_GPU
  std::unique_ptr<gpu::GpuModel> gpu_model_;
#endif
};

}  // namespace tq::cli
