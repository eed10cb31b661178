// turboquant._core.GpuCache (built only with TQ_CUDA): one layer's paged cache on the GPU (the
// engine's CUDA append and flash-decoding kernels, src/cuda/tq_cuda.h) driven with device
// pointers from PyTorch tensors (turboquant/_cuda_hf.py). Pointers are integers
// (tensor.data_ptr()); the Python side checks dtypes, shapes, devices and contiguity.
#include <nanobind/stl/string.h>

#include "common.h"
#include "cuda/tq_cuda.h"

namespace tqpy {

namespace {
template <class T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}
void* stream_of(uintptr_t s) { return reinterpret_cast<void*>(s); }
}  // namespace

void bind_cuda(nb::module_& m) {
  m.def("cuda_available", &tq::cuda::device_available,
        "Whether a CUDA device can be used by the engine's kernels.");
  m.def(
      "cuda_format_bpv",
      [](const std::string& fmt, int d) { return tq::cuda::fmt_bpv(tq::cuda::parse_fmt(fmt), d); },
      nb::arg("fmt"), nb::arg("dim"), "All-in bits per value of a GPU cache format.");
  nb::class_<tq::cuda::GpuCache>(m, "GpuCache", "One layer's paged compressed cache on the GPU.")
      .def(
          "__init__",
          [](tq::cuda::GpuCache* self, const std::string& k, const std::string& v, int head_dim,
             int n_kv_heads, int n_pages, uint64_t seed) {
            if (!tq::cuda::device_available()) throw tq::Error("no CUDA device available");
            tq::cuda::CacheConfig c;
            c.kfmt = tq::cuda::parse_fmt(k);
            c.vfmt = tq::cuda::parse_fmt(v);
            c.head_dim = head_dim;
            c.n_kv_heads = n_kv_heads;
            c.n_pages = n_pages;
            c.seed = seed;
            new (self) tq::cuda::GpuCache(c);
          },
          nb::arg("k"), nb::arg("v"), nb::arg("head_dim"), nb::arg("n_kv_heads"),
          nb::arg("n_pages"), nb::arg("seed") = 0x5451'0001)
      .def_prop_ro("page_bytes", &tq::cuda::GpuCache::page_bytes)
      .def(
          "append",
          [](tq::cuda::GpuCache& c, uintptr_t k, uintptr_t v, int B, int n_new, uintptr_t bt,
             int max_pages, uintptr_t start, uintptr_t stream) {
            c.append(ptr<const uint16_t>(k), ptr<const uint16_t>(v), B, n_new, ptr<const int>(bt),
                     max_pages, ptr<const int>(start), stream_of(stream));
          },
          "k, v: bf16 [B][n_new][Hkv][D]; bt: int32 [B][max_pages]; start: int32 [B].")
      .def(
          "decode",
          [](tq::cuda::GpuCache& c, uintptr_t q, uintptr_t out, int B, int Hq, uintptr_t bt,
             int max_pages, uintptr_t seq_lens, int max_seq, float scale, uintptr_t stream) {
            c.decode(ptr<const float>(q), ptr<float>(out), B, Hq, ptr<const int>(bt), max_pages,
                     ptr<const int>(seq_lens), max_seq, scale, 0, stream_of(stream));
          },
          "q, out: fp32 [B][Hq][D]; seq_lens: int32 [B].")
      .def(
          "prefill",
          [](tq::cuda::GpuCache& c, uintptr_t q, uintptr_t out, int T, int Hq, uintptr_t bt_row,
             int max_pages, int pos0, float scale, uintptr_t stream) {
            c.prefill(ptr<const float>(q), ptr<float>(out), T, Hq, ptr<const int>(bt_row),
                      max_pages, pos0, scale, stream_of(stream));
          },
          "q, out: fp32 [T][Hq][D] of one sequence whose tokens pos0.. were appended.");
}

}  // namespace tqpy
