#include "attention/decode.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "codecs/common.h"
#include "codecs/turbo.h"
#include "core/rotation.h"
#include "cpu/dispatch.h"

namespace tq::cpu {
namespace {

// ------------------------------------------------------------------ ops per codec family
// Caches scored by a pair of row kernels over the original domain: f32, f16 and the ggml
// q8_0 / q4_0 blocks (32 along the head dimension). The kernels are looked up in the active
// level's table at every call (tests switch levels between calls).
class PlainOps final : public AttnOps {
 public:
  using ScoreFn = decltype(Kernels::score_f32);
  using AccFn = decltype(Kernels::acc_f32);
  PlainOps(int d, size_t token_bytes, ScoreFn Kernels::*score, AccFn Kernels::*acc)
      : d_(d), token_bytes_(token_bytes), score_(score), acc_(acc) {}
  size_t acc_size() const override { return size_t(d_); }
  size_t token_bytes() const override { return token_bytes_; }
  void prepare(const float* q, int G, Prepared& p) const override {
    p.G = G;
    p.a.assign(q, q + size_t(G) * d_);
  }
  void score(const Prepared& p, const uint8_t* c, size_t n, float* s, size_t lds) const override {
    (kernels().*score_)(c, n, d_, p.a.data(), p.G, s, lds);
  }
  void accumulate(const uint8_t* c, size_t n, const float* w, size_t ldw, int G,
                  float* acc) const override {
    (kernels().*acc_)(c, n, d_, w, ldw, G, acc, size_t(d_));
  }
  void finish(const float* acc, float* out) const override {
    std::memcpy(out, acc, sizeof(float) * d_);
  }

 private:
  int d_;
  size_t token_bytes_;
  ScoreFn Kernels::*score_;
  AccFn Kernels::*acc_;
};

class TurboMseOps final : public AttnOps {
 public:
  explicit TurboMseOps(const TurboMseCodec& c) : c_(c), d_(c.dim()) {}
  size_t acc_size() const override { return size_t(d_); }
  size_t token_bytes() const override { return c_.block_bytes(); }
  void prepare(const float* q, int G, Prepared& p) const override {
    p.G = G;
    p.a.resize(size_t(G) * d_);
    for (int g = 0; g < G; ++g) c_.rotation().forward(q + size_t(g) * d_, &p.a[size_t(g) * d_]);
  }
  void score(const Prepared& p, const uint8_t* c, size_t n, float* s, size_t lds) const override {
    kernels().score_rows(c_.rows(c, c_.block_bytes()), n, p.a.data(), p.G, s, lds, false);
  }
  void accumulate(const uint8_t* c, size_t n, const float* w, size_t ldw, int G,
                  float* acc) const override {
    kernels().acc_rows(c_.rows(c, c_.block_bytes()), n, w, ldw, G, acc, size_t(d_));
  }
  void finish(const float* acc, float* out) const override { c_.finish(acc, out); }

 private:
  const TurboMseCodec& c_;
  int d_;
};

class TurboProdOps final : public AttnOps {
 public:
  explicit TurboProdOps(const TurboProdCodec& c) : c_(c), d_(c.dim()) {}
  size_t acc_size() const override { return 2 * size_t(d_); }
  size_t token_bytes() const override { return c_.block_bytes(); }
  void prepare(const float* q, int G, Prepared& p) const override {
    p.G = G;
    p.a.resize(size_t(G) * d_);
    p.b.resize(size_t(G) * d_);
    for (int g = 0; g < G; ++g)
      c_.prepare_vectors(q + size_t(g) * d_, &p.a[size_t(g) * d_], &p.b[size_t(g) * d_]);
  }
  void score(const Prepared& p, const uint8_t* c, size_t n, float* s, size_t lds) const override {
    const auto& k = kernels();
    const size_t st = c_.block_bytes();
    k.score_rows(c_.mse_rows(c, st), n, p.a.data(), p.G, s, lds, false);
    k.score_rows(c_.sign_rows(c, st, float(TurboProdCodec::qjl_factor(d_))), n, p.b.data(), p.G, s,
                 lds, true);
  }
  void accumulate(const uint8_t* c, size_t n, const float* w, size_t ldw, int G,
                  float* acc) const override {
    // Per head: [mse part (d) | sign part (d)]; two strided views of the accumulators.
    const auto& k = kernels();
    const size_t st = c_.block_bytes();
    k.acc_rows(c_.mse_rows(c, st), n, w, ldw, G, acc, acc_size());
    k.acc_rows(c_.sign_rows(c, st, 1.0f), n, w, ldw, G, acc + d_, acc_size());
  }
  void finish(const float* acc, float* out) const override { c_.finish(acc, out); }

 private:
  const TurboProdCodec& c_;
  int d_;
};

class TurboSplitOps final : public AttnOps {
 public:
  explicit TurboSplitOps(const TurboSplitCodec& c)
      : c_(c), d_(c.dim()), nh_(c.n_hi()), nl_(c.dim() - c.n_hi()) {}
  size_t acc_size() const override { return size_t(d_); }
  size_t token_bytes() const override { return c_.block_bytes(); }
  void prepare(const float* q, int G, Prepared& p) const override {
    p.G = G;
    p.a.resize(size_t(G) * nh_);
    p.b.resize(size_t(G) * nl_);
    std::vector<float> g(d_);
    const auto& perm = c_.perm();
    for (int h = 0; h < G; ++h) {
      for (int j = 0; j < d_; ++j) g[j] = q[size_t(h) * d_ + perm[j]];
      c_.hi().rotation().forward(g.data(), &p.a[size_t(h) * nh_]);
      c_.lo().rotation().forward(g.data() + nh_, &p.b[size_t(h) * nl_]);
    }
  }
  void score(const Prepared& p, const uint8_t* c, size_t n, float* s, size_t lds) const override {
    const auto& k = kernels();
    const size_t st = c_.block_bytes();
    k.score_rows(c_.hi().rows(c, st), n, p.a.data(), p.G, s, lds, false);
    k.score_rows(c_.lo().rows(c, st, c_.hi().block_bytes()), n, p.b.data(), p.G, s, lds, true);
  }
  void accumulate(const uint8_t* c, size_t n, const float* w, size_t ldw, int G,
                  float* acc) const override {
    const auto& k = kernels();
    const size_t st = c_.block_bytes();
    k.acc_rows(c_.hi().rows(c, st), n, w, ldw, G, acc, size_t(d_));
    k.acc_rows(c_.lo().rows(c, st, c_.hi().block_bytes()), n, w, ldw, G, acc + nh_, size_t(d_));
  }
  void finish(const float* acc, float* out) const override { c_.finish(acc, out); }

 private:
  const TurboSplitCodec& c_;
  int d_, nh_, nl_;
};

// PolarQuant: a step of tokens is decoded once into the rotated domain (table lookups, no
// trigonometry) and then shared by all query heads through the f32 kernels.
class PolarOps final : public AttnOps {
 public:
  PolarOps(const Codec& c, const Rotation& r) : c_(c), rot_(r), d_(c.dim()) {}
  size_t acc_size() const override { return size_t(d_); }
  size_t token_bytes() const override { return c_.block_bytes(); }
  void prepare(const float* q, int G, Prepared& p) const override {
    p.G = G;
    p.a.resize(size_t(G) * d_);
    for (int g = 0; g < G; ++g) rot_.forward(q + size_t(g) * d_, &p.a[size_t(g) * d_]);
  }
  void score(const Prepared& p, const uint8_t* c, size_t n, float* s, size_t lds) const override {
    thread_local std::vector<float> y;
    y.resize(n * d_);
    polar_decode_rotated(c_, c, n, y.data());
    kernels().score_f32(reinterpret_cast<const uint8_t*>(y.data()), n, d_, p.a.data(), p.G, s, lds);
  }
  void accumulate(const uint8_t* c, size_t n, const float* w, size_t ldw, int G,
                  float* acc) const override {
    thread_local std::vector<float> y;
    y.resize(n * d_);
    polar_decode_rotated(c_, c, n, y.data());
    kernels().acc_f32(reinterpret_cast<const uint8_t*>(y.data()), n, d_, w, ldw, G, acc,
                      size_t(d_));
  }
  void finish(const float* acc, float* out) const override { rot_.inverse(acc, out); }

 private:
  const Codec& c_;
  const Rotation& rot_;
  int d_;
};

// Any codec, through the Codec interface (one query head at a time).
class GenericOps final : public AttnOps {
 public:
  explicit GenericOps(const Codec& c) : c_(c) {}
  size_t acc_size() const override { return c_.acc_size(); }
  size_t token_bytes() const override { return c_.block_bytes() / size_t(c_.block_tokens()); }
  void prepare(const float* q, int G, Prepared& p) const override {
    p.G = G;
    p.qs.clear();
    for (int g = 0; g < G; ++g) p.qs.push_back(c_.prepare_query(q + size_t(g) * c_.dim()));
  }
  void score(const Prepared& p, const uint8_t* c, size_t n, float* s, size_t lds) const override {
    const size_t nb = n / size_t(c_.block_tokens());
    for (int g = 0; g < p.G; ++g) c_.score(*p.qs[g], c, nb, s + size_t(g) * lds);
  }
  void accumulate(const uint8_t* c, size_t n, const float* w, size_t ldw, int G,
                  float* acc) const override {
    const size_t nb = n / size_t(c_.block_tokens());
    for (int g = 0; g < G; ++g) c_.accumulate(c, nb, w + size_t(g) * ldw, acc + g * acc_size());
  }
  void finish(const float* acc, float* out) const override { c_.finish(acc, out); }

 private:
  const Codec& c_;
};

bool is_ggml(const Codec& c, const char* name, size_t block) {
  return c.name() == name && c.block_tokens() == 1 && c.dim() % 32 == 0 &&
         c.block_bytes() == size_t(c.dim() / 32) * block;
}

}  // namespace

std::unique_ptr<AttnOps> make_attn_ops(const Codec& c, bool generic) {
  if (!generic && c.block_tokens() == 1) {
    const std::string nm = c.name();
    const int d = c.dim();
    if (nm == "f32" && c.block_bytes() == size_t(d) * 4)
      return std::make_unique<PlainOps>(d, c.block_bytes(), &Kernels::score_f32,
                                        &Kernels::acc_f32);
    if (nm == "f16" && c.block_bytes() == size_t(d) * 2)
      return std::make_unique<PlainOps>(d, c.block_bytes(), &Kernels::score_f16,
                                        &Kernels::acc_f16);
    if (is_ggml(c, "q8_0", 34))
      return std::make_unique<PlainOps>(d, c.block_bytes(), &Kernels::score_q8_0,
                                        &Kernels::acc_q8_0);
    if (is_ggml(c, "q4_0", 18))
      return std::make_unique<PlainOps>(d, c.block_bytes(), &Kernels::score_q4_0,
                                        &Kernels::acc_q4_0);
    if (auto* m = dynamic_cast<const TurboMseCodec*>(&c)) return std::make_unique<TurboMseOps>(*m);
    if (auto* p = dynamic_cast<const TurboProdCodec*>(&c))
      return std::make_unique<TurboProdOps>(*p);
    if (auto* s = dynamic_cast<const TurboSplitCodec*>(&c))
      return std::make_unique<TurboSplitOps>(*s);
    if (const Rotation* r = polar_rotation(c)) return std::make_unique<PolarOps>(c, *r);
  }
  return std::make_unique<GenericOps>(c);
}

// ------------------------------------------------------------------ softmax state
SoftmaxState::SoftmaxState(int h, size_t a)
    : heads(h),
      acc_size(a),
      m(size_t(h), -std::numeric_limits<float>::infinity()),
      l(size_t(h), 0.0f),
      acc(size_t(h) * a, 0.0f) {}

void SoftmaxState::merge(const SoftmaxState& o) {
  TQ_ASSERT(o.heads == heads && o.acc_size == acc_size);
  for (int g = 0; g < heads; ++g) {
    if (o.m[g] == -std::numeric_limits<float>::infinity()) continue;  // o is empty
    const float mx = std::max(m[g], o.m[g]);
    const float a = std::exp(m[g] - mx), b = std::exp(o.m[g] - mx);  // exp(−inf) = 0
    float* x = &acc[size_t(g) * acc_size];
    const float* y = &o.acc[size_t(g) * acc_size];
    for (size_t j = 0; j < acc_size; ++j) x[j] = a * x[j] + b * y[j];
    l[g] = a * l[g] + b * o.l[g];
    m[g] = mx;
  }
}

// ------------------------------------------------------------------ the driver
namespace {

constexpr size_t kChunk = 1024;  // tokens per score/softmax/accumulate step (L1/L2-resident)

struct Work {
  int task;
  size_t begin, end;  // token range
};

// Online softmax over tokens [begin, end) of a task's pages.
void run_range(const AttnOps& kops, const AttnOps& vops, const AttnOps::Prepared& pq,
               std::span<const KvPage> pages, size_t begin, size_t end, float scale,
               SoftmaxState& st) {
  const int G = st.heads;
  const auto& kern = kernels();
  std::vector<float> s(size_t(G) * kChunk), acc_step(st.acc.size()), mstep(G), lstep(G);
  const size_t kb = kops.token_bytes(), vb = vops.token_bytes();
  size_t base = 0;
  for (const KvPage& pg : pages) {
    const size_t lo = std::max(begin, base), hi = std::min(end, base + pg.tokens);
    // Steps end on multiples of kChunk in the global token index, so that a split context is
    // cut into exactly the same steps as the whole (the 8-bit kernels scale per step).
    for (size_t t = lo, n; t < hi; t += n) {
      n = std::min(kChunk - t % kChunk, hi - t);
      const size_t off = t - base;
      kops.score(pq, pg.k + off * kb, n, s.data(), kChunk);
      // Each step is a softmax state of its own (weights relative to the step's max, values
      // summed into a zeroed accumulator) merged into the running state: a step's partial
      // sums do not depend on what came before it, so a split context gives the same steps
      // bit for bit, also on the 8-bit kernels (they quantize the weights per step).
      for (int g = 0; g < G; ++g) {
        float* sg = &s[size_t(g) * kChunk];
        mstep[g] = kern.scale_max(sg, n, scale);
        lstep[g] = kern.exp_sum(sg, n, mstep[g]);
      }
      std::fill(acc_step.begin(), acc_step.end(), 0.0f);
      vops.accumulate(pg.v + off * vb, n, s.data(), kChunk, G, acc_step.data());
      for (int g = 0; g < G; ++g) {
        const float mx = std::max(st.m[g], mstep[g]);
        const float a = std::exp(st.m[g] - mx), b = std::exp(mstep[g] - mx);  // exp(−inf) = 0
        float* x = &st.acc[size_t(g) * st.acc_size];
        const float* y = &acc_step[size_t(g) * st.acc_size];
        for (size_t j = 0; j < st.acc_size; ++j) x[j] = a * x[j] + b * y[j];
        st.l[g] = a * st.l[g] + b * lstep[g];
        st.m[g] = mx;
      }
    }
    base += pg.tokens;
    if (base >= end) break;
  }
}

void check_codecs(const Codec& k, const Codec& v) {
  if (k.dim() != v.dim())
    throw Error("decode attention: K and V head dimensions differ (" + std::to_string(k.dim()) +
                " vs " + std::to_string(v.dim()) + ")");
  if (k.block_tokens() != 1 || v.block_tokens() != 1)
    throw Error("decode attention: cache types with multi-token blocks (" + k.name() + ", " +
                v.name() + ") are not supported by the CPU decode driver yet");
}

}  // namespace

void decode_attention_batch(std::span<const HeadTask> tasks, int G, float scale,
                            const DecodeOptions& opt) {
  TQ_ASSERT(G >= 1);
  const int nt = int(tasks.size());
  if (nt == 0) return;
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  struct Prep {
    std::unique_ptr<AttnOps> k, v;
    AttnOps::Prepared pq;
    size_t tokens = 0;
    int first_work = 0, n_work = 0;
  };
  std::vector<Prep> prep(nt);
  std::vector<Work> work;
  for (int i = 0; i < nt; ++i) {
    const HeadTask& t = tasks[i];
    check_codecs(*t.k, *t.v);
    Prep& p = prep[i];
    p.k = make_attn_ops(*t.k, opt.use_generic);
    p.v = make_attn_ops(*t.v, opt.use_generic);
    p.k->prepare(t.q, G, p.pq);
    for (const auto& pg : t.pages) p.tokens += pg.tokens;
    int splits = opt.splits;
    if (splits <= 0) {  // enough ranges to keep every thread busy, none shorter than the minimum
      splits = (2 * threads + nt - 1) / nt;
      const size_t cap = std::max<size_t>(1, p.tokens / std::max<size_t>(1, opt.min_split_tokens));
      splits = int(std::min<size_t>(size_t(splits), cap));
      if (threads == 1) splits = 1;
    }
    splits = std::max(1, std::min<int>(splits, int(std::max<size_t>(1, p.tokens))));
    p.first_work = int(work.size());
    p.n_work = splits;
    // Range boundaries on multiples of the step, so that splitting does not change the steps.
    auto cut = [&](int s) {
      return s == splits ? p.tokens : p.tokens * size_t(s) / size_t(splits) / kChunk * kChunk;
    };
    for (int s = 0; s < splits; ++s) work.push_back({i, cut(s), cut(s + 1)});
  }
  std::vector<SoftmaxState> states(work.size());
  const int nw = int(work.size());
  // Waking worker threads costs scheduler latency (milliseconds on a busy machine): small jobs
  // run on the calling thread.
  size_t total = 0;
  for (const auto& p : prep) total += p.tokens;
  const bool parallel = nw > 1 && threads > 1 && total * size_t(G) >= opt.min_parallel_work;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (parallel)
  for (int w = 0; w < nw; ++w) {
    const Work& wk = work[w];
    const Prep& p = prep[wk.task];
    states[w] = SoftmaxState(G, p.v->acc_size());
    run_range(*p.k, *p.v, p.pq, tasks[wk.task].pages, wk.begin, wk.end, scale, states[w]);
  }
  // Merge each task's ranges in order (deterministic), then normalise and map back.
  for (int i = 0; i < nt; ++i) {
    const Prep& p = prep[i];
    SoftmaxState& st = states[p.first_work];
    for (int s = 1; s < p.n_work; ++s) st.merge(states[p.first_work + s]);
    const int d = tasks[i].k->dim();
    for (int g = 0; g < G; ++g) {
      float* a = &st.acc[size_t(g) * st.acc_size];
      float* out = tasks[i].out + size_t(g) * d;
      if (st.l[g] > 0) kernels().scale(a, st.acc_size, 1.0f / st.l[g]);
      if (p.tokens == 0) std::fill(a, a + st.acc_size, 0.0f);
      p.v->finish(a, out);
    }
  }
}

void decode_attention(const Codec& kc, const Codec& vc, std::span<const KvPage> pages,
                      const float* q, int G, float scale, float* out, const DecodeOptions& opt) {
  const HeadTask t{&kc, &vc, pages, q, out};
  decode_attention_batch(std::span<const HeadTask>(&t, 1), G, scale, opt);
}

}  // namespace tq::cpu
