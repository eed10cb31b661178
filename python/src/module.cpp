// turboquant._core: the C++ engine for Python (DESIGN.md §10). The Python package turboquant
// wraps it (turboquant/__init__.py); errors of the engine (tq::Error, one line, the CLI's
// messages) become turboquant.Error, a ValueError.
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <optional>
#include <sstream>

#include "common.h"
#include "model/llama.h"
#include "tq/codec.h"

namespace tqpy {

std::string shape_str(const AnyArray& a) {
  std::string s = "(";
  for (size_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

namespace {

std::string dtype_name(nb::dlpack::dtype d) {
  const char* kind = d.code == uint8_t(nb::dlpack::dtype_code::Float)    ? "float"
                     : d.code == uint8_t(nb::dlpack::dtype_code::Int)    ? "int"
                     : d.code == uint8_t(nb::dlpack::dtype_code::UInt)   ? "uint"
                     : d.code == uint8_t(nb::dlpack::dtype_code::Bfloat) ? "bfloat"
                     : d.code == uint8_t(nb::dlpack::dtype_code::Bool)   ? "bool"
                                                                          : "complex";
  return std::string(kind) + std::to_string(d.bits);
}

// Checks dtype/rank/device; returns true when the array is C-contiguous.
template <class T>
bool check(const AnyArray& a, int ndim, const char* what, const char* want) {
  if (a.device_type() != nb::device::cpu::value)
    throw tq::Error(std::string(what) + ": expected a CPU array, got one on another device " +
                    "(CUDA tensors go through turboquant.hf)");
  if (a.dtype() != nb::dtype<T>())
    throw tq::Error(std::string(what) + ": expected " + want + ", got " + dtype_name(a.dtype()));
  if (int(a.ndim()) != ndim)
    throw tq::Error(std::string(what) + ": expected " + std::to_string(ndim) +
                    "-D array, got shape " + shape_str(a));
  int64_t expect = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (a.shape(i) != 1 && a.stride(i) != expect) return false;
    expect *= int64_t(a.shape(i));
  }
  return true;
}

// Packs a strided array into `copy` (row-major).
template <class T>
const T* gather(const AnyArray& a, std::vector<T>& copy) {
  const size_t n = a.size();
  copy.resize(n);
  const T* base = static_cast<const T*>(a.data());
  const int nd = int(a.ndim());
  std::vector<size_t> idx(nd, 0);
  for (size_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (int d = 0; d < nd; ++d) off += int64_t(idx[d]) * a.stride(d);
    copy[i] = base[off];
    for (int d = nd - 1; d >= 0; --d) {
      if (++idx[d] < a.shape(d)) break;
      idx[d] = 0;
    }
  }
  return copy.data();
}

}  // namespace

const float* float_rows(const AnyArray& a, int ndim, const char* what, std::vector<float>& copy) {
  if (check<float>(a, ndim, what, "float32")) return static_cast<const float*>(a.data());
  return gather(a, copy);
}

void check_float(const AnyArray& a, int ndim, const char* what) {
  (void)check<float>(a, ndim, what, "float32");
}

const uint8_t* byte_rows(const AnyArray& a, int ndim, const char* what,
                         std::vector<uint8_t>& copy) {
  if (check<uint8_t>(a, ndim, what, "uint8 codes")) return static_cast<const uint8_t*>(a.data());
  return gather(a, copy);
}

namespace {

std::map<int, std::string> layer_map(nb::handle v, const char* key) {
  std::map<int, std::string> m;
  if (v.is_none()) return m;
  if (nb::isinstance<nb::str>(v)) {  // "L=TYPE,L=TYPE" as on the command line
    std::stringstream ss(nb::cast<std::string>(v));
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (item.empty()) continue;
      const auto eq = item.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
        throw tq::Error(std::string(key) + ": expected LAYER=TYPE, got '" + item + "'");
      try {
        m[std::stoi(item.substr(0, eq))] = item.substr(eq + 1);
      } catch (const std::exception&) {
        throw tq::Error(std::string(key) + ": bad layer number in '" + item + "'");
      }
    }
    return m;
  }
  if (!nb::isinstance<nb::dict>(v))
    throw tq::Error(std::string(key) + ": expected a dict {layer: type} or a string");
  for (auto [l, t] : nb::cast<nb::dict>(v)) {
    if (!nb::isinstance<nb::int_>(l) || !nb::isinstance<nb::str>(t))
      throw tq::Error(std::string(key) + ": expected {int layer: str type}");
    m[nb::cast<int>(l)] = nb::cast<std::string>(t);
  }
  return m;
}

template <class T>
T get(nb::handle v, const std::string& key, const char* want) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!PyBool_Check(v.ptr())) throw tq::Error("cache option " + key + ": expected a bool");
  }
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (!nb::isinstance<nb::int_>(v) || PyBool_Check(v.ptr()))
      throw tq::Error("cache option " + key + ": expected " + want);
  }
  T out{};
  if (!nb::try_cast(v, out)) throw tq::Error("cache option " + key + ": expected " + want);
  return out;
}

}  // namespace

tq::KvCacheOptions cache_options(const nb::dict& kw, std::string* codebooks_path) {
  tq::KvCacheOptions o;
  bool boundary_type_set = false;
  for (auto [kh, v] : kw) {
    const std::string k = nb::cast<std::string>(kh);
    if (k == "k") o.type_k = get<std::string>(v, k, "a type name");
    else if (k == "v") o.type_v = get<std::string>(v, k, "a type name");
    else if (k == "layer_k") o.layer_type_k = layer_map(v, "layer_k");
    else if (k == "layer_v") o.layer_type_v = layer_map(v, "layer_v");
    else if (k == "boundary") o.boundary_layers = get<int>(v, k, "an int");
    else if (k == "boundary_type") {
      o.boundary_type_k = o.boundary_type_v = get<std::string>(v, k, "a type name");
      boundary_type_set = true;
    } else if (k == "residual") o.residual_window = get<int>(v, k, "an int");
    else if (k == "sinks") o.sink_tokens = get<int>(v, k, "an int");
    else if (k == "center_keys")  // None: the key type's default; True/False: every layer
      o.key_centring = v.is_none()                         ? tq::KeyCentring::kTypeDefault
                       : get<bool>(v, k, "a bool or None") ? tq::KeyCentring::kOn
                                                           : tq::KeyCentring::kOff;
    else if (k == "key_means") {  // "page" (default) | "first", as `--key-means`
      const std::string m = get<std::string>(v, k, "'page' or 'first'");
      if (m != "page" && m != "first")
        throw tq::Error("cache option key_means: expected 'page' or 'first', got '" + m + "'");
      o.key_means_per_page = m == "page";
    } else if (k == "key_scales")  // as the CLI's default; False = `--no-key-scales`
      o.key_scales = get<bool>(v, k, "a bool");
    else if (k == "seed") o.seed = get<uint64_t>(v, k, "a non-negative int");
    else if (k == "page_tokens") o.page_tokens = get<int>(v, k, "an int");
    else if (k == "max_tokens") o.max_tokens = get<int>(v, k, "an int");
    else if (k == "max_seqs") o.max_seqs = get<int>(v, k, "an int");
    else if (k == "codebooks") {
      if (v.is_none()) continue;
      if (nb::isinstance<Codebooks>(v)) {
        o.codebooks = nb::cast<const Codebooks&>(v).file;
      } else if (nb::isinstance<nb::str>(v) || nb::hasattr(v, "__fspath__")) {
        nb::object p = nb::module_::import_("os").attr("fspath")(v);
        if (!codebooks_path)
          throw tq::Error("codebooks: pass a turboquant.Codebooks object here (a path needs the "
                          "model: Codebooks.load(path))");
        *codebooks_path = nb::cast<std::string>(p);
      } else {
        throw tq::Error("cache option codebooks: expected a path or a turboquant.Codebooks");
      }
    } else {
      throw tq::Error("unknown cache option '" + k +
                      "' (options: k, v, layer_k, layer_v, boundary, boundary_type, residual, "
                      "sinks, center_keys, key_means, key_scales, seed, codebooks, page_tokens, "
                      "max_tokens, max_seqs)");
    }
  }
  (void)boundary_type_set;
  for (const auto& t : option_types(o)) (void)tq::describe_type(t);  // unknown type → Error
  return o;
}

std::vector<std::string> option_types(const tq::KvCacheOptions& o) {
  std::vector<std::string> t = {o.type_k, o.type_v};
  if (o.boundary_layers > 0) t.insert(t.end(), {o.boundary_type_k, o.boundary_type_v});
  for (const auto* m : {&o.layer_type_k, &o.layer_type_v})
    for (const auto& [l, ty] : *m) t.push_back(ty);
  return t;
}

bool needs_learned_data(const std::string& type) {
  const tq::TypeTraits& t = tq::type_traits(type);
  return t.needs_calibration || t.params_from_codebooks;
}

void require_codebooks(const tq::KvCacheOptions& o, bool have_path) {
  for (const auto& t : option_types(o)) tq::check_calibration_given(t, o.codebooks || have_path);
}

}  // namespace tqpy

namespace {

std::optional<double> bpv_of(const std::string& t, int d, bool key) {
  tq::CodecOptions o;
  o.is_key = key;
  try {
    return tq::make_codec(t, d, o)->bpv();
  } catch (const tq::Error&) {
    return std::nullopt;
  }
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "turboquant's C++ engine (codecs, KV cache, model runner); use the turboquant "
            "package, which wraps this module.";
  nb::exception<tq::Error>(m, "Error", PyExc_ValueError);

  m.def(
      "types",
      [](int dim) {
        nb::list rows;
        for (const auto& t : tq::list_types()) {
          nb::dict r;
          r["name"] = t;
          r["description"] = tq::describe_type(t);
          const auto k = bpv_of(t, dim, true), v = bpv_of(t, dim, false);
          r["bpv_k"] = k ? nb::cast(*k) : nb::none();
          r["bpv_v"] = v ? nb::cast(*v) : nb::none();
          r["bpv"] = k && v ? nb::cast(0.5 * (*k + *v)) : nb::none();
          r["needs_calibration"] = tqpy::needs_learned_data(t);
          r["center_keys"] = tq::type_traits(t).center_keys;  // keys centred by default
          rows.append(r);
        }
        return rows;
      },
      nb::arg("dim") = 128,
      "Every cache type: name, description, bpv_k / bpv_v (all-in bits per value of the key and "
      "value forms at head dimension `dim`; None where the type does not support it), bpv (their "
      "mean), needs_calibration and center_keys (keys mean-centred by default: turbo*, polar, "
      "polar-vq). Same numbers as `tq types`.");
  m.def(
      "describe_type", [](const std::string& t) { return tq::describe_type(t); }, nb::arg("name"),
      "One-line description of a cache type (raises turboquant.Error for an unknown name).");
  m.def(
      "set_threads", [](int n) { tq::set_threads(n); }, nb::arg("n"),
      "Threads of the engine (OpenMP). n <= 0: all cores, or 1 when the machine is busy.");

  tqpy::bind_codec(m);
  tqpy::bind_cache(m);
  tqpy::bind_model(m);
#ifdef TQ_PY_CUDA
  tqpy::bind_cuda(m);
  m.attr("HAS_CUDA") = true;
#else
  m.attr("HAS_CUDA") = false;
#endif
}
