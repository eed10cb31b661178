// turboquant — perplexity / KLD runner (see perplexity.h).
#include "eval/perplexity.h"

#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/half.h"
#include "model/memcheck.h"

namespace tq {
namespace {

// KLD base file: a fixed header, then for every scored position a record: the int32 argmax of
// the reference logits (exact top-1, immune to fp16 ties) and n_vocab fp16 log-probs.
constexpr char kMagic[8] = {'T', 'Q', 'K', 'L', 'D', 'v', '0', '2'};
struct BaseHeader {
  char magic[8];
  uint64_t model_fingerprint;
  uint64_t tokens_hash;  // XXH64 of the chunks' token ids (after the BOS substitution)
  uint32_t n_ctx, n_chunks, n_vocab, n_scored;  // n_scored: positions per chunk
};
static_assert(sizeof(BaseHeader) == 40);

// fp16 table for reading the base (also used by the attention code; kept local here).
const float* f16_lut() {
  static const std::vector<float> t = [] {
    std::vector<float> v(65536);
    for (uint32_t i = 0; i < 65536; ++i) v[i] = f16_to_f32(uint16_t(i));
    return v;
  }();
  return t.data();
}

void progress_bar(int done, int total, double ppl, double secs) {
  const int w = 30, fill = total ? done * w / total : w;
  std::fprintf(stderr, "\r[%.*s%*s] %d/%d chunks  ppl %.4f  %.1fs", fill,
               "##############################", w - fill, "", done, total, ppl, secs);
  if (done == total) std::fputc('\n', stderr);
  std::fflush(stderr);
}

}  // namespace

void log_softmax(const float* logits, int n, float* out) {
  float m = logits[0];
  for (int i = 1; i < n; ++i) m = std::max(m, logits[i]);
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::exp(double(logits[i] - m));
  const float lse = m + float(std::log(s));
  for (int i = 0; i < n; ++i) out[i] = logits[i] - lse;
}

void validate_cache_options(const KvCacheOptions& o, int n_layer) {
  if (o.boundary_layers < 0) throw Error("--boundary must be >= 0");
  if (o.boundary_layers > n_layer)
    throw Error("--boundary " + std::to_string(o.boundary_layers) + " exceeds the model's " +
                std::to_string(n_layer) + " layers");
  if (o.residual_window < 0 || o.sink_tokens < 0)
    throw Error("--residual and --sinks must be >= 0");
  for (const auto* m : {&o.layer_type_k, &o.layer_type_v})
    for (const auto& [l, t] : *m)
      if (l < 0 || l >= n_layer)
        throw Error(std::string(m == &o.layer_type_k ? "--layer-k" : "--layer-v") + ": layer " +
                    std::to_string(l) + " is outside [0, " + std::to_string(n_layer) + ")");
}

int perplexity_chunks(const LlamaHparams& hp, size_t n_tokens, const PerplexityOptions& opts) {
  validate_cache_options(opts.cache, hp.n_layer);
  const int n_ctx = opts.n_ctx;
  if (n_ctx < 4) throw Error("perplexity: context must be at least 4 tokens");
  if (n_ctx > hp.n_ctx_train)
    throw Error("perplexity: context " + std::to_string(n_ctx) + " exceeds the model's " +
                "context length " + std::to_string(hp.n_ctx_train));
  const int max_chunks = int(std::min<size_t>(n_tokens / size_t(n_ctx), INT32_MAX));
  if (max_chunks < 1)
    throw Error("perplexity: the text has " + std::to_string(n_tokens) +
                " tokens, fewer than one chunk of " + std::to_string(n_ctx));
  // -1 = all; any other value is taken as given (more than the text holds was clamped
  // silently, -5 meant "all").
  if (opts.n_chunks == 0 || opts.n_chunks < -1)
    throw Error("perplexity: --chunks must be at least 1 (or -1: all the text holds)");
  if (opts.n_chunks > max_chunks)
    throw Error("perplexity: --chunks " + std::to_string(opts.n_chunks) + ": the text holds " +
                std::to_string(max_chunks) + " chunks of " + std::to_string(n_ctx) + " tokens");
  return opts.n_chunks < 0 ? max_chunks : opts.n_chunks;
}

PerplexityResult run_perplexity(const LlamaModel& model, const std::vector<int32_t>& tokens,
                                bool add_bos, int32_t bos, const PerplexityOptions& opts) {
  perplexity_chunks(model.hparams(), tokens.size(), opts);  // refuse before allocating
  CpuRunner runner(model, opts.cache, opts.n_ctx + std::max(0, opts.extra_tokens));
  return run_perplexity(runner, tokens, add_bos, bos, opts);
}

PerplexityResult run_perplexity(SeqRunner& runner, const std::vector<int32_t>& tokens, bool add_bos,
                                int32_t bos, const PerplexityOptions& opts) {
  const LlamaHparams& hp = runner.hparams();
  const int n_chunks = perplexity_chunks(hp, tokens.size(), opts);
  const int n_ctx = opts.n_ctx;
  const int V = hp.n_vocab;
  const int first = n_ctx / 2, n_scored = n_ctx - 1 - first;
  CpuRunner* cpu = dynamic_cast<CpuRunner*>(&runner);
  if (opts.after_first_chunk && !cpu)
    throw Error("perplexity: the first-chunk hook (tq compare) needs the CPU runner");

  // The chunks' tokens and their hash.
  std::vector<std::vector<int32_t>> chunks(n_chunks);
  XXH64_state_t* hs = XXH64_createState();
  XXH64_reset(hs, 0);
  for (int c = 0; c < n_chunks; ++c) {
    chunks[c].assign(tokens.begin() + size_t(c) * n_ctx, tokens.begin() + size_t(c + 1) * n_ctx);
    if (add_bos) chunks[c][0] = bos;
    XXH64_update(hs, chunks[c].data(), chunks[c].size() * sizeof(int32_t));
  }
  const uint64_t tok_hash = XXH64_digest(hs);
  XXH64_freeState(hs);

  BaseHeader hdr{};
  std::memcpy(hdr.magic, kMagic, 8);
  hdr.model_fingerprint = opts.model_fingerprint;
  hdr.tokens_hash = tok_hash;
  hdr.n_ctx = uint32_t(n_ctx);
  hdr.n_chunks = uint32_t(n_chunks);
  hdr.n_vocab = uint32_t(V);
  hdr.n_scored = uint32_t(n_scored);
  const size_t rec_bytes = sizeof(int32_t) + size_t(V) * sizeof(uint16_t);
  const size_t rec_u16 = rec_bytes / sizeof(uint16_t);  // a record as uint16 words
  const size_t total_recs = size_t(n_chunks) * n_scored;

  PerplexityResult res;
  res.chunks = n_chunks;
  res.n_ctx = n_ctx;
  std::ifstream base_in;
  std::ofstream base_out;
  std::string part_path;
  if (!opts.kld_base.empty()) {
    const std::string& p = opts.kld_base;
    if (std::filesystem::exists(p)) {
      base_in.open(p, std::ios::binary);
      if (!base_in) throw Error("cannot open KLD base file '" + p + "'");
      BaseHeader h{};
      base_in.read(reinterpret_cast<char*>(&h), sizeof h);
      if (!base_in || std::memcmp(h.magic, kMagic, 8) != 0)
        throw Error("'" + p + "' is not a turboquant KLD base file (bad magic)");
      if (h.model_fingerprint != hdr.model_fingerprint)
        throw Error("KLD base '" + p + "' was written for another model (fingerprint mismatch)");
      if (h.n_ctx != hdr.n_ctx || h.n_chunks != hdr.n_chunks || h.n_vocab != hdr.n_vocab ||
          h.n_scored != hdr.n_scored)
        throw Error("KLD base '" + p + "' was written with -c " + std::to_string(h.n_ctx) +
                    " --chunks " + std::to_string(h.n_chunks) + " (this run: -c " +
                    std::to_string(n_ctx) + " --chunks " + std::to_string(n_chunks) + ")");
      if (h.tokens_hash != hdr.tokens_hash)
        throw Error("KLD base '" + p + "' was written for another text (token hash mismatch)");
      const auto size = std::filesystem::file_size(p);
      if (size != sizeof(BaseHeader) + total_recs * rec_bytes)
        throw Error("KLD base '" + p + "' is truncated or corrupt (" + std::to_string(size) +
                    " bytes, expected " +
                    std::to_string(sizeof(BaseHeader) + total_recs * rec_bytes) + ")");
      res.has_kld = true;
    } else {
      part_path = p + ".part";
      base_out.open(part_path, std::ios::binary | std::ios::trunc);
      if (!base_out) throw Error("cannot write KLD base file '" + part_path + "'");
      base_out.write(reinterpret_cast<const char*>(&hdr), sizeof hdr);
      res.wrote_base = true;
    }
  }

  double nll_sum = 0, nll_sq = 0, fwd_secs = 0, score_secs = 0;
  std::vector<double> klds;
  long agree = 0;
  const auto t_start = std::chrono::steady_clock::now();
  std::vector<float> logp;
  std::vector<uint16_t> base_rec;
  const float* lut = f16_lut();
  // The bar redraws one line with \r: only on a terminal (logs and CI output stay clean).
  const bool bar = opts.progress && isatty(2);
  if (bar) progress_bar(0, n_chunks, 0.0, 0.0);
  for (int c = 0; c < n_chunks; ++c) {
    runner.reset();
    // Rows [first, n_ctx - 1) are scored: their logits arrive in blocks during the forward.
    auto score_rows = [&](int r0, int nr_all, const float* logits) {
      const int nr = std::min(nr_all, n_ctx - 1 - r0);
      if (nr <= 0) return;
      const auto ts = std::chrono::steady_clock::now();
      if (logp.size() < size_t(nr) * V) logp.resize(size_t(nr) * V);
      if (base_rec.size() < size_t(nr) * rec_u16) base_rec.resize(size_t(nr) * rec_u16);
      if (res.has_kld) {
        base_in.read(reinterpret_cast<char*>(base_rec.data()), std::streamsize(nr * rec_bytes));
        if (!base_in) throw Error("KLD base '" + opts.kld_base + "': read failed (truncated?)");
      }
      std::vector<double> row_nll(nr), row_kld(nr);
      std::vector<int> row_agree(nr);
#pragma omp parallel for schedule(static)
      for (int r = 0; r < nr; ++r) {
        const float* lg = &logits[size_t(r) * V];
        float* lp = &logp[size_t(r) * V];
        log_softmax(lg, V, lp);
        row_nll[r] = -double(lp[chunks[c][r0 + r + 1]]);
        uint16_t* rec = &base_rec[size_t(r) * rec_u16];
        if (res.wrote_base) {
          int32_t am = 0;
          for (int i = 1; i < V; ++i)
            if (lg[i] > lg[am]) am = i;
          std::memcpy(rec, &am, sizeof am);
          for (int i = 0; i < V; ++i) rec[2 + i] = f32_to_f16(lp[i]);
        }
        if (res.has_kld) {
          int32_t am_b;
          std::memcpy(&am_b, rec, sizeof am_b);
          const uint16_t* b = rec + 2;
          // Renormalise the fp16 log-probs first: then the fp16 rounding only adds a
          // second-order term (~1e-6) to the KL instead of a first-order bias.
          double z = 0;
          for (int i = 0; i < V; ++i) z += std::exp(double(lut[b[i]]));
          const double lz = std::log(z);
          double kl = 0;
          int am_q = 0;
          for (int i = 0; i < V; ++i) {
            const double lb = double(lut[b[i]]) - lz;
            kl += std::exp(lb) * (lb - lp[i]);
            if (lg[i] > lg[am_q]) am_q = i;
          }
          row_kld[r] = std::max(0.0, kl);  // rounding can leave a tiny negative value
          row_agree[r] = am_b == am_q;
        }
      }
      for (int r = 0; r < nr; ++r) {
        nll_sum += row_nll[r];
        nll_sq += row_nll[r] * row_nll[r];
        if (res.has_kld) {
          klds.push_back(row_kld[r]);
          agree += row_agree[r];
        }
      }
      if (res.wrote_base)
        base_out.write(reinterpret_cast<const char*>(base_rec.data()),
                       std::streamsize(nr * rec_bytes));
      score_secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    };
    const auto t0 = std::chrono::steady_clock::now();
    runner.forward(chunks[c].data(), n_ctx, nullptr, first, score_rows);
    // forward time: the model's, not the scoring's (KLD against the base file)
    fwd_secs +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() - score_secs;
    score_secs = 0;
    if (c == 0) {
      const CacheFacts f = runner.facts();
      res.kv_bytes = f.kv_bytes;
      res.bpv_k = f.bpv_k;
      res.bpv_v = f.bpv_v;
      res.centred_layers = f.centred_layers;
      if (opts.after_first_chunk)
        opts.after_first_chunk(cpu->cache(), cpu->seq(), cpu->last_hidden());
    }
    res.tokens += n_scored;
    if (opts.on_chunk) opts.on_chunk(c + 1);
    if (bar)
      progress_bar(
          c + 1, n_chunks, std::exp(nll_sum / double(res.tokens)),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
  }
  const double n = double(res.tokens);
  const double mean = nll_sum / n;
  res.ppl = std::exp(mean);
  const double var = std::max(0.0, nll_sq / n - mean * mean);
  res.ppl_stderr = res.ppl * std::sqrt(var / std::max(1.0, n - 1));
  if (res.has_kld) {
    double s = 0;
    for (double k : klds) s += k;
    res.kld_mean = s / double(klds.size());
    std::vector<double> sorted = klds;
    std::sort(sorted.begin(), sorted.end());
    const size_t i99 = std::min(sorted.size() - 1, size_t(std::ceil(0.99 * sorted.size())) - 1);
    res.kld_p99 = sorted[i99];
    res.top1 = double(agree) / double(klds.size());
  }
  if (res.wrote_base) {
    base_out.close();
    if (!base_out) throw Error("writing KLD base '" + part_path + "' failed");
    std::filesystem::rename(part_path, opts.kld_base);
  }
  res.prefill_tps = double(n_chunks) * n_ctx / fwd_secs;
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return res;
}

}  // namespace tq
