// turboquant Python bindings: helpers shared by the binding files (array checks, cache options).
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cache/kv_cache.h"
#include "codecs/polarvq_file.h"
#include "tq/error.h"

namespace nb = nanobind;

namespace tqpy {

// Any array or tensor (NumPy, PyTorch, ... through the buffer protocol or DLPack), checked by
// the binding itself so that the messages are ours (nanobind's own refusal is a TypeError
// listing overloads).
using AnyArray = nb::ndarray<nb::ro>;

// A float32 CPU array of the given rank: its data when C-contiguous (zero-copy), else a packed
// copy in `copy`. Throws tq::Error naming `what` for another dtype, rank or device.
const float* float_rows(const AnyArray& a, int ndim, const char* what, std::vector<float>& copy);
// Only the dtype / device / rank checks of float_rows (for callers that read strided data).
void check_float(const AnyArray& a, int ndim, const char* what);
// The same for uint8 codes.
const uint8_t* byte_rows(const AnyArray& a, int ndim, const char* what,
                         std::vector<uint8_t>& copy);
std::string shape_str(const AnyArray& a);

// A NumPy array that owns a fresh buffer.
template <class T>
nb::ndarray<nb::numpy, T> new_array(std::initializer_list<size_t> shape) {
  size_t n = 1;
  for (size_t s : shape) n *= s;
  T* data = new T[n > 0 ? n : 1]();
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<T*>(p); });
  return nb::ndarray<nb::numpy, T>(data, shape.size(), shape.begin(), owner);
}

// Learned data (a codebook file in memory), shared by caches and models.
struct Codebooks {
  std::shared_ptr<const tq::CodebookFile> file;
  std::string path;  // where it was read from or last written ("" = only in memory)
};

// Cache options from Python keyword arguments: k, v, layer_k, layer_v, boundary, boundary_type,
// residual, sinks, center_keys, key_means, seed, codebooks, page_tokens, max_tokens, max_seqs.
// Unknown keys and wrong types raise tq::Error. A codebooks path is returned in `codebooks_path`
// (loading it needs the model for the fingerprint check); a Codebooks object is set directly.
tq::KvCacheOptions cache_options(const nb::dict& kw, std::string* codebooks_path);
// The types the options name (K, V, boundary, per-layer).
std::vector<std::string> option_types(const tq::KvCacheOptions& o);
// Whether a type cannot encode without learned data (calibrated codebooks or, for
// polar-vq:custom, the parameters a codebook file carries): the registry's traits.
bool needs_learned_data(const std::string& type);
// Throws the CLI's "needs learned codebooks" error when a type needs them and none are given.
void require_codebooks(const tq::KvCacheOptions& o, bool have_path);

void bind_codec(nb::module_& m);
void bind_cache(nb::module_& m);
void bind_model(nb::module_& m);
void bind_cuda(nb::module_& m);  // TQ_PY_CUDA builds only

}  // namespace tqpy
