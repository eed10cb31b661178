// turboquant._core.Codec: one codec (one cache type at one head dimension) on NumPy arrays and
// DLPack tensors: encode / decode / score / attend, exactly the C++ codec's results.
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>

#include <cmath>

#include "common.h"
#include "tq/codec.h"

namespace tqpy {
namespace {

struct PyCodec {
  std::unique_ptr<tq::Codec> c;
  std::string type;

  size_t rows_to_blocks(size_t n, const char* what) const {
    const size_t bt = size_t(c->block_tokens());
    if (n % bt != 0)
      throw tq::Error(std::string(what) + ": " + std::to_string(n) + " vectors is not a multiple " +
                      "of the block of '" + type + "' (" + std::to_string(bt) + " tokens)");
    return n / bt;
  }

  const float* vectors(const AnyArray& x, const char* what, std::vector<float>& copy,
                       size_t& n) const {
    const float* p = float_rows(x, 2, what, copy);
    if (int(x.shape(1)) != c->dim())
      throw tq::Error(std::string(what) + ": expected shape (n, " + std::to_string(c->dim()) +
                      "), got " + shape_str(x));
    n = x.shape(0);
    return p;
  }

  const uint8_t* codes(const AnyArray& a, std::vector<uint8_t>& copy, size_t& n_blocks) const {
    const uint8_t* p = byte_rows(a, 2, "codes", copy);
    if (a.shape(1) != c->block_bytes())
      throw tq::Error("codes: expected shape (n_blocks, " + std::to_string(c->block_bytes()) +
                      ") for '" + type + "', got " + shape_str(a));
    n_blocks = a.shape(0);
    return p;
  }

  const float* query(const AnyArray& q, std::vector<float>& copy) const {
    const float* p = float_rows(q, 1, "q", copy);
    if (int(q.shape(0)) != c->dim())
      throw tq::Error("q: expected shape (" + std::to_string(c->dim()) + ",), got " +
                      shape_str(q));
    for (int i = 0; i < c->dim(); ++i)
      if (!std::isfinite(p[i])) throw tq::Error("q: NaN or Inf in the query");
    return p;
  }
};

}  // namespace

void bind_codec(nb::module_& m) {
  nb::class_<PyCodec>(m, "Codec",
                      "One cache type at one head dimension: encode vectors to codes and compute "
                      "on the codes (the engine's C++ codec).")
      .def(
          "__init__",
          [](PyCodec* self, const std::string& type, int dim, uint64_t seed, bool is_key,
             int layer, int head, const std::string& rope) {
            tq::CodecOptions o;
            o.seed = seed;
            o.is_key = is_key;
            o.layer = layer;
            o.head = head;
            if (rope == "normal") o.rope = tq::RopePairing::kNormal;
            else if (rope == "neox") o.rope = tq::RopePairing::kNeox;
            else throw tq::Error("rope: expected 'normal' or 'neox', got '" + rope + "'");
            if (dim <= 0) throw tq::Error("dim must be positive");
            if (needs_learned_data(type))
              throw tq::Error("cache type '" + type + "' needs learned codebooks: use it "
                              "through a cache with codebooks");
            new (self) PyCodec{tq::make_codec(type, dim, o), type};
          },
          nb::arg("type"), nb::arg("dim"), nb::arg("seed") = 0x5451'0001,
          nb::arg("is_key") = true, nb::arg("layer") = 0, nb::arg("head") = 0,
          nb::arg("rope") = "normal",
          "Codec(type, dim, seed=0x54510001, is_key=True, layer=0, head=0, rope='normal'). "
          "`seed` picks the rotation (as the cache's --seed); `is_key` picks the key form of "
          "types whose key and value forms differ; rope ('normal' or 'neox') is the RoPE "
          "pairing for pair-based types.")
      .def_prop_ro("name", [](const PyCodec& s) { return s.c->name(); })
      .def_prop_ro("dim", [](const PyCodec& s) { return s.c->dim(); })
      .def_prop_ro("block_tokens", [](const PyCodec& s) { return s.c->block_tokens(); },
                   "Vectors per code block (encode/decode take whole blocks).")
      .def_prop_ro("block_bytes", [](const PyCodec& s) { return s.c->block_bytes(); },
                   "Bytes of one code block (everything the type stores).")
      .def_prop_ro("bpv", [](const PyCodec& s) { return s.c->bpv(); },
                   "All-in bits per value, from the byte layout.")
      .def(
          "encode",
          [](const PyCodec& s, const AnyArray& x) {
            std::vector<float> copy;
            size_t n = 0;
            const float* p = s.vectors(x, "x", copy, n);
            const size_t nb_ = s.rows_to_blocks(n, "x");
            auto out = new_array<uint8_t>({nb_, s.c->block_bytes()});
            {
              nb::gil_scoped_release r;
              s.c->encode(p, nb_, out.data());  // throws tq::Error on NaN/Inf
            }
            return out;
          },
          nb::arg("x"),
          "x: (n, dim) float32 (n a multiple of block_tokens) -> codes (n / block_tokens, "
          "block_bytes) uint8. NaN/Inf raise turboquant.Error.")
      .def(
          "decode",
          [](const PyCodec& s, const AnyArray& codes) {
            std::vector<uint8_t> copy;
            size_t nb_ = 0;
            const uint8_t* p = s.codes(codes, copy, nb_);
            const size_t n = nb_ * size_t(s.c->block_tokens());
            auto out = new_array<float>({n, size_t(s.c->dim())});
            nb::gil_scoped_release r;
            s.c->decode(p, nb_, out.data());
            return out;
          },
          nb::arg("codes"), "codes (n_blocks, block_bytes) uint8 -> (n, dim) float32.")
      .def(
          "score",
          [](const PyCodec& s, const AnyArray& q, const AnyArray& codes) {
            std::vector<float> qc;
            std::vector<uint8_t> cc;
            size_t nb_ = 0;
            const float* qp = s.query(q, qc);
            const uint8_t* cp = s.codes(codes, cc, nb_);
            auto out = new_array<float>({nb_ * size_t(s.c->block_tokens())});
            nb::gil_scoped_release r;
            auto qs = s.c->prepare_query(qp);
            s.c->score(*qs, cp, nb_, out.data());
            return out;
          },
          nb::arg("q"), nb::arg("codes"),
          "q: (dim,) float32, codes of n vectors -> (n,) float32, q . decode(codes)_i computed "
          "on the codes (prepare_query + score).")
      .def(
          "weighted_sum",
          [](const PyCodec& s, const AnyArray& codes, const AnyArray& w) {
            std::vector<uint8_t> cc;
            std::vector<float> wc;
            size_t nb_ = 0;
            const uint8_t* cp = s.codes(codes, cc, nb_);
            const float* wp = float_rows(w, 1, "w", wc);
            const size_t n = nb_ * size_t(s.c->block_tokens());
            if (w.shape(0) != n)
              throw tq::Error("w: expected shape (" + std::to_string(n) + ",), got " +
                              shape_str(w));
            auto out = new_array<float>({size_t(s.c->dim())});
            nb::gil_scoped_release r;
            std::vector<float> acc(s.c->acc_size(), 0.f);
            s.c->accumulate(cp, nb_, wp, acc.data());
            s.c->finish(acc.data(), out.data());
            return out;
          },
          nb::arg("codes"), nb::arg("w"),
          "codes of n vectors, w: (n,) float32 -> (dim,) float32, sum_i w_i decode(codes)_i "
          "computed on the codes (accumulate + finish).")
      .def("__repr__", [](const PyCodec& s) {
        return "Codec('" + s.type + "', dim=" + std::to_string(s.c->dim()) +
               ", bpv=" + std::to_string(s.c->bpv()) + ")";
      });
}

}  // namespace tqpy
