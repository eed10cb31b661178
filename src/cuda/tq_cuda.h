// turboquant CUDA: a paged, compressed KV cache on the GPU, the append kernel (rotate, quantize,
// pack new tokens) and flash-decoding attention that reads the packed codes directly
// (DESIGN.md §3, §5). Layouts: src/cuda/formats.cuh and docs/gpu-notes.md.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda/formats.cuh"

namespace tq::cuda {

// True when a CUDA device can be used (cudaGetDeviceCount succeeds and reports ≥ 1).
bool device_available();
std::string device_name();

// The GPU format of a cache type, from the registry's traits (tq::type_traits(name).gpu):
// throws tq::Error for an unknown type or one with no GPU form. (format_tables.cu)
Fmt parse_fmt(const std::string& name);
const char* fmt_name(Fmt f);
// All-in bits per value of the GPU layout (codes + per-token scalars).
double fmt_bpv(Fmt f, int D);

// The decode grid (tests and benchmarks; GpuCache::set_decode_grid). kAuto: the stream mode
// when every warp gets ≥ 32 pages (and the type and call allow it), else the split grid;
// kSplit: always the split grid; kStream: the stream mode whenever the type and call allow it
// (an automatic split count, not prefill).
enum class DecodeGrid { kAuto, kSplit, kStream };

struct CacheConfig {
  Fmt kfmt = Fmt::kTurbo3, vfmt = Fmt::kTurbo3;
  int head_dim = 128;
  int n_kv_heads = 8;
  int n_pages = 0;          // pages in the pool (each 32 tokens of every KV head)
  uint64_t seed = 0x5451'0001;  // as tq::CodecOptions::seed
  // turbo3 decode: multiply with the fp16 centroids exactly (two int8 tables per codebook)
  // instead of the default one-byte table (centroids rounded to s·int8: half the lookups;
  // ~1e-3 relative error in the attention output, far below turbo3's own).
  bool exact_codebook = false;
};

// Device-side constants of one format (tables, rotations; consts.cuh, format_tables.cu).
struct FormatConsts;
// Decode launch flags and what a launcher reports (decode_modes.cuh).
struct DecodeFlags;
struct DecodeKernelInfo;

// One layer's paged cache on the device. Pages are zeroed at creation; a token position is
// written once (append packs codes with bitwise OR into its page).
class GpuCache {
 public:
  explicit GpuCache(const CacheConfig& cfg);
  ~GpuCache();
  GpuCache(const GpuCache&) = delete;
  GpuCache& operator=(const GpuCache&) = delete;

  const CacheConfig& config() const { return cfg_; }
  size_t page_bytes() const { return page_bytes_; }
  size_t tile_k_bytes() const { return tile_k_; }
  size_t tile_v_bytes() const { return tile_v_; }
  uint8_t* pool() { return pool_; }
  const FormatConsts& kconsts() const { return *kc_; }
  const FormatConsts& vconsts() const { return *vc_; }

  // Tests and benchmarks: the decode grid (see DecodeGrid); stream_ctas > 0 sizes a forced
  // stream-mode grid (default: one CTA per resident slot).
  void set_decode_grid(DecodeGrid grid, int stream_ctas = 0) {
    grid_ = grid;
    stream_ctas_ = stream_ctas;
  }

  // Append n_new tokens per sequence. k, v: device bf16 [B][n_new][Hkv][D];
  // block_table: device int [B][max_pages]; start: device int [B] (first new position).
  void append(const uint16_t* k, const uint16_t* v, int B, int n_new, const int* block_table,
              int max_pages, const int* start, void* stream = nullptr);

  // Decode attention for one query token per sequence. q: device fp32 [B][Hq][D] (original
  // domain); out: device fp32 [B][Hq][D]; seq_lens: device int [B]; max_seq: ≥ every
  // seq_len (sizes the split). splits ≤ 0 picks a split count from the SM count.
  void decode(const float* q, float* out, int B, int Hq, const int* block_table, int max_pages,
              const int* seq_lens, int max_seq, float sm_scale, int splits = 0,
              void* stream = nullptr);

  // Prefill attention (causal) for T new tokens of one sequence, already appended at positions
  // pos0 .. pos0+T−1: query token i attends to positions ≤ pos0 + i. q, out: device fp32
  // [T][Hq][D]; block_table: device int row of that sequence. Each query token runs as one
  // decode row over the shared page table (the codes are decoded by the same tensor-core kernel;
  // the prefix is re-read per query token, so this path suits prompts of moderate length).
  void prefill(const float* q, float* out, int T, int Hq, const int* block_table, int max_pages,
               int pos0, float sm_scale, void* stream = nullptr);

  // Host copy of one tile's codes as the CPU codecs index them: idx[tok][dim] per part
  // (turbo: Lloyd-Max index; T3P part 1: sign bit; q8_0/q4_0: stored integer; fp8_e4m3: the
  // E4M3FN byte; bf16: bits), and the fp16 scalars [array][tok]. For tests.
  struct TileView {
    std::vector<std::vector<int>> codes;  // [part][tok*D + dim_in_part]
    std::vector<std::vector<uint16_t>> scalars;
  };
  TileView read_tile(int page, int kvh, bool is_v) const;

 private:
  CacheConfig cfg_;
  size_t tile_k_ = 0, tile_v_ = 0, page_bytes_ = 0;
  uint8_t* pool_ = nullptr;
  std::unique_ptr<FormatConsts> kc_, vc_;
  float* ws_ = nullptr;  // split partials
  size_t ws_bytes_ = 0;
  uint16_t* qbuf_ = nullptr;  // prepared queries
  size_t qbuf_bytes_ = 0;
  int* lens_ = nullptr;  // prefill: causal lengths
  size_t lens_bytes_ = 0;
  // turbo3 int8 codebook tables ([0] keys, [1] values), built once: two-byte (exact) and
  // one-byte (see DecodeParams::k1tab)
  struct I8Tables {
    uint32_t two[2][2][2] = {};
    float two_mul[2] = {};
    uint32_t one[2][2] = {};
    float one_mul[2] = {};
  } i8_;
  int sms_ = 0;  // multiprocessors
  DecodeGrid grid_ = DecodeGrid::kAuto;
  int stream_ctas_ = 0;
  // occupancy and warps of the decode kernel per (stream, exact tables, G ≤ 4), for the
  // launcher that answered (the query costs microseconds, a decode call ~0.03-1 ms)
  struct KernelInfoCache {
    const void* launcher = nullptr;
    int ctas_per_sm[8] = {}, warps[8] = {};
  } info_cache_;
  int* counters_ = nullptr;  // fused split merge: CTAs done per (sequence, KV head), zero
  size_t counters_n_ = 0;
  DecodeKernelInfo kernel_info(const DecodeFlags& flags);
  void decode_impl(const float* q, float* out, int B, int Hq, const int* block_table,
                   int max_pages, int bt_stride, const int* seq_lens, int max_seq,
                   float sm_scale, int splits, void* stream);
};

}  // namespace tq::cuda
