#include "codecs/polarvq_file.h"

#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>

namespace tq {
namespace {

class Out {
 public:
  std::vector<uint8_t> buf;
  template <class T>
  void pod(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    buf.insert(buf.end(), p, p + sizeof(T));
  }
  void str(const std::string& s) {
    pod<uint32_t>(uint32_t(s.size()));
    buf.insert(buf.end(), s.begin(), s.end());
  }
  template <class T>
  void vec(const std::vector<T>& v) {
    pod<uint64_t>(v.size());
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    buf.insert(buf.end(), p, p + v.size() * sizeof(T));
  }
};

class In {
 public:
  In(const uint8_t* p, size_t n, const std::string& path) : p_(p), n_(n), path_(path) {}
  template <class T>
  T pod() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p_ + off_, sizeof(T));
    off_ += sizeof(T);
    return v;
  }
  std::string str() {
    const uint32_t n = pod<uint32_t>();
    need(n);
    std::string s(reinterpret_cast<const char*>(p_ + off_), n);
    off_ += n;
    return s;
  }
  template <class T>
  std::vector<T> vec() {
    const uint64_t n = pod<uint64_t>();
    if (n > (n_ - off_) / sizeof(T)) bad("array length past the end");
    std::vector<T> v(n);
    // (an empty vector's data() may be null, and memcpy from null is undefined)
    if (n > 0) std::memcpy(v.data(), p_ + off_, n * sizeof(T));
    off_ += n * sizeof(T);
    return v;
  }
  size_t left() const { return n_ - off_; }
  [[noreturn]] void bad(const std::string& why) const {
    throw Error("codebook file '" + path_ + "' is corrupted: " + why);
  }

 private:
  void need(size_t k) const {
    if (k > n_ - off_) bad("unexpected end of data");
  }
  const uint8_t* p_;
  size_t n_, off_ = 0;
  std::string path_;
};

void put_params(Out& o, const PolarVqParams& p) {
  o.str(p.preset);
  for (int v : {p.mag_bits, p.angle_bits, p.group_size, p.key_block_tokens, p.value_bits,
                p.value_group, p.vq_size, p.vq_dim, p.subspaces, p.key_vq_dim, int(p.vq_keys),
                int(p.vq_values), 0})
    o.pod<int32_t>(v);
}

PolarVqParams get_params(In& in) {
  PolarVqParams p;
  p.preset = in.str();
  int v[13];
  for (int& x : v) x = in.pod<int32_t>();
  p.mag_bits = v[0]; p.angle_bits = v[1]; p.group_size = v[2]; p.key_block_tokens = v[3];
  p.value_bits = v[4]; p.value_group = v[5]; p.vq_size = v[6]; p.vq_dim = v[7];
  p.subspaces = v[8]; p.key_vq_dim = v[9]; p.vq_keys = v[10]; p.vq_values = v[11];
  if ((v[10] != 0 && v[10] != 1) || (v[11] != 0 && v[11] != 1) || v[12] != 0)
    in.bad("parameter flags out of range");
  return p;
}

}  // namespace

void write_codebook_file(const std::string& path, const CodebookFile& f) {
  TQ_ASSERT(f.heads.size() == size_t(f.n_layer) * f.n_head_kv);
  Out o;
  put_params(o, f.params);
  o.pod<uint64_t>(f.model_fingerprint);
  o.pod<uint64_t>(f.corpus_hash);
  o.pod<uint64_t>(f.samples);
  o.pod<uint32_t>(f.ctx);
  o.pod<uint32_t>(f.n_layer);
  o.pod<uint32_t>(f.n_head_kv);
  o.pod<uint32_t>(f.head_dim);
  o.pod<uint32_t>(f.rope == RopePairing::kNeox ? 1 : 0);
  for (const auto& h : f.heads) {
    o.vec(h->angle_centroids);
    o.vec(h->value_perm);
    o.vec(h->key_vq);
    o.vec(h->value_vq);
  }
  TQ_ASSERT(f.kvq.empty() || f.kvq.size() == f.heads.size());
  o.pod<uint32_t>(uint32_t(f.kvq.size()));
  for (const auto& k : f.kvq)
    for (const auto* v : k->arrays()) o.vec(*v);
  Out file;
  file.buf = {'T', 'Q', 'C', 'B'};
  file.pod<uint32_t>(kCodebookFormatVersion);
  file.pod<uint32_t>(uint32_t(o.buf.size()));
  file.buf.insert(file.buf.end(), o.buf.begin(), o.buf.end());
  file.pod<uint64_t>(XXH64(o.buf.data(), o.buf.size(), 0));
  const std::string tmp = path + ".part";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot write codebook file '" + path + "'");
    out.write(reinterpret_cast<const char*>(file.buf.data()), std::streamsize(file.buf.size()));
    if (!out) throw Error("cannot write codebook file '" + path + "'");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw Error("cannot write codebook file '" + path + "'");
}

CodebookFile read_codebook_file(const std::string& path) {
  std::error_code ec;
  // (an ifstream opens a directory and then fails with "basic_filebuf::underflow")
  if (std::filesystem::is_directory(path, ec))
    throw Error("codebook file '" + path + "' is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open codebook file '" + path + "'");
  std::vector<uint8_t> b;
  try {
    b.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } catch (const std::ios_base::failure&) {
    throw Error("cannot read codebook file '" + path + "'");
  }
  if (in.bad()) throw Error("cannot read codebook file '" + path + "'");
  return parse_codebook_file(b.data(), b.size(), path);
}

CodebookFile parse_codebook_file(const uint8_t* data, size_t size, const std::string& path) {
  const std::span<const uint8_t> b(data, size);
  if (b.size() < 4 || std::memcmp(b.data(), "TQCB", 4) != 0)
    throw Error("'" + path + "' is not a turboquant codebook file (bad magic)");
  if (b.size() < 12) throw Error("codebook file '" + path + "' is truncated");
  uint32_t version, len;
  std::memcpy(&version, b.data() + 4, 4);
  std::memcpy(&len, b.data() + 8, 4);
  if (version != kCodebookFormatVersion)
    throw Error("codebook file '" + path + "' has format version " + std::to_string(version) +
                "; this build reads version " + std::to_string(kCodebookFormatVersion) +
                " (recalibrate with `tq calibrate`)");
  if (b.size() < 12 + size_t(len) + 8)
    throw Error("codebook file '" + path + "' is truncated (" + std::to_string(b.size()) +
                " bytes, expected " + std::to_string(12 + size_t(len) + 8) + ")");
  if (b.size() > 12 + size_t(len) + 8)
    throw Error("codebook file '" + path + "' has trailing bytes");
  uint64_t sum;
  std::memcpy(&sum, b.data() + 12 + len, 8);
  if (XXH64(b.data() + 12, len, 0) != sum)
    throw Error("codebook file '" + path + "' is corrupted (checksum mismatch)");
  In r(b.data() + 12, len, path);
  CodebookFile f;
  f.params = get_params(r);
  f.model_fingerprint = r.pod<uint64_t>();
  f.corpus_hash = r.pod<uint64_t>();
  f.samples = r.pod<uint64_t>();
  f.ctx = r.pod<uint32_t>();
  f.n_layer = r.pod<uint32_t>();
  f.n_head_kv = r.pod<uint32_t>();
  f.head_dim = r.pod<uint32_t>();
  const uint32_t rope = r.pod<uint32_t>();
  if (rope > 1) r.bad("unknown RoPE pairing " + std::to_string(rope));
  f.rope = rope ? RopePairing::kNeox : RopePairing::kNormal;
  if (size_t(f.n_layer) * f.n_head_kv > 1u << 20) r.bad("implausible head count");
  if (f.head_dim > 65536) r.bad("implausible head dimension " + std::to_string(f.head_dim));
  // Parameters written to a file are validated when read, not only when given (a file made
  // with value_group=-64 crashed every later use).
  if (f.params.preset != kKvqPreset)
    validate_polarvq_params(f.params, "codebook file '" + path + "'");
  for (size_t i = 0; i < size_t(f.n_layer) * f.n_head_kv; ++i) {
    auto h = std::make_shared<PolarVqCalibration>();
    h->dim = int(f.head_dim);
    h->angle_centroids = r.vec<float>();
    h->value_perm = r.vec<int32_t>();
    h->key_vq = r.vec<float>();
    h->value_vq = r.vec<float>();
    // A polar-vq file with stage 2 carries its tables (the codec refused to encode without
    // them only when the first token arrived, inside a parallel region).
    if (f.params.preset != kKvqPreset &&
        ((f.params.has_vq(true) && h->key_vq.empty()) ||
         (f.params.has_vq(false) && h->value_vq.empty())))
      r.bad("head " + std::to_string(i) + " lacks its stage-2 codebook");
    f.heads.push_back(std::move(h));
  }
  const uint32_t nk = r.pod<uint32_t>();
  if (nk != 0 && nk != f.heads.size()) r.bad("kvquant section with the wrong head count");
  for (uint32_t i = 0; i < nk; ++i) {
    auto k = std::make_shared<KvQuantCalibration>();
    for (auto* v : k->arrays()) *v = r.vec<float>();
    if (!k->valid(int(f.head_dim))) r.bad("kvquant arrays of the wrong size");
    f.kvq.push_back(std::move(k));
  }
  if (r.left() != 0) r.bad("unexpected bytes after the last head");
  return f;
}

void check_codebook_compatible(const CodebookFile& f, const std::string& path,
                               uint64_t model_fingerprint, int n_layer, int n_head_kv,
                               int head_dim, const std::string& preset) {
  if (f.model_fingerprint != model_fingerprint)
    throw Error("codebook file '" + path +
                "' was calibrated for another model (fingerprint mismatch)");
  if (int(f.n_layer) != n_layer || int(f.n_head_kv) != n_head_kv || int(f.head_dim) != head_dim)
    throw Error("codebook file '" + path + "' has shape " + std::to_string(f.n_layer) + "x" +
                std::to_string(f.n_head_kv) + "x" + std::to_string(f.head_dim) +
                ", the model has " + std::to_string(n_layer) + "x" + std::to_string(n_head_kv) +
                "x" + std::to_string(head_dim));
  if (f.params.preset != preset)
    throw Error("codebook file '" + path + "' is for preset '" + f.params.preset +
                "', not '" + preset + "'");
  const PolarVqParams want = polarvq_preset(preset);
  const auto& p = f.params;
  if (p.mag_bits != want.mag_bits || p.angle_bits != want.angle_bits ||
      p.group_size != want.group_size || p.key_block_tokens != want.key_block_tokens ||
      p.value_bits != want.value_bits || p.value_group != want.value_group ||
      p.vq_size != want.vq_size || p.vq_dim != want.vq_dim || p.subspaces != want.subspaces ||
      p.key_vq_dim != want.key_vq_dim || p.vq_keys != want.vq_keys ||
      p.vq_values != want.vq_values)
    throw Error("codebook file '" + path + "' was made with other parameters for preset '" +
                preset + "' (incompatible codebook; recalibrate)");
}

}  // namespace tq
