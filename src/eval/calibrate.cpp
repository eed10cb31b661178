#include "eval/calibrate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "cache/kv_cache.h"
#include "codecs/kvquant.h"
#include "core/kmeans.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "model/gguf.h"
#include "model/llama.h"

namespace tq {
namespace {

// Evenly spaced subsample of at most m of n indices (deterministic).
std::vector<size_t> subsample(size_t n, size_t m) {
  std::vector<size_t> idx;
  if (n <= m) {
    idx.resize(n);
    std::iota(idx.begin(), idx.end(), 0);
    return idx;
  }
  for (size_t i = 0; i < m; ++i) idx.push_back(i * n / m);
  return idx;
}

// Whether two parameter sets give the same angle codebooks / key or value stage-2 codebooks
// from the same samples (see CalibrateOptions::earlier).
bool same_angles(const PolarVqParams& a, const PolarVqParams& b) {
  return a.angle_bits == b.angle_bits;
}
bool same_key_vq(const PolarVqParams& a, const PolarVqParams& b) {
  return a.has_vq(true) && b.has_vq(true) && same_angles(a, b) && a.mag_bits == b.mag_bits &&
         a.group_size == b.group_size && a.key_block_tokens == b.key_block_tokens &&
         a.vq_size == b.vq_size && a.vq_dim_for(true) == b.vq_dim_for(true) &&
         a.subspaces == b.subspaces;
}
bool same_value_vq(const PolarVqParams& a, const PolarVqParams& b) {
  return a.has_vq(false) && b.has_vq(false) && a.value_bits == b.value_bits &&
         a.value_group == b.value_group && a.vq_size == b.vq_size &&
         a.vq_dim_for(false) == b.vq_dim_for(false) && a.subspaces == b.subspaces;
}

}  // namespace

CodebookFile calibrate_polarvq(const PolarVqParams& p, int n_layer, int n_head_kv, int dim,
                               RopePairing rope, const std::vector<HeadSamples>& heads,
                               const CalibrateOptions& opt) {
  TQ_ASSERT(heads.size() == size_t(n_layer) * n_head_kv);
  CodebookFile f;
  f.params = p;
  f.n_layer = uint32_t(n_layer);
  f.n_head_kv = uint32_t(n_head_kv);
  f.head_dim = uint32_t(dim);
  f.rope = rope;
  const int A = 1 << p.angle_bits, half = dim / 2;
  PolarVqParams p1 = p;  // stage 1 only, for the residuals
  p1.vq_size = 0;
  // Heads are independent (each has its own derived seeds), so they run in parallel and the
  // result does not depend on the thread count.
  f.heads.resize(heads.size());
  ParallelErrors errors;  // the first error (or bad_alloc) of any thread, after the loop
  size_t done = 0;
#pragma omp parallel for schedule(dynamic)
  for (size_t h = 0; h < heads.size(); ++h) {
    errors.run([&] {
      const HeadSamples& hs = heads[h];
      const size_t n = hs.n;
      if (n < size_t(std::max(A, 2)))
        throw Error("calibration: " + std::to_string(n) + " samples per head are too few");
      auto cal = std::make_shared<PolarVqCalibration>();
      cal->dim = dim;
      const PolarVqCalibration* from_angles = nullptr;
      const PolarVqCalibration *from_kvq = nullptr, *from_vvq = nullptr;
      for (const CodebookFile* e : opt.earlier) {
        if (e->heads.size() != heads.size() || e->head_dim != uint32_t(dim)) continue;
        if (same_angles(e->params, p)) from_angles = e->heads[h].get();
        if (same_key_vq(e->params, p)) from_kvq = e->heads[h].get();
        if (same_value_vq(e->params, p)) from_vvq = e->heads[h].get();
      }
      // Angles per pair-channel, in the model's RoPE pairing.
      const auto rows = subsample(n, opt.max_angle_points);
      std::vector<float> th(rows.size());
      if (from_angles) cal->angle_centroids = from_angles->angle_centroids;
      for (int i = 0; i < half && !from_angles; ++i) {
        const int a = rope == RopePairing::kNeox ? i : 2 * i;
        const int b = rope == RopePairing::kNeox ? i + half : 2 * i + 1;
        for (size_t r = 0; r < rows.size(); ++r)
          th[r] = std::atan2(hs.keys[rows[r] * dim + b], hs.keys[rows[r] * dim + a]);
        const auto c = kmeans_circular(th.data(), th.size(), A, derive_seed(opt.seed, h, i, 1));
        cal->angle_centroids.insert(cal->angle_centroids.end(), c.begin(), c.end());
      }
      // Value channels by descending variance (stable for ties).
      std::vector<double> var(dim, 0.0), mean(dim, 0.0);
      for (size_t t = 0; t < n; ++t)
        for (int j = 0; j < dim; ++j) mean[j] += hs.values[t * dim + j];
      for (auto& m : mean) m /= double(n);
      for (size_t t = 0; t < n; ++t)
        for (int j = 0; j < dim; ++j) {
          const double e = hs.values[t * dim + j] - mean[j];
          var[j] += e * e;
        }
      cal->value_perm.resize(dim);
      std::iota(cal->value_perm.begin(), cal->value_perm.end(), 0);
      std::stable_sort(cal->value_perm.begin(), cal->value_perm.end(),
                       [&](int a, int b) { return var[a] > var[b]; });
      // Stage 2 on the stage-1 residuals.
      if (p.vq_size > 0) {
        for (bool key : {true, false}) {
          if (!p.has_vq(key)) continue;
          if (const PolarVqCalibration* e = key ? from_kvq : from_vvq) {
            (key ? cal->key_vq : cal->value_vq) = key ? e->key_vq : e->value_vq;
            continue;
          }
          CodecOptions o;
          o.is_key = key;
          o.rope = rope;
          o.calibration = cal;
          PolarVqCodec c1(p1, dim, o);
          const float* x = key ? hs.keys.data() : hs.values.data();
          const int T = c1.block_tokens();
          const size_t nb = n / T;
          if (nb == 0) throw Error("calibration: too few samples for one block");
          std::vector<uint8_t> codes(nb * c1.block_bytes());
          std::vector<float> rec(nb * T * size_t(dim));
          c1.encode(x, nb, codes.data());
          c1.decode(codes.data(), nb, rec.data());
          // Residuals in the stored order (values are permuted).
          const size_t m = nb * T;
          std::vector<float> res(m * dim);
          for (size_t t = 0; t < m; ++t)
            for (int j = 0; j < dim; ++j) {
              const int src = key ? j : cal->value_perm[j];
              res[t * dim + j] = x[t * dim + src] - rec[t * dim + src];
            }
          const int g = p.vq_dim_for(key);
          int s = std::max(1, std::min(p.subspaces, dim / g));
          while ((dim / g) % s) --s;
          const int per = (dim / g) / s;
          std::vector<float> books;
          for (int sp = 0; sp < s; ++sp) {
            // Every sub-vector of this subspace from every sampled token.
            std::vector<float> pts;
            const auto take = subsample(m * per, opt.max_vq_points);
            pts.reserve(take.size() * g);
            for (size_t k : take) {
              const size_t t = k / per, sub = size_t(sp) * per + k % per;
              pts.insert(pts.end(), &res[t * dim + sub * g], &res[t * dim + sub * g] + g);
            }
            const size_t np = pts.size() / g;
            if (np < size_t(p.vq_size))
              throw Error("calibration: " + std::to_string(np) +
                          " residual vectors are fewer than " +
                          std::to_string(p.vq_size) + " codebook entries; use more samples");
            const auto km = kmeans(pts.data(), np, g, p.vq_size,
                                   derive_seed(opt.seed, h, sp, key ? 2 : 3), opt.vq_iterations,
                                   1e-6, 1);
            books.insert(books.end(), km.centroids.begin(), km.centroids.end());
          }
          (key ? cal->key_vq : cal->value_vq) = std::move(books);
        }
      }
      f.heads[h] = std::move(cal);
    });
#pragma omp critical(tq_calibrate)
    {
      ++done;
      if (opt.progress) opt.progress(done, heads.size());
    }
  }
  errors.rethrow();
  return f;
}

CodebookFile calibrate_kvquant(const KvShape& shape, const std::vector<HeadSamples>& heads,
                               const CalibrateOptions& opt, int skip_positions) {
  const int L = shape.n_layer, H = shape.n_kv_head, d = shape.head_dim;
  TQ_ASSERT(heads.size() == size_t(L) * H);
  CodebookFile f;
  f.params.preset = kKvqPreset;
  f.n_layer = uint32_t(L);
  f.n_head_kv = uint32_t(H);
  f.head_dim = uint32_t(d);
  f.rope = shape.rope;
  f.heads.resize(heads.size());
  f.kvq.resize(heads.size());
  for (auto& h : f.heads) {
    h = std::make_shared<PolarVqCalibration>();
    h->dim = d;
  }
  ParallelErrors errors;  // the first error (or bad_alloc) of any thread, after the loop
  size_t done = 0;
  // Layers are independent; within one, the per-channel ranges of each head first, then the
  // layer's levels from the normalised values of all its heads.
#pragma omp parallel for schedule(dynamic)
  for (int l = 0; l < L; ++l) {
    errors.run([&] {
      std::vector<float> zk, zv;
      std::vector<std::shared_ptr<KvQuantCalibration>> cals(H);
      std::vector<std::vector<float>> keys(H);
      for (int h = 0; h < H; ++h) {
        const HeadSamples& hs = heads[size_t(l) * H + h];
        if (hs.pos.size() != hs.n)
          throw Error("calibration: kvquant needs the samples' positions");
        // Rows past the sinks; keys back to pre-RoPE.
        std::vector<size_t> rows;
        for (size_t t = 0; t < hs.n; ++t)
          if (hs.pos[t] >= skip_positions) rows.push_back(t);
        if (rows.size() < 64)
          throw Error("calibration: " + std::to_string(rows.size()) +
                      " samples per head are too few for kvquant");
        auto& K = keys[h];
        K.resize(rows.size() * d);
        std::vector<float> V(rows.size() * d);
        for (size_t i = 0; i < rows.size(); ++i) {
          std::copy_n(&hs.keys[rows[i] * d], d, &K[i * d]);
          std::copy_n(&hs.values[rows[i] * d], d, &V[i * d]);
          rope_rotate(&K[i * d], d, hs.pos[rows[i]], shape.inv_freq(l), shape.freq_scale(l),
                      shape.rope, true);
        }
        auto cal = std::make_shared<KvQuantCalibration>();
        std::vector<float> col(rows.size());
        for (int key = 0; key < 2; ++key) {
          const std::vector<float>& X = key ? K : V;
          auto& c = key ? cal->key_center : cal->value_center;
          auto& r = key ? cal->key_range : cal->value_range;
          c.resize(d);
          r.resize(d);
          for (int j = 0; j < d; ++j) {
            for (size_t i = 0; i < rows.size(); ++i) col[i] = X[i * d + j];
            std::sort(col.begin(), col.end());
            const size_t m = col.size() - 1;
            const float lo = col[size_t(std::floor(kKvqRangeTail * double(m)))];
            const float hi = col[size_t(std::ceil((1.0 - kKvqRangeTail) * double(m)))];
            c[j] = 0.5f * (lo + hi);
            r[j] = std::max(0.5f * (hi - lo), 1e-6f);
          }
        }
        // This head's normalised dense values, an even subsample of its rows (about
        // opt.max_vq_points · 32 values per layer: 1-D k-means needs no more).
        const auto take =
            subsample(rows.size(), std::max<size_t>(64, opt.max_vq_points * 32 / size_t(H * d)));
        for (size_t i : take) {
          kvq_normalised(&K[i * d], d, cal->key_center.data(), cal->key_range.data(), true, zk);
          kvq_normalised(&V[i * d], d, cal->value_center.data(), cal->value_range.data(), false,
                         zv);
        }
        cals[h] = std::move(cal);
      }
      const uint64_t s = derive_seed(opt.seed, uint64_t(l), 0x4B5651);
      const auto k3 = kvq_fit_levels(zk, 3, s + 1), k4 = kvq_fit_levels(zk, 4, s + 2);
      const auto v3 = kvq_fit_levels(zv, 3, s + 3), v4 = kvq_fit_levels(zv, 4, s + 4);
      for (int h = 0; h < H; ++h) {
        cals[h]->key_levels3 = k3;
        cals[h]->key_levels4 = k4;
        cals[h]->value_levels3 = v3;
        cals[h]->value_levels4 = v4;
        f.kvq[size_t(l) * H + h] = cals[h];
      }
    });
#pragma omp critical(tq_calibrate)
    {
      ++done;
      if (opt.progress) opt.progress(done, size_t(L));
    }
  }
  errors.rethrow();
  return f;
}

uint64_t codebook_fingerprint(const GgufFile& f, int n_layer) {
  std::vector<std::string> names;
  for (int l = 0; l < n_layer; ++l)
    for (const char* t : {"attn_k", "attn_v"}) {
      const std::string base = "blk." + std::to_string(l) + "." + t;
      names.push_back(base + ".weight");
      if (f.find_tensor(base + ".bias")) names.push_back(base + ".bias");
    }
  return f.fingerprint(names);
}

std::shared_ptr<const CodebookFile> load_codebooks(const std::string& path, const GgufFile& f,
                                                   const LlamaModel& model,
                                                   const std::vector<std::string>& types) {
  auto cb = std::make_shared<CodebookFile>(read_codebook_file(path));
  const LlamaHparams& hp = model.hparams();
  if (cb->model_fingerprint != codebook_fingerprint(f, hp.n_layer))
    throw Error("codebook file '" + path + "' was calibrated for another model (fingerprint " +
                "mismatch with '" + f.path() + "')");
  if (cb->rope != hp.rope)
    throw Error("codebook file '" + path + "' was made for another RoPE pairing");
  bool used = false;
  for (const auto& t : types) {
    const TypeTraits& tr = type_traits(t);
    if (tr.calibration == CalibrationKind::kNone) continue;
    used = true;
    const bool shape_ok = int(cb->n_layer) == hp.n_layer && int(cb->n_head_kv) == hp.n_kv_head &&
                          int(cb->head_dim) == hp.head_dim;
    if (tr.calibration == CalibrationKind::kKvQuant) {
      if (cb->params.preset != tr.calibration_preset || cb->kvq.empty())
        throw Error("codebook file '" + path + "' is for preset '" + cb->params.preset +
                    "', cache type '" + t + "' needs a " + tr.calibrate_command + " file");
      if (!shape_ok) throw Error("codebook file '" + path + "' does not fit the model's shape");
    } else if (tr.params_from_codebooks) {
      if (!shape_ok) throw Error("codebook file '" + path + "' does not fit the model's shape");
      if (cb->params.preset != tr.calibration_preset)
        throw Error("codebook file '" + path + "' is for preset '" + cb->params.preset +
                    "', not '" + tr.calibration_preset + "'");
    } else {
      check_codebook_compatible(*cb, path, cb->model_fingerprint, hp.n_layer, hp.n_kv_head,
                                hp.head_dim, tr.calibration_preset);
    }
  }
  if (!used)
    throw Error("--codebooks '" + path + "' given, but no cache type is polar-vq or kvquant");
  return cb;
}

void warn_if_past_calibration(const CodebookFile& cb, const std::string& path, int n_ctx) {
  if (cb.ctx > 0 && n_ctx > int(cb.ctx))
    std::fprintf(stderr,
                 "warning: codebook file '%s' was calibrated on windows of %u tokens; the cache "
                 "holds up to %d (calibrate with -c %d for the best angle codebooks)\n",
                 path.c_str(), cb.ctx, n_ctx, n_ctx);
}

std::vector<HeadSamples> collect_kv_samples(const LlamaModel& model,
                                            const std::vector<int32_t>& tokens,
                                            const SampleOptions& opt) {
  const KvShape shape = model.kv_shape();
  const int L = shape.n_layer, H = shape.n_kv_head, d = shape.head_dim, ctx = opt.ctx;
  if (opt.n_seq <= 0 || ctx <= 1)
    throw Error("calibration: need at least 1 sample of at least 2 tokens");
  if (ctx > model.hparams().n_ctx_train)
    throw Error("calibration: -c " + std::to_string(ctx) + " exceeds the model's context length " +
                std::to_string(model.hparams().n_ctx_train));
  const size_t need = size_t(opt.n_seq) * ctx;
  if (tokens.size() < need)
    throw Error("calibration text too short: " + std::to_string(tokens.size()) +
                " tokens, " + std::to_string(opt.n_seq) + " samples of " + std::to_string(ctx) +
                " tokens need " + std::to_string(need));
  // Distinct non-overlapping windows: a seeded choice of n_seq of the text's ctx-token slots,
  // visited in text order.
  const size_t slots = tokens.size() / ctx;
  std::vector<size_t> order(slots);
  std::iota(order.begin(), order.end(), 0);
  Rng rng(opt.seed ^ 0x63616c6962ull);
  for (size_t i = slots - 1; i > 0; --i) std::swap(order[i], order[rng.next() % (i + 1)]);
  order.resize(opt.n_seq);
  std::sort(order.begin(), order.end());
  // Positions kept per window: evenly spaced, so that all heads together stay within budget.
  const size_t per_win = std::max<size_t>(1, std::min<size_t>(
      ctx, (opt.max_per_head + opt.n_seq - 1) / size_t(opt.n_seq)));
  const auto keep = subsample(size_t(ctx), per_win);
  std::vector<HeadSamples> heads(size_t(L) * H);
  for (auto& h : heads) {
    h.keys.reserve(keep.size() * opt.n_seq * d);
    h.values.reserve(keep.size() * opt.n_seq * d);
  }
  KvCacheOptions co;
  co.type_k = co.type_v = "f32";
  co.max_tokens = ctx;
  co.page_tokens = ctx;
  co.max_seqs = 1;
  co.on_append = [&](int layer, const float* k, const float* v, int T) {
    // A window goes through in one prefill (T = ctx), so row t is position t.
    TQ_ASSERT(T == ctx);
    std::vector<float> mu(size_t(H) * d, 0.f);  // the window's key means (the cache's μ)
    if (opt.center_keys) {
      for (int t = 0; t < T; ++t)
        for (size_t i = 0; i < mu.size(); ++i) mu[i] += k[size_t(t) * H * d + i];
      for (auto& m : mu) m /= float(T);
    }
    for (size_t t : keep)
      for (int h = 0; h < H; ++h) {
        HeadSamples& hs = heads[size_t(layer) * H + h];
        const size_t off = (t * H + h) * d;
        for (int j = 0; j < d; ++j) hs.keys.push_back(k[off + j] - mu[size_t(h) * d + j]);
        hs.values.insert(hs.values.end(), v + off, v + off + d);
        hs.pos.push_back(int32_t(t));
      }
  };
  KvCache cache(shape, co);
  for (size_t w = 0; w < order.size(); ++w) {
    const int seq = cache.new_seq();
    model.forward(cache, seq, tokens.data() + order[w] * ctx, ctx, nullptr, nullptr);
    cache.free_seq(seq);
    if (opt.progress) opt.progress(w + 1, order.size());
  }
  for (auto& h : heads) h.n = h.keys.size() / d;
  return heads;
}

}  // namespace tq
