#include "model/gguf_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "tq/error.h"

namespace tq {

namespace {

// (resize + memcpy rather than vector::insert: GCC 12 warns spuriously on small inserts)
void append_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  if (n == 0) return;
  const size_t at = out.size();
  out.resize(at + n);
  std::memcpy(out.data() + at, p, n);
}

template <typename T>
void append(std::vector<uint8_t>& out, const T& v) {
  append_bytes(out, &v, sizeof(T));
}

void append_str(std::vector<uint8_t>& out, const std::string& s) {
  append<uint64_t>(out, s.size());
  append_bytes(out, s.data(), s.size());
}

template <typename T>
std::vector<uint8_t> scalar(T v) {
  std::vector<uint8_t> b;
  append(b, v);
  return b;
}

}  // namespace

void GgufWriter::put(const std::string& k, uint32_t type, std::vector<uint8_t> bytes) {
  for (auto& kv : kv_)
    if (kv.key == k) {  // replace, keeping the original position
      kv.type = type;
      kv.bytes = std::move(bytes);
      return;
    }
  kv_.push_back({k, type, std::move(bytes)});
}

void GgufWriter::set_string(const std::string& k, const std::string& v) {
  std::vector<uint8_t> b;
  append_str(b, v);
  put(k, uint32_t(GgufValueType::STRING), std::move(b));
}
void GgufWriter::set_u8(const std::string& k, uint8_t v) { put(k, 0, scalar(v)); }
void GgufWriter::set_i8(const std::string& k, int8_t v) { put(k, 1, scalar(v)); }
void GgufWriter::set_u16(const std::string& k, uint16_t v) { put(k, 2, scalar(v)); }
void GgufWriter::set_i16(const std::string& k, int16_t v) { put(k, 3, scalar(v)); }
void GgufWriter::set_u32(const std::string& k, uint32_t v) { put(k, 4, scalar(v)); }
void GgufWriter::set_i32(const std::string& k, int32_t v) { put(k, 5, scalar(v)); }
void GgufWriter::set_f32(const std::string& k, float v) { put(k, 6, scalar(v)); }
void GgufWriter::set_bool(const std::string& k, bool v) { put(k, 7, scalar<uint8_t>(v ? 1 : 0)); }
void GgufWriter::set_u64(const std::string& k, uint64_t v) { put(k, 10, scalar(v)); }
void GgufWriter::set_i64(const std::string& k, int64_t v) { put(k, 11, scalar(v)); }
void GgufWriter::set_f64(const std::string& k, double v) { put(k, 12, scalar(v)); }

void GgufWriter::set_string_array(const std::string& k, const std::vector<std::string>& v) {
  std::vector<uint8_t> b;
  append<uint32_t>(b, uint32_t(GgufValueType::STRING));
  append<uint64_t>(b, v.size());
  for (const auto& s : v) append_str(b, s);
  put(k, uint32_t(GgufValueType::ARRAY), std::move(b));
}

void GgufWriter::set_f32_array(const std::string& k, const std::vector<float>& v) {
  std::vector<uint8_t> b;
  append<uint32_t>(b, uint32_t(GgufValueType::F32));
  append<uint64_t>(b, v.size());
  for (float x : v) append(b, x);
  put(k, uint32_t(GgufValueType::ARRAY), std::move(b));
}

void GgufWriter::set_i32_array(const std::string& k, const std::vector<int32_t>& v) {
  std::vector<uint8_t> b;
  append<uint32_t>(b, uint32_t(GgufValueType::I32));
  append<uint64_t>(b, v.size());
  for (int32_t x : v) append(b, x);
  put(k, uint32_t(GgufValueType::ARRAY), std::move(b));
}

void GgufWriter::set_alignment(uint32_t a) {
  if (a == 0 || (a & (a - 1)) != 0) throw Error("GgufWriter: alignment must be a power of two");
  alignment_ = a;
  if (a != 32) set_u32("general.alignment", a);
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne,
                            const void* data, size_t nbytes) {
  if (ne.empty() || ne.size() > 4) throw Error("GgufWriter: tensor '" + name + "' needs 1-4 dims");
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  const int64_t bs = ggml_block_size(type);
  if (ne[0] % bs != 0 || size_t(n / bs) * ggml_block_bytes(type) != nbytes)
    throw Error("GgufWriter: tensor '" + name + "' has " + std::to_string(nbytes) +
                " bytes, which does not match its type and shape");
  Tensor t{name, type, std::move(ne), {}};
  const auto* p = static_cast<const uint8_t*>(data);
  t.data.assign(p, p + nbytes);
  tensors_.push_back(std::move(t));
}

std::vector<uint8_t> GgufWriter::serialize() const {
  std::vector<uint8_t> out;
  append_bytes(out, "GGUF", 4);
  append<uint32_t>(out, version_);
  append<uint64_t>(out, tensors_.size());
  append<uint64_t>(out, kv_.size());
  for (const auto& kv : kv_) {
    append_str(out, kv.key);
    append<uint32_t>(out, kv.type);
    append_bytes(out, kv.bytes.data(), kv.bytes.size());
  }
  const auto pad = [&](size_t x) { return (x + alignment_ - 1) / alignment_ * alignment_; };
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    append_str(out, t.name);
    append<uint32_t>(out, uint32_t(t.ne.size()));
    for (int64_t d : t.ne) append<int64_t>(out, d);
    append<uint32_t>(out, uint32_t(t.type));
    append<uint64_t>(out, offset);
    offset = pad(offset + t.data.size());
  }
  out.resize(pad(out.size()), 0);
  for (const auto& t : tensors_) {
    append_bytes(out, t.data.data(), t.data.size());
    out.resize(pad(out.size()), 0);
  }
  return out;
}

void GgufWriter::write(const std::string& path) const {
  const std::vector<uint8_t> bytes = serialize();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) throw Error("cannot write " + path + ": " + std::strerror(errno));
  const size_t n = std::fwrite(bytes.data(), 1, bytes.size(), f);
  const bool ok = n == bytes.size() && std::fflush(f) == 0;
  if (std::fclose(f) != 0 || !ok) throw Error("cannot write " + path + ": I/O error");
}

}  // namespace tq
