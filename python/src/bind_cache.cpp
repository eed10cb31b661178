// turboquant._core.KvCache (the paged compressed cache, attention on its codes), Codebooks (the
// polar-vq / kvquant learned data) and calibrate_polarvq (codebooks from K/V samples, e.g. ones
// a transformers model made).
#include <nanobind/stl/map.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <set>

#include "attention/attention.h"
#include "codecs/polarvq.h"
#include "common.h"
#include "eval/calibrate.h"
#include "eval/perplexity.h"

namespace tqpy {
namespace {

struct PyKvCache {
  std::unique_ptr<tq::KvCache> c;
  std::set<int> live;

  const tq::KvShape& shape() const { return c->shape(); }
  void check_seq(int seq) const {
    if (!live.count(seq)) throw tq::Error("KV cache: no sequence " + std::to_string(seq));
  }
  void check_layer(int layer) const {
    if (layer < 0 || layer >= shape().n_layer)
      throw tq::Error("KV cache: layer " + std::to_string(layer) + " outside [0, " +
                      std::to_string(shape().n_layer) + ")");
  }
  void check_head(int head) const {
    if (head < 0 || head >= shape().n_kv_head)
      throw tq::Error("KV cache: KV head " + std::to_string(head) + " outside [0, " +
                      std::to_string(shape().n_kv_head) + ")");
  }
  void check_finite(const float* x, size_t n, const char* what) const {
    for (size_t i = 0; i < n; ++i)
      if (!std::isfinite(x[i])) throw tq::Error(std::string(what) + ": NaN or Inf in the input");
  }
};

tq::AttnPath parse_path(const std::string& p) {
  if (p == "auto") return tq::AttnPath::kAuto;
  if (p == "codes") return tq::AttnPath::kCodes;
  if (p == "tiled") return tq::AttnPath::kTiled;
  if (p == "reference") return tq::AttnPath::kReference;
  throw tq::Error("path: expected 'auto', 'codes', 'tiled' or 'reference', got '" + p + "'");
}

// Element (i0, i1, i2, i3) of a 4-D float32 CPU array with any strides.
struct View4 {
  const float* p;
  int64_t s[4];
  size_t n[4];
  View4(const AnyArray& a, const char* what) {
    check_float(a, 4, what);
    p = static_cast<const float*>(a.data());
    for (int i = 0; i < 4; ++i) s[i] = a.stride(i), n[i] = a.shape(i);
  }
  float at(size_t a, size_t b, size_t c, size_t d) const {
    return p[int64_t(a) * s[0] + int64_t(b) * s[1] + int64_t(c) * s[2] + int64_t(d) * s[3]];
  }
};

tq::PolarVqParams params_from(const nb::dict& d) {
  tq::PolarVqParams p;
  p.preset = "custom";
  for (auto [kh, v] : d) {
    const std::string k = nb::cast<std::string>(kh);
    if (k == "preset") {
      p = tq::polarvq_preset(nb::cast<std::string>(v));
      continue;
    }
    int x = 0;
    if (!nb::try_cast(v, x)) throw tq::Error("polar-vq parameter " + k + ": expected an int");
    if (k == "mag_bits") p.mag_bits = x;
    else if (k == "angle_bits") p.angle_bits = x;
    else if (k == "group_size") p.group_size = x;
    else if (k == "key_block_tokens") p.key_block_tokens = x;
    else if (k == "value_bits") p.value_bits = x;
    else if (k == "value_group") p.value_group = x;
    else if (k == "vq_size") p.vq_size = x;
    else if (k == "vq_dim") p.vq_dim = x;
    else if (k == "subspaces") p.subspaces = x;
    else if (k == "key_vq_dim") p.key_vq_dim = x;
    else if (k == "vq_keys") p.vq_keys = x != 0;
    else if (k == "vq_values") p.vq_values = x != 0;
    else throw tq::Error("unknown polar-vq parameter '" + k + "'");
  }
  return p;
}

nb::dict params_dict(const tq::PolarVqParams& p) {
  nb::dict d;
  d["preset"] = p.preset;
  d["mag_bits"] = p.mag_bits;
  d["angle_bits"] = p.angle_bits;
  d["group_size"] = p.group_size;
  d["key_block_tokens"] = p.key_block_tokens;
  d["value_bits"] = p.value_bits;
  d["value_group"] = p.value_group;
  d["vq_size"] = p.vq_size;
  d["vq_dim"] = p.vq_dim;
  d["subspaces"] = p.subspaces;
  d["key_vq_dim"] = p.key_vq_dim;
  d["vq_keys"] = p.vq_keys;
  d["vq_values"] = p.vq_values;
  return d;
}

tq::RopePairing parse_rope(const std::string& r) {
  if (r == "normal") return tq::RopePairing::kNormal;
  if (r == "neox") return tq::RopePairing::kNeox;
  throw tq::Error("rope: expected 'normal' or 'neox', got '" + r + "'");
}

}  // namespace

nb::dict polarvq_params_dict(const tq::PolarVqParams& p) { return params_dict(p); }
tq::PolarVqParams polarvq_params(const nb::dict& d) { return params_from(d); }

void bind_cache(nb::module_& m) {
  nb::class_<Codebooks>(m, "Codebooks",
                        "Learned data of the polar-vq / kvquant types (a `tq calibrate` codebook "
                        "file in memory).")
      .def_static(
          "load",
          [](const std::string& path) {
            return Codebooks{
                std::make_shared<const tq::CodebookFile>(tq::read_codebook_file(path)), path};
          },
          nb::arg("path"), "Reads a codebook file (checks magic, version, checksum).")
      .def(
          "save",
          [](Codebooks& s, const std::string& path) {
            tq::write_codebook_file(path, *s.file);
            s.path = path;
          },
          nb::arg("path"), "Writes the codebook file (readable by `tq --codebooks`).")
      .def_prop_ro("preset", [](const Codebooks& s) { return s.file->params.preset; })
      .def_prop_ro("cache_type",
                   [](const Codebooks& s) { return tq::preset_label(s.file->params.preset); },
                   "The cache type these codebooks serve, e.g. 'polar-vq:balanced'.")
      .def_prop_ro("params", [](const Codebooks& s) { return params_dict(s.file->params); })
      .def_prop_ro("shape",
                   [](const Codebooks& s) {
                     return nb::make_tuple(s.file->n_layer, s.file->n_head_kv, s.file->head_dim);
                   },
                   "(n_layer, n_kv_head, head_dim) of the model they were made for.")
      .def_prop_ro("samples", [](const Codebooks& s) { return s.file->samples; })
      .def_prop_ro("ctx", [](const Codebooks& s) { return s.file->ctx; })
      .def_prop_ro("path", [](const Codebooks& s) { return s.path; })
      .def("__repr__", [](const Codebooks& s) {
        return "Codebooks('" + tq::preset_label(s.file->params.preset) + "', layers=" +
               std::to_string(s.file->n_layer) + ", kv_heads=" + std::to_string(s.file->n_head_kv) +
               ", head_dim=" + std::to_string(s.file->head_dim) + ")";
      });

  m.def(
      "polarvq_preset",
      [](const std::string& name) { return params_dict(tq::polarvq_preset(name)); },
      nb::arg("name"),
      "The parameters of a polar-vq preset (quality, balanced, max, gqa, stage1).");
  m.def("polarvq_preset_names", &tq::polarvq_preset_names);

  m.def(
      "calibrate_polarvq",
      [](const nb::dict& params, const std::vector<AnyArray>& keys,
         const std::vector<AnyArray>& values, const std::string& rope, uint64_t seed,
         size_t max_vq_points, int ctx) {
        const tq::PolarVqParams p = params_from(params);
        if (keys.empty() || keys.size() != values.size())
          throw tq::Error("calibrate_polarvq: keys and values need one (N, H, d) array per "
                          "layer, as many of each");
        const int n_layer = int(keys.size());
        int H = -1, d = -1;
        std::vector<tq::HeadSamples> heads;
        for (int l = 0; l < n_layer; ++l) {
          std::vector<float> kc, vc;
          const float* kp = float_rows(keys[l], 3, "keys", kc);
          const float* vp = float_rows(values[l], 3, "values", vc);
          if (keys[l].shape(0) != values[l].shape(0) || keys[l].shape(1) != values[l].shape(1) ||
              keys[l].shape(2) != values[l].shape(2))
            throw tq::Error("calibrate_polarvq: layer " + std::to_string(l) +
                            " keys and values differ in shape");
          if (H < 0) H = int(keys[l].shape(1)), d = int(keys[l].shape(2));
          if (int(keys[l].shape(1)) != H || int(keys[l].shape(2)) != d)
            throw tq::Error("calibrate_polarvq: every layer needs the same (H, d)");
          const size_t N = keys[l].shape(0);
          if (N < 16) throw tq::Error("calibrate_polarvq: need at least 16 samples per head");
          for (int h = 0; h < H; ++h) {
            tq::HeadSamples hs;
            hs.n = N;
            hs.keys.resize(N * d);
            hs.values.resize(N * d);
            for (size_t i = 0; i < N; ++i)
              for (int j = 0; j < d; ++j) {
                const size_t src = (i * H + h) * d + j;
                if (!std::isfinite(kp[src]) || !std::isfinite(vp[src]))
                  throw tq::Error("calibrate_polarvq: NaN or Inf in the samples");
                hs.keys[i * d + j] = kp[src];
                hs.values[i * d + j] = vp[src];
              }
            heads.push_back(std::move(hs));
          }
        }
        tq::CalibrateOptions co;
        co.seed = seed;
        co.max_vq_points = max_vq_points;
        tq::CodebookFile cb;
        {
          nb::gil_scoped_release r;
          cb = tq::calibrate_polarvq(p, n_layer, H, d, parse_rope(rope), heads, co);
        }
        cb.samples = keys[0].shape(0);
        cb.ctx = uint32_t(std::max(ctx, 0));
        return Codebooks{std::make_shared<const tq::CodebookFile>(std::move(cb)), ""};
      },
      nb::arg("params"), nb::arg("keys"), nb::arg("values"), nb::arg("rope") = "neox",
      nb::arg("seed") = 1, nb::arg("max_vq_points") = 4096, nb::arg("ctx") = 0,
      "Polar-vq codebooks from post-RoPE key/value samples: keys[l], values[l] are (N, H, d) "
      "float32 arrays of layer l. params: {'preset': name} and/or explicit parameters "
      "(mag_bits, angle_bits, group_size, key_block_tokens, value_bits, value_group, vq_size, "
      "vq_dim, subspaces, key_vq_dim, vq_keys, vq_values; changed ones make preset 'custom'). "
      "rope: the model's RoPE pairing ('neox' for transformers' Llama/Qwen2).");

  nb::class_<PyKvCache>(m, "KvCache",
                        "The engine's paged, compressed KV cache (sinks, residual window, "
                        "boundary layers, per-layer types) with attention on its codes.")
      .def(
          "__init__",
          [](PyKvCache* self, int n_layer, int n_kv_head, int head_dim, const std::string& rope,
             const std::vector<float>& rope_inv_freq, float rope_freq_scale,
             const nb::kwargs& kw) {
            tq::KvShape sh;
            sh.n_layer = n_layer;
            sh.n_kv_head = n_kv_head;
            sh.head_dim = head_dim;
            sh.rope = parse_rope(rope);
            sh.rope_inv_freq = rope_inv_freq;
            sh.rope_freq_scale = rope_freq_scale;
            if (!rope_inv_freq.empty() && int(rope_inv_freq.size()) * 2 != head_dim)
              throw tq::Error("rope_inv_freq: expected head_dim / 2 values");
            tq::KvCacheOptions o = cache_options(kw, nullptr);
            require_codebooks(o, false);
            tq::validate_cache_options(o, n_layer);
            new (self) PyKvCache{std::make_unique<tq::KvCache>(sh, o), {}};
          },
          nb::arg("n_layer"), nb::arg("n_kv_head"), nb::arg("head_dim"),
          nb::arg("rope") = "normal", nb::arg("rope_inv_freq") = std::vector<float>{},
          nb::arg("rope_freq_scale") = 1.f, nb::arg("kwargs"),
          "KvCache(n_layer, n_kv_head, head_dim, rope='normal', rope_inv_freq=[], "
          "rope_freq_scale=1, **options); options: k, v (types), layer_k, layer_v ({layer: "
          "type} or 'L=T,...'), boundary, boundary_type, residual, sinks, center_keys, seed, "
          "codebooks (a Codebooks), page_tokens, max_tokens (pool capacity over all sequences), "
          "max_seqs.")
      .def("new_seq",
           [](PyKvCache& s) {
             const int id = s.c->new_seq();
             s.live.insert(id);
             return id;
           })
      .def(
          "free_seq",
          [](PyKvCache& s, int seq) {
            s.check_seq(seq);
            s.c->free_seq(seq);
            s.live.erase(seq);
          },
          nb::arg("seq"))
      .def(
          "seq_len",
          [](const PyKvCache& s, int seq, int layer) {
            s.check_seq(seq);
            s.check_layer(layer);
            return s.c->seq_len(seq, layer);
          },
          nb::arg("seq"), nb::arg("layer") = 0)
      .def(
          "append",
          [](PyKvCache& s, int seq, int layer, const AnyArray& k, const AnyArray& v) {
            s.check_seq(seq);
            s.check_layer(layer);
            std::vector<float> kc, vc;
            const float* kp = float_rows(k, 3, "k", kc);
            const float* vp = float_rows(v, 3, "v", vc);
            const auto& sh = s.shape();
            for (const auto* a : {&k, &v})
              if (int(a->shape(1)) != sh.n_kv_head || int(a->shape(2)) != sh.head_dim ||
                  a->shape(0) != k.shape(0))
                throw tq::Error("append: expected k and v of shape (T, " +
                                std::to_string(sh.n_kv_head) + ", " +
                                std::to_string(sh.head_dim) + "), got " + shape_str(k) + " and " +
                                shape_str(v));
            const int T = int(k.shape(0));
            s.check_finite(kp, k.size(), "k");
            s.check_finite(vp, v.size(), "v");
            nb::gil_scoped_release r;
            s.c->append(seq, layer, kp, vp, T);
          },
          nb::arg("seq"), nb::arg("layer"), nb::arg("k"), nb::arg("v"),
          "Appends T tokens to (seq, layer); k, v: (T, n_kv_head, head_dim) float32.")
      .def(
          "append_batch",
          [](PyKvCache& s, const std::vector<int>& seqs, int layer, const AnyArray& k,
             const AnyArray& v) {
            s.check_layer(layer);
            for (int q : seqs) s.check_seq(q);
            const View4 K(k, "k"), V(v, "v");
            const auto& sh = s.shape();
            for (const View4* a : {&K, &V})
              if (a->n[0] != seqs.size() || int(a->n[1]) != sh.n_kv_head ||
                  a->n[2] != K.n[2] || int(a->n[3]) != sh.head_dim)
                throw tq::Error("append_batch: expected k and v of shape (" +
                                std::to_string(seqs.size()) + ", " +
                                std::to_string(sh.n_kv_head) + ", T, " +
                                std::to_string(sh.head_dim) + "), got " + shape_str(k) +
                                " and " + shape_str(v));
            const int H = sh.n_kv_head, d = sh.head_dim, T = int(K.n[2]);
            std::vector<float> kb(size_t(T) * H * d), vb(kb.size());
            nb::gil_scoped_release r;
            for (size_t b = 0; b < seqs.size(); ++b) {
              // (H, T, d) of one sequence → rows [t][h][j] as the cache takes them.
              for (int t = 0; t < T; ++t)
                for (int h = 0; h < H; ++h)
                  for (int j = 0; j < d; ++j) {
                    const size_t o = (size_t(t) * H + h) * d + j;
                    kb[o] = K.at(b, h, t, j);
                    vb[o] = V.at(b, h, t, j);
                  }
              for (size_t i = 0; i < kb.size(); ++i)
                if (!std::isfinite(kb[i]) || !std::isfinite(vb[i]))
                  throw tq::Error("append_batch: NaN or Inf in the keys or values");
              s.c->append(seqs[b], layer, kb.data(), vb.data(), T);
            }
          },
          nb::arg("seqs"), nb::arg("layer"), nb::arg("k"), nb::arg("v"),
          "Appends T tokens to each of B sequences in one layer; k, v: (B, n_kv_head, T, "
          "head_dim) float32 in any strides (transformers' layout).")
      .def(
          "attention",
          [](const PyKvCache& s, int seq, int layer, const AnyArray& q, float scale,
             const std::string& path) {
            s.check_seq(seq);
            s.check_layer(layer);
            std::vector<float> qc;
            const float* qp = float_rows(q, 3, "q", qc);
            const auto& sh = s.shape();
            const int T = int(q.shape(0)), nh = int(q.shape(1));
            if (int(q.shape(2)) != sh.head_dim || nh % sh.n_kv_head != 0 || nh == 0)
              throw tq::Error("attention: expected q of shape (T, n_head, " +
                              std::to_string(sh.head_dim) + ") with n_head a multiple of " +
                              std::to_string(sh.n_kv_head) + ", got " + shape_str(q));
            const int L = s.c->seq_len(seq, layer);
            if (T > L)
              throw tq::Error("attention: " + std::to_string(T) + " queries but only " +
                              std::to_string(L) + " stored positions (append first)");
            s.check_finite(qp, q.size(), "q");
            const tq::AttnPath p = parse_path(path);
            auto out = new_array<float>({size_t(T), size_t(nh), size_t(sh.head_dim)});
            nb::gil_scoped_release r;
            tq::attention(*s.c, seq, layer, nh, qp, T, L - T, scale, out.data(), p);
            return out;
          },
          nb::arg("seq"), nb::arg("layer"), nb::arg("q"), nb::arg("scale"),
          nb::arg("path") = "auto",
          "Causal attention of the T newest positions of (seq, layer) on the stored codes: q "
          "(T, n_head, head_dim) float32 -> (T, n_head, head_dim); query t sees positions "
          "[0, seq_len - T + t]. path: auto, codes, tiled or reference.")
      .def(
          "attention_batch",
          [](const PyKvCache& s, const std::vector<int>& seqs, int layer, const AnyArray& q,
             float scale) {
            s.check_layer(layer);
            for (int x : seqs) s.check_seq(x);
            const View4 Q(q, "q");
            const auto& sh = s.shape();
            const int nh = int(Q.n[1]), T = int(Q.n[2]), d = sh.head_dim;
            if (Q.n[0] != seqs.size() || int(Q.n[3]) != d || nh % sh.n_kv_head != 0 || nh == 0)
              throw tq::Error("attention_batch: expected q of shape (" +
                              std::to_string(seqs.size()) + ", n_head, T, " + std::to_string(d) +
                              ") with n_head a multiple of " + std::to_string(sh.n_kv_head) +
                              ", got " + shape_str(q));
            for (int x : seqs)
              if (s.c->seq_len(x, layer) < T)
                throw tq::Error("attention_batch: more queries than stored positions");
            auto out = new_array<float>({seqs.size(), size_t(T), size_t(nh), size_t(d)});
            std::vector<float> qb(size_t(T) * nh * d);
            nb::gil_scoped_release r;
            for (size_t b = 0; b < seqs.size(); ++b) {
              for (int t = 0; t < T; ++t)
                for (int h = 0; h < nh; ++h)
                  for (int j = 0; j < d; ++j) qb[(size_t(t) * nh + h) * d + j] = Q.at(b, h, t, j);
              for (float x : qb)
                if (!std::isfinite(x)) throw tq::Error("attention_batch: NaN or Inf in q");
              const int L = s.c->seq_len(seqs[b], layer);
              tq::attention(*s.c, seqs[b], layer, nh, qb.data(), T, L - T, scale,
                            out.data() + b * qb.size());
            }
            return out;
          },
          nb::arg("seqs"), nb::arg("layer"), nb::arg("q"), nb::arg("scale"),
          "attention() for B sequences: q (B, n_head, T, head_dim) float32 in any strides -> "
          "(B, T, n_head, head_dim) (transformers' attention output layout).")
      .def(
          "read",
          [](const PyKvCache& s, int seq, int layer, int head, bool is_key) {
            s.check_seq(seq);
            s.check_layer(layer);
            s.check_head(head);
            const int L = s.c->seq_len(seq, layer);
            auto out = new_array<float>({size_t(L), size_t(s.shape().head_dim)});
            s.c->read(seq, layer, head, is_key, out.data());
            return out;
          },
          nb::arg("seq"), nb::arg("layer"), nb::arg("head"), nb::arg("is_key"),
          "Everything stored for (seq, layer, head, K|V), decoded: (seq_len, head_dim).")
      .def_prop_ro("n_layer", [](const PyKvCache& s) { return s.shape().n_layer; })
      .def_prop_ro("n_kv_head", [](const PyKvCache& s) { return s.shape().n_kv_head; })
      .def_prop_ro("head_dim", [](const PyKvCache& s) { return s.shape().head_dim; })
      .def_prop_ro("kv_bytes", [](const PyKvCache& s) { return s.c->kv_bytes(); },
                   "Bytes stored for all live sequences (codes, f16 sinks/window, means).")
      .def_prop_ro("k_bytes", [](const PyKvCache& s) { return s.c->k_bytes(); })
      .def_prop_ro("v_bytes", [](const PyKvCache& s) { return s.c->v_bytes(); })
      .def_prop_ro("bpv_k", [](const PyKvCache& s) { return s.c->bpv_k(); })
      .def_prop_ro("bpv_v", [](const PyKvCache& s) { return s.c->bpv_v(); })
      .def_prop_ro("reserved_bytes", [](const PyKvCache& s) { return s.c->reserved_bytes(); })
      .def(
          "keys_centred",
          [](const PyKvCache& s, int layer) {
            s.check_layer(layer);
            return s.c->keys_centred(layer);
          },
          nb::arg("layer"),
          "Whether the layer's keys are mean-centred (center_keys None: the key type's "
          "default, on for turbo*/polar/polar-vq, off for baselines).")
      .def(
          "type_name",
          [](const PyKvCache& s, int layer, bool is_key) {
            s.check_layer(layer);
            return s.c->type_name(layer, is_key);
          },
          nb::arg("layer"), nb::arg("is_key"));
}

}  // namespace tqpy
