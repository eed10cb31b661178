// GGUF model files (llama.cpp's format, versions 2 and 3): a validating mmap reader, the ggml
// tensor types and their dequantization to f32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tq {

// ggml tensor types, numbered as in ggml.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ4_NL = 20,
  BF16 = 30
};

// "q4_0", ... ; "unknown" for a value outside the enum.
const char* ggml_type_name(GgmlType t);
// True for the values listed in GgmlType (the reader rejects the others).
bool ggml_type_known(uint32_t t);
int64_t ggml_block_size(GgmlType t);  // elements per block (1 for floats, 32, 256)
size_t ggml_block_bytes(GgmlType t);  // bytes per block
// Whether dequantize() handles t.
bool ggml_can_dequantize(GgmlType t);
// Dequantize n elements (n a multiple of the block size) of type t to f32. Throws tq::Error for
// an unsupported type. Supported: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K.
void dequantize(GgmlType t, const void* src, float* dst, int64_t n);

struct GgufTensor {
  std::string name;
  GgmlType type;
  std::vector<int64_t> ne;  // dims, ne[0] fastest (ggml order): a Linear in→out has ne = {in, out}
  uint64_t offset;          // from the start of the data section
  const uint8_t* data;      // into the mmap
  size_t nbytes;
  int64_t n_elements() const;
};

// The GGUF metadata value types, numbered as in the format.
enum class GgufValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12
};

class GgufFile {
 public:
  // mmaps the file; validates magic, version (2 or 3), counts, every string/array length, the
  // alignment (general.alignment, default 32), and that every tensor lies inside the file.
  // Throws tq::Error with a one-line message naming the file and the problem.
  static std::unique_ptr<GgufFile> open(const std::string& path);
  // The same checks on bytes in memory (kept by the object); `name` stands for the path in
  // messages. For tests and the fuzz target (fuzz/fuzz_gguf.cpp).
  static std::unique_ptr<GgufFile> from_bytes(std::vector<uint8_t> bytes, const std::string& name);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const;
  const std::string& path() const;
  size_t file_size() const;
  size_t alignment() const;
  size_t data_offset() const;  // start of the tensor data section in the file

  bool has(const std::string& key) const;
  // The stored type of a key (throws if missing); for arrays, also the element type and count.
  GgufValueType type_of(const std::string& key) const;
  GgufValueType array_type_of(const std::string& key) const;
  uint64_t array_size(const std::string& key) const;

  std::string get_string(const std::string& key) const;  // throws if missing/wrong type
  std::string get_string(const std::string& key, const std::string& def) const;
  int64_t get_int(const std::string& key) const;  // any integer type (or bool)
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_float(const std::string& key) const;  // f32/f64 (or integer)
  double get_float(const std::string& key, double def) const;
  bool get_bool(const std::string& key, bool def) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<float> get_float_array(const std::string& key) const;   // any numeric elements
  std::vector<int32_t> get_int_array(const std::string& key) const;   // integer/bool elements
  std::vector<std::string> keys() const;                              // in file order
  std::string value_summary(const std::string& key) const;  // short printable form for `tq info`
  std::string architecture() const;                          // general.architecture
  const std::vector<GgufTensor>& tensors() const;
  const GgufTensor* find_tensor(const std::string& name) const;  // nullptr if absent
  const GgufTensor& tensor(const std::string& name) const;       // throws tq::Error if absent
  // Hash (xxHash64) of the architecture metadata and the given tensors' bytes — a model
  // fingerprint. Throws if a tensor is absent.
  uint64_t fingerprint(const std::vector<std::string>& tensor_names) const;

  struct Value;  // one metadata value (internal; defined in gguf.cpp)

 private:
  GgufFile() = default;
  const Value& value(const std::string& key) const;
  [[noreturn]] void fail(const std::string& what) const;
  void parse();  // the header, metadata and tensor table of map_[0, size_)
  std::vector<uint8_t> owned_;  // from_bytes(): the bytes map_ points into (else not used)

  std::string path_;
  uint32_t version_ = 0;
  const uint8_t* map_ = nullptr;
  size_t size_ = 0;
  size_t alignment_ = 32;
  size_t data_offset_ = 0;
  std::vector<std::string> key_order_;
  std::map<std::string, std::unique_ptr<Value>> kv_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace tq
