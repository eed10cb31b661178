// turboquant — the decode algorithm over a KV head's segments (see decode.h).
#include "attention/decode.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/parallel.h"
#include "cpu/dispatch.h"

namespace tq {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Any codec, through the Codec interface (one query head at a time, with positions).
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
  void score(const Prepared& p, const uint8_t* c, size_t n, int64_t pos0, float* s,
             size_t lds) const override {
    const size_t nb = n / size_t(c_.block_tokens());
    for (int g = 0; g < p.G; ++g) c_.score_at(*p.qs[g], c, nb, pos0, s + size_t(g) * lds);
  }
  void accumulate(const uint8_t* c, size_t n, const float* w, size_t ldw, int G, float* acc,
                  size_t lda) const override {
    const size_t nb = n / size_t(c_.block_tokens());
    for (int g = 0; g < G; ++g) c_.accumulate(c, nb, w + size_t(g) * ldw, acc + size_t(g) * lda);
  }
  void finish(const float* acc, float* out) const override { c_.finish(acc, out); }

 private:
  const Codec& c_;
};

// The per-task state of one call: ops, prepared queries, accumulator layout, ranges.
struct Prep {
  std::unique_ptr<AttnOps> k, v, f16;  // f16: the f16 segments' ops (when there are any)
  AttnOps::Prepared pk, pf;            // the query prepared for k and for f16
  int bk = 1, bv = 1;                  // tokens per block of the K / V codec
  size_t kbb = 0, vbb = 0;             // bytes per block
  bool v_codes = false, v_f16 = false;
  size_t acc_codes = 0, acc_total = 0;  // per head: [V working domain | f16 values (d)]
  int first_work = 0, n_work = 0;
};

struct Work {
  int task;
  size_t begin, end;  // token range
};

// Checks that segs cover [0, n) in order and reports which kinds of segment they hold there.
void scan_segments(std::span<const KvSegment> segs, size_t n, bool& codes, bool& f16) {
  size_t pos = 0;
  for (const KvSegment& s : segs) {
    if (pos >= n) break;
    TQ_ASSERT(size_t(s.pos0) == pos && s.n > 0 && (s.codes != nullptr) != (s.f16 != nullptr));
    (s.codes ? codes : f16) = true;
    pos += size_t(s.n);
  }
  TQ_ASSERT(pos >= n);
}

// Scratch of one token range, reused across its steps.
struct Scratch {
  std::vector<float> s, tmp;  // scores / weights (G × kDecodeStep), a block-aligned piece
  SoftmaxState step;
};

// Scores of positions [lo, hi) of segment sg into s[g·kDecodeStep + (lo − t)].
void score_piece(const HeadTask& task, const Prep& p, const KvSegment& sg, size_t lo, size_t hi,
                 size_t t, int G, Scratch& sc) {
  const int d = task.k->dim();
  float* dst = sc.s.data() + (lo - t);
  const size_t off = lo - size_t(sg.pos0);
  if (sg.f16) {
    const auto* rows = reinterpret_cast<const uint8_t*>(sg.f16) + off * size_t(d) * 2;
    p.f16->score(p.pf, rows, hi - lo, int64_t(lo), dst, kDecodeStep);
  } else if (p.bk == 1) {
    p.k->score(p.pk, sg.codes + off * p.kbb, hi - lo, int64_t(lo), dst, kDecodeStep);
  } else {
    // Whole blocks around the piece, scored into tmp; the piece's scores are copied out.
    const size_t b0 = off / size_t(p.bk), b1 = (hi - size_t(sg.pos0) + p.bk - 1) / size_t(p.bk);
    const size_t nt = (b1 - b0) * size_t(p.bk), skip = off - b0 * size_t(p.bk);
    sc.tmp.resize(size_t(G) * nt);
    p.k->score(p.pk, sg.codes + b0 * p.kbb, nt, sg.pos0 + int64_t(b0) * p.bk, sc.tmp.data(), nt);
    for (int g = 0; g < G; ++g)
      std::memcpy(dst + size_t(g) * kDecodeStep, &sc.tmp[size_t(g) * nt + skip],
                  sizeof(float) * (hi - lo));
  }
  if (sg.key_offset)  // the page's key-mean offset δ: every score of query g gains q_g·δ
    for (int g = 0; g < G; ++g) {
      const float* qg = task.q + size_t(g) * d;
      float c = 0.f;
      for (int j = 0; j < d; ++j) c += qg[j] * sg.key_offset[j];
      float* row = dst + size_t(g) * kDecodeStep;
      for (size_t i = 0; i < hi - lo; ++i) row[i] += c;
    }
}

// Values of positions [lo, hi) of segment sg, weighted by s[g·kDecodeStep + (lo − t)], into
// the step's accumulators.
void accumulate_piece(const HeadTask& task, const Prep& p, const KvSegment& sg, size_t lo,
                      size_t hi, size_t t, int G, Scratch& sc) {
  const int d = task.v->dim();
  const float* w = sc.s.data() + (lo - t);
  float* acc = sc.step.acc.data();
  const size_t off = lo - size_t(sg.pos0);
  if (sg.f16) {
    const auto* rows = reinterpret_cast<const uint8_t*>(sg.f16) + off * size_t(d) * 2;
    p.f16->accumulate(rows, hi - lo, w, kDecodeStep, G, acc + p.acc_codes, p.acc_total);
  } else if (p.bv == 1) {
    p.v->accumulate(sg.codes + off * p.vbb, hi - lo, w, kDecodeStep, G, acc, p.acc_total);
  } else {
    // Whole blocks around the piece; the tokens outside it get weight 0.
    const size_t b0 = off / size_t(p.bv), b1 = (hi - size_t(sg.pos0) + p.bv - 1) / size_t(p.bv);
    const size_t nt = (b1 - b0) * size_t(p.bv), skip = off - b0 * size_t(p.bv);
    sc.tmp.assign(size_t(G) * nt, 0.0f);
    for (int g = 0; g < G; ++g)
      std::memcpy(&sc.tmp[size_t(g) * nt + skip], w + size_t(g) * kDecodeStep,
                  sizeof(float) * (hi - lo));
    p.v->accumulate(sg.codes + b0 * p.vbb, nt, sc.tmp.data(), nt, G, acc, p.acc_total);
  }
}

// Online softmax over positions [begin, end) of a task into st.
void run_range(const HeadTask& task, const Prep& p, size_t begin, size_t end, float scale, int G,
               SoftmaxState& st) {
  const auto& kern = cpu::kernels();
  Scratch sc;
  sc.s.resize(size_t(G) * kDecodeStep);
  sc.step = SoftmaxState(G, p.acc_total);
  size_t ki = 0, vi = 0;  // the first K / V segment that may overlap the step
  for (size_t t = begin, n; t < end; t += n) {
    // Steps end on multiples of kDecodeStep in the global position, so that a split context is
    // cut into exactly the same steps as the whole (the 8-bit kernels scale per call).
    n = std::min(kDecodeStep - t % kDecodeStep, end - t);
    const size_t e = t + n;
    while (size_t(task.ks[ki].pos0 + task.ks[ki].n) <= t) ++ki;
    for (size_t i = ki; i < task.ks.size() && size_t(task.ks[i].pos0) < e; ++i) {
      const KvSegment& sg = task.ks[i];
      score_piece(task, p, sg, std::max(t, size_t(sg.pos0)), std::min(e, size_t(sg.pos0 + sg.n)),
                  t, G, sc);
    }
    // The step is a softmax state of its own (weights relative to its max, values summed into
    // a zeroed accumulator) merged into the running one: a step's partial sums do not depend
    // on what came before it.
    for (int g = 0; g < G; ++g) {
      float* sg = &sc.s[size_t(g) * kDecodeStep];
      sc.step.m[g] = kern.scale_max(sg, n, scale);
      sc.step.l[g] = kern.exp_sum(sg, n, sc.step.m[g]);
    }
    std::fill(sc.step.acc.begin(), sc.step.acc.end(), 0.0f);
    while (size_t(task.vs[vi].pos0 + task.vs[vi].n) <= t) ++vi;
    for (size_t i = vi; i < task.vs.size() && size_t(task.vs[i].pos0) < e; ++i) {
      const KvSegment& sg = task.vs[i];
      accumulate_piece(task, p, sg, std::max(t, size_t(sg.pos0)),
                       std::min(e, size_t(sg.pos0 + sg.n)), t, G, sc);
    }
    st.merge(sc.step);
  }
}

}  // namespace

// ------------------------------------------------------------------ softmax state
SoftmaxState::SoftmaxState(int h, size_t a)
    : heads(h), acc_size(a), m(size_t(h), kNegInf), l(size_t(h), 0.0f), acc(size_t(h) * a, 0.0f) {}

void SoftmaxState::clear() {
  std::fill(m.begin(), m.end(), kNegInf);
  std::fill(l.begin(), l.end(), 0.0f);
  std::fill(acc.begin(), acc.end(), 0.0f);
}

void SoftmaxState::merge(const SoftmaxState& o) {
  TQ_ASSERT(o.heads == heads && o.acc_size == acc_size);
  for (int g = 0; g < heads; ++g) {
    if (o.m[g] == kNegInf) continue;  // o is empty
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
std::unique_ptr<AttnOps> make_attn_ops(const Codec& c, bool generic) {
  if (!generic)
    if (auto ops = c.attn_ops()) return ops;
  return std::make_unique<GenericOps>(c);
}

void decode_attention_batch(std::span<const HeadTask> tasks, int G, float scale,
                            const DecodeOptions& opt) {
  TQ_ASSERT(G >= 1);
  const int nt = int(tasks.size());
  if (nt == 0) return;
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  std::vector<Prep> prep(nt);
  std::vector<Work> work;
  for (int i = 0; i < nt; ++i) {
    const HeadTask& t = tasks[i];
    TQ_ASSERT(t.k->dim() == t.v->dim());  // the cache holds K and V of one head dim
    const int d = t.k->dim();
    Prep& p = prep[i];
    bool k_codes = false, k_f16 = false;
    scan_segments(t.ks, t.n, k_codes, k_f16);
    scan_segments(t.vs, t.n, p.v_codes, p.v_f16);
    p.k = make_attn_ops(*t.k, opt.use_generic);
    p.v = make_attn_ops(*t.v, opt.use_generic);
    p.bk = t.k->block_tokens();
    p.bv = t.v->block_tokens();
    p.kbb = t.k->block_bytes();
    p.vbb = t.v->block_bytes();
    if (k_codes) p.k->prepare(t.q, G, p.pk);
    if (k_f16 || p.v_f16) {
      p.f16 = make_plain_ops(PlainRows::kF16, d);
      if (k_f16) p.f16->prepare(t.q, G, p.pf);
    }
    p.acc_codes = p.v->acc_size();
    p.acc_total = p.acc_codes + (p.v_f16 ? size_t(d) : 0);
    int splits = opt.splits;
    if (splits <= 0) {  // enough ranges to keep every thread busy, none shorter than the minimum
      splits = (2 * threads + nt - 1) / nt;
      const size_t cap =
          std::max<size_t>(1, (t.n - t.first) / std::max<size_t>(1, opt.min_split_tokens));
      splits = int(std::min<size_t>(size_t(splits), cap));
      if (threads == 1) splits = 1;
    }
    TQ_ASSERT(t.first <= t.n);
    splits = std::max(1, std::min<int>(splits, int(std::max<size_t>(1, t.n - t.first))));
    p.first_work = int(work.size());
    p.n_work = splits;
    // Range boundaries on multiples of the step, so that splitting does not change the steps.
    // The visible range is [first, n) (first > 0 in a sliding-window layer).
    auto cut = [&](int s) {
      if (s == 0 || s == splits) return s == 0 ? t.first : t.n;
      const size_t c = (t.first + (t.n - t.first) * size_t(s) / size_t(splits)) / kDecodeStep;
      return std::max(t.first, c * kDecodeStep);
    };
    for (int s = 0; s < splits; ++s) work.push_back({i, cut(s), cut(s + 1)});
  }
  std::vector<SoftmaxState> states(work.size());
  const int nw = int(work.size());
  // Waking worker threads costs scheduler latency (milliseconds on a busy machine): small jobs
  // run on the calling thread.
  size_t total = 0;
  for (const auto& t : tasks) total += t.n;
  const bool parallel = nw > 1 && threads > 1 && total * size_t(G) >= opt.min_parallel_work;
  ParallelErrors errors;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (parallel)
  for (int w = 0; w < nw; ++w)
    errors.run([&] {
      const Work& wk = work[w];
      const Prep& p = prep[wk.task];
      states[w] = SoftmaxState(G, p.acc_total);
      run_range(tasks[wk.task], p, wk.begin, wk.end, scale, G, states[w]);
    });
  errors.rethrow();
  // Merge each task's ranges in order (deterministic), then normalise and map back.
  for (int i = 0; i < nt; ++i) {
    const Prep& p = prep[i];
    SoftmaxState& st = states[p.first_work];
    for (int s = 1; s < p.n_work; ++s) st.merge(states[p.first_work + s]);
    const int d = tasks[i].k->dim();
    for (int g = 0; g < G; ++g) {
      float* a = &st.acc[size_t(g) * st.acc_size];
      float* out = tasks[i].out + size_t(g) * d;
      if (st.l[g] > 0) cpu::kernels().scale(a, st.acc_size, 1.0f / st.l[g]);
      if (tasks[i].n == 0) std::fill(a, a + st.acc_size, 0.0f);
      if (p.v_codes || !p.v_f16)
        p.v->finish(a, out);
      else
        std::fill(out, out + d, 0.0f);
      if (p.v_f16)
        for (int j = 0; j < d; ++j) out[j] += a[p.acc_codes + j];
    }
  }
}

std::vector<KvSegment> page_segments(std::span<const KvPage> pages, bool keys) {
  std::vector<KvSegment> segs;
  int pos = 0;
  for (const KvPage& pg : pages) {
    if (pg.tokens == 0) continue;
    segs.push_back({pos, int(pg.tokens), keys ? pg.k : pg.v, nullptr});
    pos += int(pg.tokens);
  }
  return segs;
}

void decode_attention(const Codec& kc, const Codec& vc, std::span<const KvPage> pages,
                      const float* q, int G, float scale, float* out, const DecodeOptions& opt) {
  const std::vector<KvSegment> ks = page_segments(pages, true), vs = page_segments(pages, false);
  size_t n = 0;
  for (const auto& pg : pages) n += pg.tokens;
  const HeadTask t{&kc, &vc, ks, vs, n, q, out};
  decode_attention_batch(std::span<const HeadTask>(&t, 1), G, scale, opt);
}

}  // namespace tq
