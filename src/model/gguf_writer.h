// A small GGUF (v3) writer, used by tests to make GGUF files and by tools that export them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/gguf.h"

namespace tq {

class GgufWriter {
 public:
  void set_string(const std::string& k, const std::string& v);
  void set_u8(const std::string& k, uint8_t v);
  void set_i8(const std::string& k, int8_t v);
  void set_u16(const std::string& k, uint16_t v);
  void set_i16(const std::string& k, int16_t v);
  void set_u32(const std::string& k, uint32_t v);
  void set_i32(const std::string& k, int32_t v);
  void set_u64(const std::string& k, uint64_t v);
  void set_i64(const std::string& k, int64_t v);
  void set_f32(const std::string& k, float v);
  void set_f64(const std::string& k, double v);
  void set_bool(const std::string& k, bool v);
  void set_string_array(const std::string& k, const std::vector<std::string>& v);
  void set_f32_array(const std::string& k, const std::vector<float>& v);
  void set_i32_array(const std::string& k, const std::vector<int32_t>& v);
  // Tensor data is copied; nbytes must match the type and shape.
  void add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne,
                  const void* data, size_t nbytes);
  // Alignment of the data section and of each tensor (written as general.alignment when not 32).
  void set_alignment(uint32_t a);
  // The version written in the header (3 by default; 2 has the same layout).
  void set_version(uint32_t v) { version_ = v; }
  // The bytes of the file write() would produce.
  std::vector<uint8_t> serialize() const;
  void write(const std::string& path) const;  // throws tq::Error on I/O failure

 private:
  struct Kv {
    std::string key;
    uint32_t type;
    std::vector<uint8_t> bytes;  // the serialized value (after the type)
  };
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    std::vector<uint8_t> data;
  };
  void put(const std::string& k, uint32_t type, std::vector<uint8_t> bytes);
  std::vector<Kv> kv_;
  std::vector<Tensor> tensors_;
  uint32_t alignment_ = 32;
  uint32_t version_ = 3;
};

}  // namespace tq
