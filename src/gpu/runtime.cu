// turboquant GPU runtime — the forward pass over the paged GPU cache (see runtime.h).
//
// Data flow of one forward over n rows (decode: one row per sequence; prefill: one row per
// prompt token of one sequence): embedding gather (fp32 residual x) → per layer: RMSNorm → bf16,
// one Q|K|V GEMM (fp32 out), bias + RoPE + split (q fp32, k/v bf16), the cache's fused append
// then its decode / prefill attention (reads the compressed pages), o-projection GEMM added
// into x (beta = 1), RMSNorm, one gate|up GEMM, SwiGLU → bf16, down GEMM added into x; final
// RMSNorm, logits GEMM, sampling. GEMMs: cublasGemmEx, bf16 in, fp32 accumulate and out.
// The decode step keeps its bookkeeping (tokens, positions, lengths, sampling step) on the
// device, so one captured CUDA graph replays step after step (DESIGN.md §9).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "cuda/consts.cuh"
#include "cuda/tq_cuda.h"
#include "gpu/linear.h"
#include "gpu/model_impl.h"
#include "gpu/ops.h"
#include "tq/error.h"

namespace tq::gpu {

using tq::cuda::check_cuda;
#define GCK(x) check_cuda(int(x), #x)

namespace {

void blas_check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLAS error ") + std::to_string(int(s)) + " (" + what + ")");
}

template <class T>
T* dalloc(size_t n, std::vector<void*>& owned) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T));
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error("GPU: out of memory (" + std::to_string((n * sizeof(T)) >> 20) +
                " MiB for the runtime's buffers)");
  }
  owned.push_back(p);
  return static_cast<T*>(p);
}

template <class T>
T* halloc(size_t n, std::vector<void*>& owned) {
  void* p = nullptr;
  GCK(cudaMallocHost(&p, std::max<size_t>(n, 1) * sizeof(T)));
  owned.push_back(p);
  return static_cast<T*>(p);
}

constexpr int kBucketTokens = 256;  // decode graphs are keyed by max length in these steps

}  // namespace

struct GpuRuntime::Impl {
  const GpuModel::Impl& W;
  LlamaHparams hp;
  RuntimeConfig cfg;
  int E, D, NH, NKV, F, V, QKV, HQ, R, max_pages;
  float scale;
  std::vector<std::unique_ptr<cuda::GpuCache>> caches;
  cudaStream_t st = nullptr;
  cublasHandle_t blas = nullptr;
  std::vector<void*> dev, host;

  // activations, R rows
  float *x, *qkv, *q, *att, *gu, *logits;
  float* ss = nullptr;  // partial sums of squares of x (small-batch residual linears)
  int ss_blocks = 0;
  uint16_t *xn, *k, *v, *attb, *h;
  // decode batch (rows = batch positions) and prefill chunk
  int *d_tokens, *d_pos, *d_lens, *d_sampled, *d_step, *d_bt;
  int *h_tokens, *h_pos, *h_lens, *h_bt, *h_sampled;
  int *d_ptok, *d_ppos, *d_pbt, *d_pstart, *h_ptok, *h_ppos, *h_pbt;
  int *d_zero, *h_zero;

  struct Seq {
    bool live = false;
    int len = 0;
    std::vector<int> pages;
  };
  std::vector<Seq> seqs;
  std::vector<int> free_pages;
  std::vector<char> page_used;  // ever written: must be zeroed before reuse
  std::vector<int> to_zero;
  std::vector<int> bound;        // batch row → sequence
  std::vector<int> bound_pages;  // pages of that row already uploaded

  struct Graph {
    int B, max_seq;
    float temp;
    uint64_t seed;
    cudaGraphExec_t exec;
  };
  std::vector<Graph> graphs;
  std::vector<Graph> warm;  // keys run once eagerly (buffers sized), capture next time
  std::string graph_fail;
  long graph_steps = 0, eager_steps = 0;

  Impl(const GpuModel& m, const RuntimeConfig& c) : W(m.impl()), hp(m.hparams()), cfg(c) {}
  // also what a constructor that failed half-way has allocated
  ~Impl() {
    if (st) cudaStreamSynchronize(st);
    for (auto& g : graphs) cudaGraphExecDestroy(g.exec);
    if (blas) cublasDestroy(blas);
    if (st) cudaStreamDestroy(st);
    for (void* p : dev) cudaFree(p);
    for (void* p : host) cudaFreeHost(p);
  }

  void gemm(const uint16_t* X, int n, const uint16_t* Wt, int in, int out, float* Y,
            float beta) {
    // row-major Y[n][out] = X[n][in]·Wᵀ is column-major Yᵀ = (W as in×out)ᵀ · Xᵀ
    const float alpha = 1.f;
    blas_check(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &alpha, Wt, CUDA_R_16BF,
                            in, X, CUDA_R_16BF, in, &beta, Y, CUDA_R_32F, out,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
  }

  // Y[n][out] (+)= X·Wᵀ by the small-batch kernel (linear.h) with programmatic dependent
  // launch; LinearArgs says which input and epilogue.
  void linear(LinearArgs a, const uint16_t* Wt, int in, int out, int n) {
    a.W = Wt;
    a.in = in;
    a.out = out;
    a.n = n;
    launch_linear_small(a, st, cfg.pdl);
  }
  bool small_linear(int n) const {
    return cfg.small_linear && n <= cfg.small_linear_rows && linear_small_ok(n, E, QKV) &&
           linear_small_ok(n, HQ, E) && linear_small_ok(n, E, 2 * F) && linear_small_ok(n, F, E);
  }

  // The layers over n rows; attend(l) appends layer l's k/v and writes att.
  // Up to cfg.small_linear_rows rows (small decode batches) the linear layers are the
  // small-batch kernel with the norms, conversions, residual adds and SwiGLU folded in (4 GEMM
  // and 3-4 attention launches per layer); above, cuBLAS and the separate kernels of ops.h.
  void layers(int n, const int* d_tok, const int* d_posv, const std::function<void(int)>& attend) {
    launch_embed(W.tok_embd, d_tok, x, n, E, st);
    const bool small = small_linear(n);
    LinearArgs res;  // residual into x, partial sums of squares for the next norm
    res.epi = LinearArgs::kResidual;
    res.y = x;
    res.ss_out = ss;
    for (int l = 0; l < hp.n_layer; ++l) {
      const GpuModel::Impl::Layer& L = W.layers[l];
      QkvArgs a{qkv, L.bqkv, d_posv, W.inv_freq, hp.rope_freq_scale,
                hp.rope == RopePairing::kNeox, n, NH, NKV, D, q, k, v};
      if (!small) {
        launch_rmsnorm_bf16(x, L.attn_norm, xn, n, E, hp.rms_eps, st);
        gemm(xn, n, L.wqkv, E, QKV, qkv, 0.f);
        launch_qkv_rope(a, st);
        attend(l);
        launch_f32_to_bf16(att, attb, size_t(n) * HQ, st);
        gemm(attb, n, L.wo, HQ, E, x, 1.f);
        launch_rmsnorm_bf16(x, L.ffn_norm, xn, n, E, hp.rms_eps, st);
        gemm(xn, n, L.wgu, E, 2 * F, gu, 0.f);
        launch_swiglu_bf16(gu, h, n, F, st);
        gemm(h, n, L.wdown, F, E, x, 1.f);
        continue;
      }
      LinearArgs in;  // the attention input: normalised from the previous layer's partials
      in.epi = LinearArgs::kStore;
      in.y = qkv;
      if (l == 0) {
        launch_rmsnorm_bf16(x, L.attn_norm, xn, n, E, hp.rms_eps, st);
        in.x_bf16 = xn;
      } else {
        in.x_f32 = x;
        in.norm_w = L.attn_norm;
        in.ss_parts = ss;
        in.ss_blocks = ss_blocks;
        in.eps = hp.rms_eps;
      }
      linear(in, L.wqkv, E, QKV, n);
      launch_qkv_rope(a, st, cfg.pdl);
      attend(l);
      LinearArgs o = res;  // attention output fp32 → bf16 on load
      o.x_f32 = att;
      linear(o, L.wo, HQ, E, n);
      LinearArgs gu_;  // ffn input normalised on load, SwiGLU on output
      gu_.epi = LinearArgs::kSwiglu;
      gu_.h = h;
      gu_.x_f32 = x;
      gu_.norm_w = L.ffn_norm;
      gu_.ss_parts = ss;
      gu_.ss_blocks = ss_blocks;
      gu_.eps = hp.rms_eps;
      linear(gu_, L.wgu, E, 2 * F, n);
      LinearArgs dn = res;
      dn.x_bf16 = h;
      linear(dn, L.wdown, F, E, n);
    }
  }
  // logits of rows [r0, r0 + n) of x into logits[0..n)
  void head(int r0, int n) {
    launch_rmsnorm_bf16(x + size_t(r0) * E, W.output_norm, xn, n, E, hp.rms_eps, st);
    if (cfg.small_linear && n <= cfg.small_linear_rows && linear_small_ok(n, E, V)) {
      LinearArgs lo;
      lo.x_bf16 = xn;
      lo.y = logits;
      linear(lo, W.output, E, V, n);
    } else {
      gemm(xn, n, W.output, E, V, logits, 0.f);
    }
  }

  void flush_zero() {
    if (to_zero.empty()) return;
    size_t done = 0;
    while (done < to_zero.size()) {
      const int n = int(std::min<size_t>(to_zero.size() - done, size_t(R) * 4));
      std::memcpy(h_zero, to_zero.data() + done, sizeof(int) * n);
      GCK(cudaMemcpyAsync(d_zero, h_zero, sizeof(int) * n, cudaMemcpyHostToDevice, st));
      for (auto& c : caches) launch_zero_pages(c->pool(), d_zero, n, c->page_bytes(), st);
      GCK(cudaStreamSynchronize(st));  // h_zero is reused
      done += size_t(n);
    }
    to_zero.clear();
  }

  bool reserve(int s, int n_total) {
    Seq& q_ = seqs[s];
    const int need = (n_total + 31) / 32 - int(q_.pages.size());
    if (need <= 0) return true;
    if (need > int(free_pages.size())) return false;
    for (int i = 0; i < need; ++i) {
      const int p = free_pages.back();
      free_pages.pop_back();
      if (page_used[p]) to_zero.push_back(p);
      page_used[p] = 1;
      q_.pages.push_back(p);
    }
    return true;
  }
  void reserve_or_throw(int s, int n_total) {
    if (n_total > cfg.max_ctx)
      throw Error("GPU runtime: sequence of " + std::to_string(n_total) +
                  " tokens exceeds the context of " + std::to_string(cfg.max_ctx));
    if (!reserve(s, n_total))
      throw Error("GPU KV cache full: " + std::to_string(free_pages.size()) +
                  " free pages, sequence needs " +
                  std::to_string((n_total + 31) / 32 - seqs[s].pages.size()) + " more");
  }

  // Batch rows ← seqs: block-table entries not yet on the device, positions, lengths.
  void bind(const std::vector<int>& ss) {
    const int B = int(ss.size());
    if (B <= 0 || B > cfg.max_seqs) throw Error("GPU decode: batch of " + std::to_string(B) +
                                                " (1.." + std::to_string(cfg.max_seqs) + ")");
    if (bound.size() < size_t(B)) {
      bound.resize(B, -1);
      bound_pages.resize(B, 0);
    }
    for (int b = 0; b < B; ++b) {
      const int s = ss[b];
      if (s < 0 || s >= int(seqs.size()) || !seqs[s].live)
        throw Error("GPU decode: sequence " + std::to_string(s) + " is not live");
      const Seq& S = seqs[s];
      if (bound[b] != s) {
        bound[b] = s;
        bound_pages[b] = 0;
      }
      const int from = bound_pages[b], to = int(S.pages.size());
      if (to > from) {
        int* row = h_bt + size_t(b) * max_pages;
        std::copy(S.pages.begin() + from, S.pages.end(), row + from);
        GCK(cudaMemcpyAsync(d_bt + size_t(b) * max_pages + from, row + from,
                            sizeof(int) * (to - from), cudaMemcpyHostToDevice, st));
        bound_pages[b] = to;
      }
      h_pos[b] = S.len;
      h_lens[b] = S.len + 1;
    }
    GCK(cudaMemcpyAsync(d_pos, h_pos, sizeof(int) * B, cudaMemcpyHostToDevice, st));
    GCK(cudaMemcpyAsync(d_lens, h_lens, sizeof(int) * B, cudaMemcpyHostToDevice, st));
  }

  void decode_body(int B, int max_seq, float temp, uint64_t seed) {
    layers(B, d_tokens, d_pos, [&](int l) {
      caches[l]->append(k, v, B, 1, d_bt, max_pages, d_pos, st);
      caches[l]->decode(q, att, B, NH, d_bt, max_pages, d_lens, max_seq, scale, 0, st);
    });
    head(0, B);
    launch_sample(logits, B, V, temp, seed, d_step, d_sampled, st);
    launch_advance(d_sampled, d_tokens, d_pos, d_lens, d_step, B, st);
  }

  // One decode step on the bound rows (graph replay when possible).
  void step(int B, int max_seq, float temp, uint64_t seed) {
    auto same = [&](const Graph& g) {
      return g.B == B && g.max_seq == max_seq && g.temp == temp && g.seed == seed;
    };
    if (cfg.graphs && graph_fail.empty()) {
      for (const Graph& g : graphs)
        if (same(g)) {
          GCK(cudaGraphLaunch(g.exec, st));
          ++graph_steps;
          return;
        }
      const bool seen = std::any_of(warm.begin(), warm.end(), same);
      if (seen) {
        cudaGraph_t graph = nullptr;
        GCK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        try {
          decode_body(B, max_seq, temp, seed);
        } catch (const std::exception& e) {
          graph_fail = e.what();
        }
        const cudaError_t ec = cudaStreamEndCapture(st, &graph);
        cudaGraphExec_t exec = nullptr;
        if (graph_fail.empty() && ec != cudaSuccess)
          graph_fail = std::string("capture: ") + cudaGetErrorString(ec);
        if (graph_fail.empty()) {
          const cudaError_t ei = cudaGraphInstantiate(&exec, graph, 0);
          if (ei != cudaSuccess) graph_fail = std::string("instantiate: ") + cudaGetErrorString(ei);
        }
        if (graph) cudaGraphDestroy(graph);
        cudaGetLastError();
        if (graph_fail.empty()) {
          graphs.push_back({B, max_seq, temp, seed, exec});
          GCK(cudaGraphLaunch(exec, st));
          ++graph_steps;
          return;
        }
        // fall through: eager from now on (reported by graph_status)
      } else {
        warm.push_back({B, max_seq, temp, seed, nullptr});
      }
    }
    drop_graphs();  // this eager step may grow (reallocate) the caches' work buffers
    decode_body(B, max_seq, temp, seed);
    ++eager_steps;
  }

  // Captured graphs hold the caches' work-buffer addresses; any eager cache call (a new batch
  // shape, a prefill) may reallocate them, so the graphs are dropped first and re-captured.
  void drop_graphs() {
    if (graphs.empty()) return;
    GCK(cudaStreamSynchronize(st));
    for (auto& g : graphs) cudaGraphExecDestroy(g.exec);
    graphs.clear();
  }

  int bucket(int max_len) const {
    const int b = (max_len + kBucketTokens - 1) / kBucketTokens * kBucketTokens;
    return std::min(b, max_pages * 32);
  }
};

GpuRuntime::GpuRuntime(const GpuModel& model, const RuntimeConfig& cfg) : cfg_(cfg) {
  if (cfg.max_seqs <= 0 || cfg.max_ctx <= 0 || cfg.max_chunk <= 0)
    throw Error("GPU runtime: max_seqs, max_ctx and max_chunk must be positive");
  impl_ = std::make_unique<Impl>(model, cfg);
  Impl& I = *impl_;
  const LlamaHparams& hp = I.hp;
  I.E = hp.n_embd;
  I.D = hp.head_dim;
  I.NH = hp.n_head;
  I.NKV = hp.n_kv_head;
  I.F = hp.n_ff;
  I.V = hp.n_vocab;
  I.QKV = (I.NH + 2 * I.NKV) * I.D;
  I.HQ = I.NH * I.D;
  I.R = std::max(cfg.max_seqs, cfg.max_chunk);
  I.max_pages = (cfg.max_ctx + 31) / 32;
  I.scale = 1.f / std::sqrt(float(I.D));
  const int n_pages = cfg.n_pages > 0 ? cfg.n_pages : cfg.max_seqs * I.max_pages;

  cuda::CacheConfig cc;
  cc.kfmt = cc.vfmt = cuda::parse_fmt(cfg.cache_type);
  cc.head_dim = I.D;
  cc.n_kv_heads = I.NKV;
  cc.n_pages = n_pages;
  cc.seed = cfg.cache_seed;
  cuda::DecodeGrid grid = cuda::DecodeGrid::kAuto;
  if (cfg.decode_grid == "split") grid = cuda::DecodeGrid::kSplit;
  else if (cfg.decode_grid == "stream") grid = cuda::DecodeGrid::kStream;
  else if (cfg.decode_grid != "auto")
    throw Error("GPU runtime: unknown decode grid '" + cfg.decode_grid + "' (auto, split, stream)");
  for (int l = 0; l < hp.n_layer; ++l) {
    try {
      I.caches.push_back(std::make_unique<cuda::GpuCache>(cc));
      I.caches.back()->set_decode_grid(grid);
    } catch (const Error& e) {
      cudaGetLastError();
      throw Error(std::string("GPU runtime: cache type '") + cfg.cache_type + "': " + e.what());
    }
  }
  TQ_ASSERT(I.caches[0]->page_bytes() % 16 == 0);

  GCK(cudaStreamCreateWithFlags(&I.st, cudaStreamNonBlocking));
  blas_check(cublasCreate(&I.blas), "cublasCreate");
  blas_check(cublasSetStream(I.blas, I.st), "cublasSetStream");
  // a workspace of our own: cuBLAS then allocates nothing inside a graph capture
  const size_t ws = size_t(64) << 20;
  blas_check(cublasSetWorkspace(I.blas, dalloc<uint8_t>(ws, I.dev), ws), "cublasSetWorkspace");

  const size_t R = size_t(I.R);
  I.x = dalloc<float>(R * I.E, I.dev);
  I.qkv = dalloc<float>(R * I.QKV, I.dev);
  I.q = dalloc<float>(R * I.HQ, I.dev);
  I.att = dalloc<float>(R * I.HQ, I.dev);
  I.gu = dalloc<float>(R * 2 * I.F, I.dev);
  I.logits = dalloc<float>(size_t(cfg.max_seqs) * I.V, I.dev);
  {
    LinearArgs res;  // the residual linears' grid (o and down projections: out = E)
    res.out = I.E;
    I.ss_blocks = linear_ss_blocks(res);
    I.ss = dalloc<float>(size_t(I.ss_blocks) * kLinearMaxRows, I.dev);
  }
  I.xn = dalloc<uint16_t>(R * I.E, I.dev);
  I.k = dalloc<uint16_t>(R * I.NKV * I.D, I.dev);
  I.v = dalloc<uint16_t>(R * I.NKV * I.D, I.dev);
  I.attb = dalloc<uint16_t>(R * I.HQ, I.dev);
  I.h = dalloc<uint16_t>(R * I.F, I.dev);
  const size_t B = size_t(cfg.max_seqs);
  I.d_tokens = dalloc<int>(B, I.dev);
  I.d_pos = dalloc<int>(B, I.dev);
  I.d_lens = dalloc<int>(B, I.dev);
  I.d_sampled = dalloc<int>(B, I.dev);
  I.d_step = dalloc<int>(1, I.dev);
  I.d_bt = dalloc<int>(B * I.max_pages, I.dev);
  I.h_tokens = halloc<int>(B, I.host);
  I.h_pos = halloc<int>(B, I.host);
  I.h_lens = halloc<int>(B, I.host);
  I.h_sampled = halloc<int>(B, I.host);
  I.h_bt = halloc<int>(B * I.max_pages, I.host);
  const size_t C = size_t(cfg.max_chunk);
  I.d_ptok = dalloc<int>(C, I.dev);
  I.d_ppos = dalloc<int>(C, I.dev);
  I.d_pbt = dalloc<int>(I.max_pages, I.dev);
  I.d_pstart = dalloc<int>(B, I.dev);
  I.h_ptok = halloc<int>(C, I.host);
  I.h_ppos = halloc<int>(std::max(C, B), I.host);
  I.h_pbt = halloc<int>(I.max_pages, I.host);
  I.d_zero = dalloc<int>(R * 4, I.dev);
  I.h_zero = halloc<int>(R * 4, I.host);
  GCK(cudaMemsetAsync(I.d_step, 0, sizeof(int), I.st));
  GCK(cudaMemsetAsync(I.d_bt, 0, sizeof(int) * B * I.max_pages, I.st));
  GCK(cudaStreamSynchronize(I.st));

  I.seqs.resize(cfg.max_seqs);
  I.page_used.assign(n_pages, 0);
  for (int p = n_pages - 1; p >= 0; --p) I.free_pages.push_back(p);
}

GpuRuntime::~GpuRuntime() = default;

int GpuRuntime::new_seq() {
  Impl& I = *impl_;
  for (size_t s = 0; s < I.seqs.size(); ++s)
    if (!I.seqs[s].live) {
      I.seqs[s] = Impl::Seq{};
      I.seqs[s].live = true;
      return int(s);
    }
  throw Error("GPU runtime: all " + std::to_string(cfg_.max_seqs) + " sequence slots in use");
}

void GpuRuntime::free_seq(int s) {
  Impl& I = *impl_;
  if (s < 0 || s >= int(I.seqs.size()) || !I.seqs[s].live)
    throw Error("GPU runtime: free of a sequence that is not live");
  for (int p : I.seqs[s].pages) I.free_pages.push_back(p);
  I.seqs[s] = Impl::Seq{};
  for (size_t b = 0; b < I.bound.size(); ++b)
    if (I.bound[b] == s) I.bound[b] = -1;
}

void GpuRuntime::set_graphs(bool on) {
  cfg_.graphs = on;
  impl_->cfg.graphs = on;
}

int GpuRuntime::seq_len(int s) const { return impl_->seqs.at(size_t(s)).len; }
bool GpuRuntime::try_reserve(int s, int n_total) {
  if (n_total > cfg_.max_ctx) return false;
  return impl_->reserve(s, n_total);
}
int GpuRuntime::pages_free() const { return int(impl_->free_pages.size()); }
int GpuRuntime::pages_total() const { return int(impl_->page_used.size()); }

size_t GpuRuntime::page_bytes_all_layers() const {
  return impl_->caches[0]->page_bytes() * impl_->caches.size();
}
size_t GpuRuntime::pool_bytes() const { return page_bytes_all_layers() * pages_total(); }

std::string GpuRuntime::graph_status() const {
  const Impl& I = *impl_;
  if (!cfg_.graphs) return "off (eager launches)";
  std::string s = std::to_string(I.graph_steps) + " steps as CUDA graphs (" +
                  std::to_string(I.graphs.size()) + " captured), " +
                  std::to_string(I.eager_steps) + " eager";
  if (!I.graph_fail.empty()) s += "; capture failed, eager since: " + I.graph_fail;
  return s;
}

void GpuRuntime::prefill(int s, const int32_t* tokens, int n, std::vector<float>* last_logits,
                         int rows_from,
                         const std::function<void(int, int, const float*)>& rows) {
  Impl& I = *impl_;
  if (s < 0 || s >= int(I.seqs.size()) || !I.seqs[s].live)
    throw Error("GPU prefill: sequence is not live");
  if (n <= 0) return;
  for (int t = 0; t < n; ++t)
    if (tokens[t] < 0 || tokens[t] >= I.V)
      throw Error("token id " + std::to_string(tokens[t]) + " out of range [0, " +
                  std::to_string(I.V) + ")");
  Impl::Seq& S = I.seqs[s];
  I.reserve_or_throw(s, S.len + n);
  I.flush_zero();
  I.drop_graphs();
  std::copy(S.pages.begin(), S.pages.end(), I.h_pbt);
  GCK(cudaMemcpyAsync(I.d_pbt, I.h_pbt, sizeof(int) * S.pages.size(), cudaMemcpyHostToDevice,
                      I.st));
  int last = 0;
  std::vector<float> row_buf;
  for (int c0 = 0; c0 < n; c0 += cfg_.max_chunk) {
    const int T = std::min(cfg_.max_chunk, n - c0), pos0 = S.len;
    GCK(cudaStreamSynchronize(I.st));  // the staging buffers are reused per chunk
    for (int t = 0; t < T; ++t) {
      I.h_ptok[t] = tokens[c0 + t];
      I.h_ppos[t] = pos0 + t;
    }
    GCK(cudaMemcpyAsync(I.d_ptok, I.h_ptok, sizeof(int) * T, cudaMemcpyHostToDevice, I.st));
    GCK(cudaMemcpyAsync(I.d_ppos, I.h_ppos, sizeof(int) * T, cudaMemcpyHostToDevice, I.st));
    // d_pstart[0] = pos0: the positions array starts with it
    GCK(cudaMemcpyAsync(I.d_pstart, I.h_ppos, sizeof(int), cudaMemcpyHostToDevice, I.st));
    I.layers(T, I.d_ptok, I.d_ppos, [&](int l) {
      I.caches[l]->append(I.k, I.v, 1, T, I.d_pbt, I.max_pages, I.d_pstart, I.st);
      I.caches[l]->prefill(I.q, I.att, T, I.NH, I.d_pbt, I.max_pages, pos0, I.scale, I.st);
    });
    // this chunk's rows of [rows_from, n): logits max_seqs rows at a time (the logits buffer)
    for (int r = std::max(rows_from, c0); rows && rows_from >= 0 && r < c0 + T;) {
      const int nr = std::min(cfg_.max_seqs, c0 + T - r);
      I.head(r - c0, nr);
      row_buf.resize(size_t(nr) * I.V);
      GCK(cudaMemcpyAsync(row_buf.data(), I.logits, sizeof(float) * nr * I.V,
                          cudaMemcpyDeviceToHost, I.st));
      GCK(cudaStreamSynchronize(I.st));
      rows(r, nr, row_buf.data());
      r += nr;
    }
    S.len += T;
    last = T - 1;
  }
  if (last_logits) {
    I.head(last, 1);
    last_logits->resize(I.V);
    GCK(cudaMemcpyAsync(last_logits->data(), I.logits, sizeof(float) * I.V,
                        cudaMemcpyDeviceToHost, I.st));
  }
  GCK(cudaStreamSynchronize(I.st));
}

void GpuRuntime::decode(const std::vector<int>& ss, const std::vector<int32_t>& tokens,
                        std::vector<int32_t>* sampled, std::vector<float>* logits,
                        float temperature, uint64_t seed) {
  Impl& I = *impl_;
  const int B = int(ss.size());
  if (tokens.size() != ss.size()) throw Error("GPU decode: one token per sequence");
  for (int32_t t : tokens)
    if (t < 0 || t >= I.V)
      throw Error("token id " + std::to_string(t) + " out of range [0, " + std::to_string(I.V) +
                  ")");
  int max_len = 0;
  for (int s : ss) {
    if (s < 0 || s >= int(I.seqs.size()) || !I.seqs[s].live)
      throw Error("GPU decode: sequence is not live");
    I.reserve_or_throw(s, I.seqs[s].len + 1);
    max_len = std::max(max_len, I.seqs[s].len + 1);
  }
  I.flush_zero();
  I.bind(ss);
  std::copy(tokens.begin(), tokens.end(), I.h_tokens);
  GCK(cudaMemcpyAsync(I.d_tokens, I.h_tokens, sizeof(int) * B, cudaMemcpyHostToDevice, I.st));
  I.step(B, I.bucket(max_len), temperature, seed);
  for (int s : ss) I.seqs[s].len += 1;
  if (sampled) {
    GCK(cudaMemcpyAsync(I.h_sampled, I.d_sampled, sizeof(int) * B, cudaMemcpyDeviceToHost,
                        I.st));
  }
  if (logits) {
    logits->resize(size_t(B) * I.V);
    GCK(cudaMemcpyAsync(logits->data(), I.logits, sizeof(float) * B * I.V,
                        cudaMemcpyDeviceToHost, I.st));
  }
  GCK(cudaStreamSynchronize(I.st));
  if (sampled) sampled->assign(I.h_sampled, I.h_sampled + B);
}

void GpuRuntime::fill_random(const std::vector<int>& ss, int n, uint64_t seed) {
  Impl& I = *impl_;
  const int B = int(ss.size());
  if (n <= 0 || B == 0) return;
  for (int s : ss) {
    if (s < 0 || s >= int(I.seqs.size()) || !I.seqs[s].live)
      throw Error("GPU fill: sequence is not live");
    I.reserve_or_throw(s, I.seqs[s].len + n);
  }
  I.flush_zero();
  I.drop_graphs();
  I.bind(ss);
  const int C = std::max(1, std::min(n, 16384 / B));  // tokens per sequence per append
  const size_t elems = size_t(B) * C * I.NKV * I.D;
  std::vector<void*> tmp;
  uint16_t* kr = dalloc<uint16_t>(elems, tmp);
  uint16_t* vr = dalloc<uint16_t>(elems, tmp);
  for (int b = 0; b < B; ++b) I.h_ppos[b] = I.seqs[ss[b]].len;
  try {
    for (int c0 = 0, chunk = 0; c0 < n; c0 += C, ++chunk) {
      const int T = std::min(C, n - c0);
      GCK(cudaStreamSynchronize(I.st));
      GCK(cudaMemcpyAsync(I.d_pstart, I.h_ppos, sizeof(int) * B, cudaMemcpyHostToDevice, I.st));
      for (int l = 0; l < I.hp.n_layer; ++l) {
        // fresh values per (chunk, layer); keys and values ~ U(−1, 1) like post-norm rows
        launch_init_bf16(kr, elems, mix64(seed + 2 * (uint64_t(chunk) * 4096 + l)), 1.f, 0.f,
                         I.st);
        launch_init_bf16(vr, elems, mix64(seed + 2 * (uint64_t(chunk) * 4096 + l) + 1), 1.f,
                         0.f, I.st);
        I.caches[l]->append(kr, vr, B, T, I.d_bt, I.max_pages, I.d_pstart, I.st);
      }
      GCK(cudaStreamSynchronize(I.st));
      for (int b = 0; b < B; ++b) I.h_ppos[b] += T;
    }
  } catch (...) {
    for (void* p : tmp) cudaFree(p);
    throw;
  }
  GCK(cudaStreamSynchronize(I.st));
  for (void* p : tmp) cudaFree(p);
  for (int s : ss) I.seqs[s].len += n;
}

std::vector<double> GpuRuntime::timed_decode(const std::vector<int>& ss, int steps) {
  Impl& I = *impl_;
  const int B = int(ss.size());
  const int warm = 2;  // an eager step (buffers sized) and the capture
  int max_len = 0;
  for (int s : ss) {
    if (s < 0 || s >= int(I.seqs.size()) || !I.seqs[s].live)
      throw Error("GPU decode: sequence is not live");
    I.reserve_or_throw(s, I.seqs[s].len + warm + steps);
    max_len = std::max(max_len, I.seqs[s].len + warm + steps);
  }
  I.flush_zero();
  I.bind(ss);
  for (int b = 0; b < B; ++b) I.h_tokens[b] = b % I.V;
  GCK(cudaMemcpyAsync(I.d_tokens, I.h_tokens, sizeof(int) * B, cudaMemcpyHostToDevice, I.st));
  const int ms = I.bucket(max_len);
  for (int w = 0; w < warm; ++w) I.step(B, ms, 0.f, 0);
  std::vector<cudaEvent_t> ev(steps + 1);
  for (auto& e : ev) GCK(cudaEventCreate(&e));
  GCK(cudaEventRecord(ev[0], I.st));
  for (int i = 0; i < steps; ++i) {
    I.step(B, ms, 0.f, 0);
    GCK(cudaEventRecord(ev[i + 1], I.st));
  }
  GCK(cudaStreamSynchronize(I.st));
  std::vector<double> out(steps);
  for (int i = 0; i < steps; ++i) {
    float t = 0;
    GCK(cudaEventElapsedTime(&t, ev[i], ev[i + 1]));
    out[i] = t;
  }
  for (auto& e : ev) cudaEventDestroy(e);
  for (int s : ss) I.seqs[s].len += warm + steps;
  return out;
}

size_t page_bytes_for(const std::string& cache_type, const LlamaHparams& hp) {
  const cuda::Fmt f = cuda::parse_fmt(cache_type);
  return size_t(hp.n_kv_head) * 2 * size_t(cuda::tile_bytes(f, hp.head_dim));
}

std::string gpu_name() { return cuda::device_name(); }
bool gpu_available() { return cuda::device_available(); }

void device_memory(size_t* free_b, size_t* total_b) { GCK(cudaMemGetInfo(free_b, total_b)); }

double measure_copy_tbps(size_t bytes) {
  void *a = nullptr, *b = nullptr;
  GCK(cudaMalloc(&a, bytes));
  GCK(cudaMalloc(&b, bytes));
  GCK(cudaMemset(a, 1, bytes));
  cudaEvent_t e0, e1;
  GCK(cudaEventCreate(&e0));
  GCK(cudaEventCreate(&e1));
  std::vector<float> t;
  for (int r = 0; r < 12; ++r) {
    GCK(cudaEventRecord(e0));
    GCK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
    GCK(cudaEventRecord(e1));
    GCK(cudaEventSynchronize(e1));
    float ms = 0;
    GCK(cudaEventElapsedTime(&ms, e0, e1));
    if (r >= 2) t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * double(bytes) / (double(t[t.size() / 2]) * 1e-3) / 1e12;
}

}  // namespace tq::gpu
