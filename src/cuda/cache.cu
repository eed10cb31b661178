// The GPU cache (tq_cuda.h): the page pool, the format constants, appends, and the decode and
// prefill calls (launch planning: launch_plan.cu; kernels: kernels_d*.cu, query_kernels.cu).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "core/half.h"
#include "cuda/consts.cuh"
#include "cuda/dispatch.h"
#include "cuda/format_tables.h"
#include "cuda/launch_plan.h"
#include "cuda/query_kernels.h"
#include "cuda/tq_cuda.h"
#include "tq/error.h"

namespace tq::cuda {

bool device_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

std::string device_name() {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "none";
  return prop.name;
}

GpuCache::GpuCache(const CacheConfig& cfg) : cfg_(cfg) {
  const int D = cfg.head_dim;
  if (!head_dim_supported(D))
    throw Error("CUDA cache: head dimension must be 64, 128 or 256, got " + std::to_string(D));
  for (Fmt f : {cfg.kfmt, cfg.vfmt})
    if (int(f) < 0 || int(f) >= int(Fmt::kCount))
      throw Error("CUDA cache: the cache type has no GPU format");
  if (cfg.vfmt == Fmt::kTurbo3p) throw Error("CUDA cache: turbo3p is a key-only type");
  if (cfg.kfmt == Fmt::kTurbo3p && cfg.vfmt != Fmt::kTurbo3)
    throw Error("CUDA cache: turbo3p keys are paired with turbo3 values");
  if (cfg.kfmt != cfg.vfmt && cfg.kfmt != Fmt::kTurbo3p)
    throw Error("CUDA cache: K and V must have the same type (or turbo3p/turbo3)");
  if ((is_split(cfg.kfmt) || is_split(cfg.vfmt)) && D < 128)
    throw Error("CUDA cache: turbo2.5/turbo3.5 need head dimension >= 128");
  TQ_ASSERT(pair_supported(cfg.kfmt, cfg.vfmt, D));
  if (cfg.n_pages <= 0 || cfg.n_kv_heads <= 0) throw Error("CUDA cache: empty pool");
  tile_k_ = tile_bytes(cfg.kfmt, D);
  tile_v_ = tile_bytes(cfg.vfmt, D);
  page_bytes_ = size_t(cfg.n_kv_heads) * (tile_k_ + tile_v_);
  TQ_CUDA_CHECK(cudaMalloc(&pool_, page_bytes_ * cfg.n_pages));
  TQ_CUDA_CHECK(cudaMemset(pool_, 0, page_bytes_ * cfg.n_pages));
  kc_.reset(make_consts(cfg.kfmt, D, cfg.seed));
  vc_.reset(make_consts(cfg.vfmt, D, cfg.seed));
  for (int kv = 0; kv < 2; ++kv) {
    const FormatConsts& c = kv ? *vc_ : *kc_;
    if (c.fmt != Fmt::kTurbo3) continue;
    i8_.two_mul[kv] = make_i8_tables(c.cent[0], i8_.two[kv][0], i8_.two[kv][1]);
    i8_.one_mul[kv] = make_i8_table1(c.cent[0], i8_.one[kv]);
  }
}

GpuCache::~GpuCache() {
  cudaFree(pool_);
  cudaFree(ws_);
  cudaFree(qbuf_);
  cudaFree(lens_);
  cudaFree(counters_);
  free_consts(kc_.release());
  free_consts(vc_.release());
}

void GpuCache::append(const uint16_t* k, const uint16_t* v, int B, int n_new,
                      const int* block_table, int max_pages, const int* start, void* stream) {
  if (B <= 0 || n_new <= 0) return;
  AppendParams p{};
  p.pool = pool_;
  p.block_table = block_table;
  p.max_pages = max_pages;
  p.start = start;
  p.k = k;
  p.v = v;
  p.n_new = n_new;
  p.Hkv = cfg_.n_kv_heads;
  p.page_bytes = (long long)page_bytes_;
  p.tile_k = int(tile_k_);
  p.tile_v = int(tile_v_);
  p.kc = *kc_;
  p.vc = *vc_;
  // pages a run of n_new tokens can touch, whatever its start
  const dim3 grid((n_new + kPageTokens - 1) / kPageTokens + 1, cfg_.n_kv_heads, B);
  if (!launch_append(cfg_.kfmt, cfg_.vfmt, cfg_.head_dim, p, grid, cudaStream_t(stream)))
    throw Error("CUDA cache: no append kernel for this type pair and head dimension");
  TQ_CUDA_CHECK(cudaGetLastError());
}

void GpuCache::decode(const float* q, float* out, int B, int Hq, const int* block_table,
                      int max_pages, const int* seq_lens, int max_seq, float sm_scale,
                      int splits, void* stream) {
  decode_impl(q, out, B, Hq, block_table, max_pages, max_pages, seq_lens, max_seq, sm_scale,
              splits, stream);
}

void GpuCache::prefill(const float* q, float* out, int T, int Hq, const int* block_table,
                       int max_pages, int pos0, float sm_scale, void* stream) {
  if (T <= 0) return;
  if (pos0 < 0) throw Error("CUDA prefill: negative start position");
  cudaStream_t st = cudaStream_t(stream);
  if (size_t(T) * sizeof(int) > lens_bytes_) {
    cudaFree(lens_);
    TQ_CUDA_CHECK(cudaMalloc(&lens_, size_t(T) * sizeof(int)));
    lens_bytes_ = size_t(T) * sizeof(int);
  }
  launch_causal_lens(lens_, T, pos0, st);
  TQ_CUDA_CHECK(cudaGetLastError());
  // every query token is a sequence of its own over the same page table (stride 0)
  decode_impl(q, out, T, Hq, block_table, max_pages, 0, lens_, pos0 + T, sm_scale, 0, stream);
}

DecodeKernelInfo GpuCache::kernel_info(const DecodeFlags& flags) {
  const DecodeLauncher launcher = decode_launcher();
  if (info_cache_.launcher != reinterpret_cast<const void*>(launcher))
    info_cache_ = KernelInfoCache{reinterpret_cast<const void*>(launcher)};
  const int key = (flags.stream ? 1 : 0) | (flags.exact_tables ? 2 : 0) | (flags.g4 ? 4 : 0);
  if (info_cache_.warps[key] == 0) {
    DecodeKernelInfo info{};
    if (!launcher(cfg_.kfmt, cfg_.vfmt, cfg_.head_dim, flags, nullptr, dim3(), nullptr, &info) ||
        info.warps <= 0)
      throw Error("CUDA decode: no kernel for this type pair and head dimension");
    info_cache_.ctas_per_sm[key] = std::max(1, info.ctas_per_sm);
    info_cache_.warps[key] = info.warps;
  }
  return {info_cache_.ctas_per_sm[key], info_cache_.warps[key]};
}

void GpuCache::decode_impl(const float* q, float* out, int B, int Hq, const int* block_table,
                           int max_pages, int bt_stride, const int* seq_lens, int max_seq,
                           float sm_scale, int splits, void* stream) {
  const int D = cfg_.head_dim, Hkv = cfg_.n_kv_heads;
  if (B <= 0) return;
  if (Hq % Hkv != 0 || Hq / Hkv > 8)
    throw Error("CUDA decode: query heads must be 1..8 times the KV heads");
  cudaStream_t st = cudaStream_t(stream);
  if (sms_ == 0) {
    sms_ = 132;
    cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, 0);
  }
  DecodeFlags flags;
  flags.exact_tables = cfg_.exact_codebook;
  flags.g4 = Hq / Hkv <= 4;
  DecodePlanInput in;
  in.B = B;
  in.Hq = Hq;
  in.Hkv = Hkv;
  in.D = D;
  in.pages = std::max(1, (max_seq + kPageTokens - 1) / kPageTokens);
  in.splits = splits;
  in.shared_table = bt_stride == 0;
  in.stream_eligible = stream_eligible(cfg_.kfmt, cfg_.vfmt, D);
  in.sms = sms_;
  in.grid = grid_;
  in.stream_ctas = stream_ctas_;
  const DecodePlan plan = plan_decode(in, [&](bool strm) {
    DecodeFlags f = flags;
    f.stream = strm;
    return kernel_info(f);
  });
  flags.stream = plan.stream;

  const size_t rows = size_t(B) * Hq;
  const size_t ws_need = (plan.part_o_floats + plan.part_ml_floats) * sizeof(float);
  if (ws_need > ws_bytes_) {
    cudaFree(ws_);
    TQ_CUDA_CHECK(cudaMalloc(&ws_, ws_need));
    ws_bytes_ = ws_need;
  }
  const size_t qb_need = rows * D * 2 * sizeof(uint16_t);
  if (qb_need > qbuf_bytes_) {
    cudaFree(qbuf_);
    TQ_CUDA_CHECK(cudaMalloc(&qbuf_, qb_need));
    qbuf_bytes_ = qb_need;
  }
  const float kLog2e = 1.4426950408889634f;
  // turbo3 keys rotate the query in the decode kernel; values without a dense rotation merge
  // the splits in the decode kernel too (one launch)
  const bool fuse_q = cfg_.kfmt == Fmt::kTurbo3;
  const bool fuse_out = !is_split(cfg_.vfmt);
  if (fuse_out && size_t(B) * Hkv > counters_n_) {
    cudaFree(counters_);
    counters_ = nullptr;
    TQ_CUDA_CHECK(cudaMalloc(&counters_, size_t(B) * Hkv * sizeof(int)));
    TQ_CUDA_CHECK(cudaMemset(counters_, 0, size_t(B) * Hkv * sizeof(int)));
    counters_n_ = size_t(B) * Hkv;
  }
  if (fuse_q) {
    // nothing to prepare
  } else if (kc_->fwht && cfg_.kfmt != Fmt::kTurbo3p) {
    launch_qprep_fwht(D, q, qbuf_, kc_->signs, int(rows), sm_scale * kLog2e, st);
  } else {
    launch_qprep(q, qbuf_, qbuf_ + rows * D, kc_->R, kc_->S, B, Hq, D, sm_scale * kLog2e,
                 cfg_.kfmt == Fmt::kBF16, st);
  }
  TQ_CUDA_CHECK(cudaGetLastError());

  DecodeParams p{};
  p.pool = pool_;
  p.block_table = block_table;
  p.max_pages = max_pages;
  p.bt_stride = bt_stride;
  p.seq_lens = seq_lens;
  p.q = qbuf_;
  p.qs = qbuf_ + rows * D;
  p.part_o = ws_;
  p.part_ml = ws_ + plan.part_o_floats;
  p.Hq = Hq;
  p.Hkv = Hkv;
  p.G = Hq / Hkv;
  p.splits = plan.splits;
  p.pages_per_split = plan.pages_per_split;
  p.page_bytes = (long long)page_bytes_;
  p.tile_k = int(tile_k_);
  std::memcpy(p.klo, kc_->lut_lo, sizeof p.klo);
  std::memcpy(p.khi, kc_->lut_hi, sizeof p.khi);
  std::memcpy(p.vlo, vc_->lut_lo, sizeof p.vlo);
  std::memcpy(p.vhi, vc_->lut_hi, sizeof p.vhi);
  std::memcpy(p.ki8, i8_.two[0], sizeof p.ki8);
  std::memcpy(p.vi8, i8_.two[1], sizeof p.vi8);
  std::memcpy(p.k1tab, i8_.one[0], sizeof p.k1tab);
  std::memcpy(p.v1tab, i8_.one[1], sizeof p.v1tab);
  p.kalpha128 = 128.f * i8_.two_mul[0];
  p.valpha256 = 256.f * i8_.two_mul[1];
  p.k1mul = 0.5f * i8_.one_mul[0];
  p.v1mul = i8_.one_mul[1];
  p.B = B;
  p.q32 = q;
  p.ksigns = kc_->signs;
  p.qscale = sm_scale * kLog2e;
  p.out = fuse_out ? out : nullptr;
  p.vsigns = vc_->fwht ? vc_->signs : nullptr;
  p.counters = counters_;
  const dim3 grid = plan.stream ? dim3(plan.stream_ctas) : dim3(plan.splits, Hkv, B);
  if (!decode_launcher()(cfg_.kfmt, cfg_.vfmt, D, flags, &p, grid, st, nullptr))
    throw Error("CUDA decode: no kernel for this type pair and head dimension");
  TQ_CUDA_CHECK(cudaGetLastError());
  if (fuse_out) {
    // merged in the decode kernel
  } else if (vc_->fwht) {
    launch_combine_fwht(D, p.part_o, p.part_ml, out, vc_->signs, int(rows), plan.splits, st);
  } else {
    launch_combine(p.part_o, p.part_ml, out, vc_->R, B, Hq, D, plan.splits, st);
  }
  TQ_CUDA_CHECK(cudaGetLastError());
}

GpuCache::TileView GpuCache::read_tile(int page, int kvh, bool is_v) const {
  const int D = cfg_.head_dim;
  const Fmt f = is_v ? cfg_.vfmt : cfg_.kfmt;
  const size_t tb = is_v ? tile_v_ : tile_k_;
  std::vector<uint8_t> t(tb);
  const size_t off = size_t(page) * page_bytes_ + size_t(kvh) * (tile_k_ + tile_v_) +
                     (is_v ? tile_k_ : 0);
  TQ_CUDA_CHECK(cudaMemcpy(t.data(), pool_ + off, tb, cudaMemcpyDeviceToHost));
  auto word = [&](int part, int w, int lane) {
    uint32_t x;
    std::memcpy(&x, t.data() + part_offset_bytes(f, part, D) +
                        word_byte_offset(part_words(f, part, D), w, lane), 4);
    return x;
  };
  TileView tv;
  const int np = nparts(f);
  tv.codes.resize(np);
  for (int part = 0; part < np; ++part) {
    const int pd = is_split(f) ? part_elems(f, part, D) : D;
    const int d0 = is_split(f) && part == 1 ? D / 4 : 0;
    tv.codes[part].assign(size_t(kPageTokens) * pd, 0);
    const Kind kind = part_kind(f, part);
    for (int tok = 0; tok < kPageTokens; ++tok)
      for (int dd = 0; dd < pd; ++dd) {
        int lane, i;
        td_to_elem(is_v, tok, d0 + dd, lane, i, i8_layout(f, is_v));
        const int e = i - part_first(f, part, D);
        Slot sl[3];
        const int n = code_slot(kind, e, sl);
        uint32_t c = 0;
        for (int s = 0; s < n; ++s)
          c |= ((word(part, sl[s].word, lane) >> sl[s].bit) & ((1u << sl[s].nbits) - 1u))
               << sl[s].shift;
        if (kind == Kind::LUT4) {
          const Slot ss = lut4_sign_slot(e);
          const bool neg = (word(part, ss.word, lane) >> ss.bit) & 1u;
          c = neg ? 7 - c : c + 8;
        }
        tv.codes[part][size_t(tok) * pd + dd] = int(c);
      }
  }
  const int ns = nscalars(f, D);
  tv.scalars.resize(ns);
  const bool slotted = is_turbo(f);
  for (int a = 0; a < ns; ++a) {
    tv.scalars[a].resize(kPageTokens);
    for (int tok = 0; tok < kPageTokens; ++tok)
      std::memcpy(&tv.scalars[a][tok],
                  t.data() + codes_bytes(f, D) + a * 64 + 2 * (slotted ? scalar_slot(tok) : tok), 2);
  }
  return tv;
}

}  // namespace tq::cuda
