// GGUF reader. The whole file is mmapped read-only; every length and offset read from it is
// checked against the mapped size before use, so a corrupt or truncated file gives a tq::Error
// naming the file and the byte offset, never an out-of-bounds read.
#include "model/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <string_view>

#include "tq/error.h"

namespace tq {

// One metadata value. Scalars are decoded; arrays keep a pointer to their elements in the map
// (strings are indexed up front, since their lengths must be validated anyway). raw_begin/raw_end
// delimit the serialized value (for the fingerprint).
struct GgufFile::Value {
  GgufValueType type = GgufValueType::U8;
  int64_t i = 0;   // integer types and bool
  uint64_t u = 0;  // the same as unsigned (u64 may exceed int64)
  double f = 0;    // f32 / f64
  std::string_view s;
  GgufValueType elem = GgufValueType::U8;
  uint64_t count = 0;
  const uint8_t* elems = nullptr;           // numeric array elements
  std::vector<std::string_view> strings;    // string array elements
  const uint8_t* raw_begin = nullptr;
  const uint8_t* raw_end = nullptr;
};

namespace {

const char* value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: return "u8";
    case GgufValueType::I8: return "i8";
    case GgufValueType::U16: return "u16";
    case GgufValueType::I16: return "i16";
    case GgufValueType::U32: return "u32";
    case GgufValueType::I32: return "i32";
    case GgufValueType::F32: return "f32";
    case GgufValueType::BOOL: return "bool";
    case GgufValueType::STRING: return "string";
    case GgufValueType::ARRAY: return "array";
    case GgufValueType::U64: return "u64";
    case GgufValueType::I64: return "i64";
    case GgufValueType::F64: return "f64";
  }
  return "?";
}

// Size in bytes of a fixed-size value type; 0 for string/array.
size_t scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::BOOL: return 1;
    case GgufValueType::U16:
    case GgufValueType::I16: return 2;
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::F32: return 4;
    case GgufValueType::U64:
    case GgufValueType::I64:
    case GgufValueType::F64: return 8;
    default: return 0;
  }
}

bool is_integer(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::U16:
    case GgufValueType::I16:
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::U64:
    case GgufValueType::I64:
    case GgufValueType::BOOL: return true;
    default: return false;
  }
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The integer view of a float value (never read: get_int refuses floats). Converting a value
// outside int64's range (or NaN) is undefined behaviour, so those become 0.
int64_t float_to_int(double f) {
  return f > -9.2e18 && f < 9.2e18 ? int64_t(f) : 0;
}

// Decodes one fixed-size scalar at p into (i, u, f).
void decode_scalar(GgufValueType t, const uint8_t* p, int64_t& i, uint64_t& u, double& f) {
  switch (t) {
    case GgufValueType::U8: u = load<uint8_t>(p); i = int64_t(u); f = double(u); break;
    case GgufValueType::I8: i = load<int8_t>(p); u = uint64_t(i); f = double(i); break;
    case GgufValueType::BOOL: u = load<uint8_t>(p) != 0; i = int64_t(u); f = double(u); break;
    case GgufValueType::U16: u = load<uint16_t>(p); i = int64_t(u); f = double(u); break;
    case GgufValueType::I16: i = load<int16_t>(p); u = uint64_t(i); f = double(i); break;
    case GgufValueType::U32: u = load<uint32_t>(p); i = int64_t(u); f = double(u); break;
    case GgufValueType::I32: i = load<int32_t>(p); u = uint64_t(i); f = double(i); break;
    case GgufValueType::U64: u = load<uint64_t>(p); i = int64_t(u); f = double(u); break;
    case GgufValueType::I64: i = load<int64_t>(p); u = uint64_t(i); f = double(i); break;
    case GgufValueType::F32: f = load<float>(p); i = float_to_int(f); u = uint64_t(i); break;
    case GgufValueType::F64: f = load<double>(p); i = float_to_int(f); u = uint64_t(i); break;
    default: break;
  }
}

// A bounds-checked reader over the mapped file.
class Cursor {
 public:
  Cursor(const uint8_t* base, size_t size, const std::string& path)
      : base_(base), size_(size), path_(path) {}
  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  const uint8_t* here() const { return base_ + pos_; }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error("GGUF " + path_ + ": " + what + " (at byte " + std::to_string(pos_) + ")");
  }
  void need(uint64_t n, const char* what) const {
    if (n > left())
      fail(std::string("truncated file: ") + what + " needs " + std::to_string(n) +
           " bytes, " + std::to_string(left()) + " left");
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v = load<T>(here());
    pos_ += sizeof(T);
    return v;
  }
  const uint8_t* skip(uint64_t n, const char* what) {
    need(n, what);
    const uint8_t* p = here();
    pos_ += size_t(n);
    return p;
  }
  std::string_view str(const char* what) {
    const uint64_t n = read<uint64_t>(what);
    if (n > left())
      fail(std::string(what) + " has length " + std::to_string(n) + ", past the end of the file (" +
           std::to_string(left()) + " bytes left)");
    const uint8_t* p = skip(n, what);
    return {reinterpret_cast<const char*>(p), size_t(n)};
  }

 private:
  const uint8_t* base_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& path_;
};

std::string printable(std::string_view s, size_t max_len) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (out.size() >= max_len) {
      out += "...";
      break;
    }
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c == '"') out += "\\\"";
    else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else out += char(c);
  }
  return out;
}

std::string format_number(GgufValueType t, int64_t i, uint64_t u, double f) {
  char buf[64];
  switch (t) {
    case GgufValueType::BOOL: return i ? "true" : "false";
    case GgufValueType::U64: std::snprintf(buf, sizeof buf, "%" PRIu64, u); return buf;
    case GgufValueType::F32:
    case GgufValueType::F64: std::snprintf(buf, sizeof buf, "%.9g", f); return buf;
    default: std::snprintf(buf, sizeof buf, "%" PRId64, i); return buf;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------

int64_t GgufTensor::n_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

GgufFile::~GgufFile() {
  if (map_ != nullptr && owned_.empty()) munmap(const_cast<uint8_t*>(map_), size_);
}

void GgufFile::fail(const std::string& what) const { throw Error("GGUF " + path_ + ": " + what); }

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) f->fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    f->fail("not a regular file");
  }
  f->size_ = size_t(st.st_size);
  if (f->size_ < 24) {
    ::close(fd);
    f->fail("file too small to be a GGUF (" + std::to_string(f->size_) + " bytes)");
  }
  void* m = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) f->fail(std::string("mmap failed: ") + std::strerror(errno));
  f->map_ = static_cast<const uint8_t*>(m);
  f->parse();
  return f;
}

std::unique_ptr<GgufFile> GgufFile::from_bytes(std::vector<uint8_t> bytes,
                                               const std::string& name) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = name;
  f->owned_ = std::move(bytes);
  f->size_ = f->owned_.size();
  if (f->size_ < 24)
    f->fail("file too small to be a GGUF (" + std::to_string(f->size_) + " bytes)");
  f->map_ = f->owned_.data();
  f->parse();
  return f;
}

void GgufFile::parse() {
  GgufFile* const f = this;
  Cursor c(f->map_, f->size_, f->path_);
  if (std::memcmp(f->map_, "GGUF", 4) != 0) f->fail("not a GGUF file (bad magic)");
  c.skip(4, "magic");
  f->version_ = c.read<uint32_t>("version");
  if (f->version_ != 2 && f->version_ != 3)
    f->fail("unsupported GGUF version " + std::to_string(f->version_) + " (2 and 3 are)");
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // Each KV takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info at least
  // 8 + 4 + 4 + 8: counts larger than the file could hold are corrupt (and must not drive a
  // reservation of memory).
  if (n_kv > c.left() / 13) c.fail("metadata count " + std::to_string(n_kv) + " is impossible");
  if (n_tensors > c.left() / 24)
    c.fail("tensor count " + std::to_string(n_tensors) + " is impossible");

  for (uint64_t k = 0; k < n_kv; ++k) {
    const std::string key(c.str("metadata key"));
    if (f->kv_.count(key)) c.fail("duplicate metadata key '" + printable(key, 80) + "'");
    auto v = std::make_unique<Value>();
    const uint32_t type = c.read<uint32_t>("metadata value type");
    if (type > uint32_t(GgufValueType::F64))
      c.fail("metadata key '" + printable(key, 80) + "' has unknown value type " +
             std::to_string(type));
    v->type = GgufValueType(type);
    v->raw_begin = c.here();
    if (v->type == GgufValueType::STRING) {
      v->s = c.str("metadata string");
    } else if (v->type == GgufValueType::ARRAY) {
      const uint32_t et = c.read<uint32_t>("array element type");
      if (et > uint32_t(GgufValueType::F64) || et == uint32_t(GgufValueType::ARRAY))
        c.fail("array '" + printable(key, 80) + "' has unsupported element type " +
               std::to_string(et));
      v->elem = GgufValueType(et);
      v->count = c.read<uint64_t>("array length");
      if (v->elem == GgufValueType::STRING) {
        if (v->count > c.left() / 8)
          c.fail("array '" + printable(key, 80) + "' has length " + std::to_string(v->count) +
                 ", past the end of the file");
        v->strings.reserve(size_t(v->count));
        for (uint64_t i = 0; i < v->count; ++i) v->strings.push_back(c.str("array string"));
      } else {
        const size_t es = scalar_size(v->elem);
        if (v->count > c.left() / es)
          c.fail("array '" + printable(key, 80) + "' has length " + std::to_string(v->count) +
                 ", past the end of the file");
        v->elems = c.skip(v->count * es, "array elements");
      }
    } else {
      const size_t n = scalar_size(v->type);
      const uint8_t* p = c.skip(n, "metadata value");
      decode_scalar(v->type, p, v->i, v->u, v->f);
    }
    v->raw_end = c.here();
    f->key_order_.push_back(key);
    f->kv_.emplace(key, std::move(v));
  }

  if (f->has("general.alignment")) {
    const Value& a = f->value("general.alignment");
    if (!is_integer(a.type) || a.type == GgufValueType::BOOL)
      f->fail("general.alignment is not an integer");
    if (a.i <= 0 || a.i > (1 << 30) || (a.i & (a.i - 1)) != 0)
      f->fail("general.alignment " + std::to_string(a.i) + " is not a power of two");
    f->alignment_ = size_t(a.i);
  }

  f->tensors_.reserve(size_t(n_tensors));
  for (uint64_t t = 0; t < n_tensors; ++t) {
    GgufTensor ti;
    ti.name = std::string(c.str("tensor name"));
    if (f->tensor_index_.count(ti.name)) c.fail("duplicate tensor '" + printable(ti.name, 80) + "'");
    const uint32_t n_dims = c.read<uint32_t>("tensor dimension count");
    if (n_dims == 0 || n_dims > 4)
      c.fail("tensor '" + printable(ti.name, 80) + "' has " + std::to_string(n_dims) +
             " dimensions (1 to 4 allowed)");
    int64_t n_el = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const int64_t ne = c.read<int64_t>("tensor dimension");
      if (ne < 0 || (ne > 0 && n_el > INT64_MAX / ne))
        c.fail("tensor '" + printable(ti.name, 80) + "' has an invalid dimension " +
               std::to_string(ne));
      n_el *= ne;
      ti.ne.push_back(ne);
    }
    const uint32_t type = c.read<uint32_t>("tensor type");
    if (!ggml_type_known(type))
      c.fail("tensor '" + printable(ti.name, 80) + "' has unknown type " + std::to_string(type));
    ti.type = GgmlType(type);
    ti.offset = c.read<uint64_t>("tensor offset");
    const int64_t bs = ggml_block_size(ti.type);
    if (ti.ne[0] % bs != 0)
      c.fail("tensor '" + printable(ti.name, 80) + "' of type " + ggml_type_name(ti.type) +
             " has a row of " + std::to_string(ti.ne[0]) + " elements, not a multiple of " +
             std::to_string(bs));
    const uint64_t blocks = uint64_t(n_el / bs);
    if (blocks > UINT64_MAX / ggml_block_bytes(ti.type))
      c.fail("tensor '" + printable(ti.name, 80) + "' is too large");
    ti.nbytes = size_t(blocks * ggml_block_bytes(ti.type));
    if (ti.offset % f->alignment_ != 0)
      c.fail("tensor '" + printable(ti.name, 80) + "' offset " + std::to_string(ti.offset) +
             " is not a multiple of the alignment " + std::to_string(f->alignment_));
    f->tensor_index_.emplace(ti.name, f->tensors_.size());
    f->tensors_.push_back(std::move(ti));
  }

  // The data section starts at the next multiple of the alignment.
  const size_t header_end = c.pos();
  f->data_offset_ = (header_end + f->alignment_ - 1) / f->alignment_ * f->alignment_;
  for (GgufTensor& ti : f->tensors_) {
    if (f->data_offset_ > f->size_ || ti.offset > f->size_ - f->data_offset_ ||
        ti.nbytes > f->size_ - f->data_offset_ - ti.offset)
      f->fail("tensor '" + printable(ti.name, 80) + "' (offset " + std::to_string(ti.offset) +
              ", " + std::to_string(ti.nbytes) + " bytes) extends past the end of the file (" +
              std::to_string(f->size_) + " bytes; data section at " +
              std::to_string(f->data_offset_) + "): truncated file?");
    ti.data = f->map_ + f->data_offset_ + ti.offset;
  }
}

uint32_t GgufFile::version() const { return version_; }
const std::string& GgufFile::path() const { return path_; }
size_t GgufFile::file_size() const { return size_; }
size_t GgufFile::alignment() const { return alignment_; }
size_t GgufFile::data_offset() const { return data_offset_; }

bool GgufFile::has(const std::string& key) const { return kv_.count(key) != 0; }

const GgufFile::Value& GgufFile::value(const std::string& key) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) fail("missing metadata key '" + key + "'");
  return *it->second;
}

GgufValueType GgufFile::type_of(const std::string& key) const { return value(key).type; }

GgufValueType GgufFile::array_type_of(const std::string& key) const {
  const Value& v = value(key);
  if (v.type != GgufValueType::ARRAY) fail("metadata key '" + key + "' is not an array");
  return v.elem;
}

uint64_t GgufFile::array_size(const std::string& key) const {
  const Value& v = value(key);
  if (v.type != GgufValueType::ARRAY) fail("metadata key '" + key + "' is not an array");
  return v.count;
}

std::string GgufFile::get_string(const std::string& key) const {
  const Value& v = value(key);
  if (v.type != GgufValueType::STRING)
    fail("metadata key '" + key + "' is a " + value_type_name(v.type) + ", not a string");
  return std::string(v.s);
}

std::string GgufFile::get_string(const std::string& key, const std::string& def) const {
  return has(key) ? get_string(key) : def;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const Value& v = value(key);
  if (!is_integer(v.type))
    fail("metadata key '" + key + "' is a " + value_type_name(v.type) + ", not an integer");
  if (v.type == GgufValueType::U64 && v.u > uint64_t(INT64_MAX))
    fail("metadata key '" + key + "' is too large (" + std::to_string(v.u) + ")");
  return v.i;
}

int64_t GgufFile::get_int(const std::string& key, int64_t def) const {
  return has(key) ? get_int(key) : def;
}

double GgufFile::get_float(const std::string& key) const {
  const Value& v = value(key);
  if (v.type == GgufValueType::F32 || v.type == GgufValueType::F64) return v.f;
  if (is_integer(v.type) && v.type != GgufValueType::BOOL) return v.f;
  fail("metadata key '" + key + "' is a " + value_type_name(v.type) + ", not a number");
}

double GgufFile::get_float(const std::string& key, double def) const {
  return has(key) ? get_float(key) : def;
}

bool GgufFile::get_bool(const std::string& key, bool def) const {
  if (!has(key)) return def;
  const Value& v = value(key);
  if (!is_integer(v.type))
    fail("metadata key '" + key + "' is a " + value_type_name(v.type) + ", not a bool");
  return v.i != 0;
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const Value& v = value(key);
  if (v.type != GgufValueType::ARRAY || v.elem != GgufValueType::STRING)
    fail("metadata key '" + key + "' is not an array of strings");
  std::vector<std::string> out;
  out.reserve(v.strings.size());
  for (auto s : v.strings) out.emplace_back(s);
  return out;
}

std::vector<float> GgufFile::get_float_array(const std::string& key) const {
  const Value& v = value(key);
  if (v.type != GgufValueType::ARRAY || v.elem == GgufValueType::STRING)
    fail("metadata key '" + key + "' is not an array of numbers");
  const size_t es = scalar_size(v.elem);
  std::vector<float> out(size_t(v.count));
  for (uint64_t i = 0; i < v.count; ++i) {
    int64_t ii = 0;
    uint64_t uu = 0;
    double ff = 0;
    decode_scalar(v.elem, v.elems + i * es, ii, uu, ff);
    out[size_t(i)] = float(ff);
  }
  return out;
}

std::vector<int32_t> GgufFile::get_int_array(const std::string& key) const {
  const Value& v = value(key);
  if (v.type != GgufValueType::ARRAY || !is_integer(v.elem))
    fail("metadata key '" + key + "' is not an array of integers");
  const size_t es = scalar_size(v.elem);
  std::vector<int32_t> out(size_t(v.count));
  for (uint64_t i = 0; i < v.count; ++i) {
    int64_t ii = 0;
    uint64_t uu = 0;
    double ff = 0;
    decode_scalar(v.elem, v.elems + i * es, ii, uu, ff);
    if (ii < INT32_MIN || ii > INT32_MAX || (v.elem == GgufValueType::U64 && uu > INT32_MAX))
      fail("metadata array '" + key + "' has an element out of the int32 range");
    out[size_t(i)] = int32_t(ii);
  }
  return out;
}

std::vector<std::string> GgufFile::keys() const { return key_order_; }

std::string GgufFile::value_summary(const std::string& key) const {
  const Value& v = value(key);
  if (v.type == GgufValueType::STRING) {
    std::string q(1, '"');  // (not "\"" + ...: GCC 12 warns spuriously on that)
    q += printable(v.s, 60);
    return q + '"';
  }
  if (v.type != GgufValueType::ARRAY) return format_number(v.type, v.i, v.u, v.f);
  std::string out = std::string("[") + value_type_name(v.elem) + " x " + std::to_string(v.count);
  const uint64_t show = std::min<uint64_t>(v.count, 4);
  for (uint64_t i = 0; i < show; ++i) {
    out += i == 0 ? ": " : ", ";
    if (v.elem == GgufValueType::STRING) {
      out += '"';
      out += printable(v.strings[size_t(i)], 24);
      out += '"';
    } else {
      int64_t ii = 0;
      uint64_t uu = 0;
      double ff = 0;
      decode_scalar(v.elem, v.elems + i * scalar_size(v.elem), ii, uu, ff);
      out += format_number(v.elem, ii, uu, ff);
    }
  }
  if (v.count > show) out += ", ...";
  return out + "]";
}

std::string GgufFile::architecture() const { return get_string("general.architecture"); }

const std::vector<GgufTensor>& GgufFile::tensors() const { return tensors_; }

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensor& GgufFile::tensor(const std::string& name) const {
  const GgufTensor* t = find_tensor(name);
  if (t == nullptr) fail("missing tensor '" + name + "'");
  return *t;
}

uint64_t GgufFile::fingerprint(const std::vector<std::string>& tensor_names) const {
  // What identifies the model: general.architecture and every "<arch>.*" hyperparameter (in key
  // order, so the hash does not depend on the order of the file), then each named tensor's
  // name, type, shape and bytes. Names, general.* descriptions and the tokenizer are left out.
  for (const auto& name : tensor_names) (void)tensor(name);  // throws before hashing anything
  std::unique_ptr<XXH64_state_t, XXH_errorcode (*)(XXH64_state_t*)> state(XXH64_createState(),
                                                                          XXH64_freeState);
  XXH64_state_t* st = state.get();
  TQ_ASSERT(st != nullptr);
  XXH64_reset(st, 0x7475726271756E74ull);  // "turbqunt"
  const std::string arch = has("general.architecture") ? architecture() : std::string();
  std::vector<std::string> ks;
  for (const auto& [k, v] : kv_)
    if (k == "general.architecture" || (!arch.empty() && k.rfind(arch + ".", 0) == 0))
      ks.push_back(k);  // std::map: already sorted
  for (const auto& k : ks) {
    const Value& v = *kv_.at(k);
    const uint64_t len = k.size();
    const uint32_t type = uint32_t(v.type);
    XXH64_update(st, &len, sizeof len);
    XXH64_update(st, k.data(), k.size());
    XXH64_update(st, &type, sizeof type);
    XXH64_update(st, v.raw_begin, size_t(v.raw_end - v.raw_begin));
  }
  for (const auto& name : tensor_names) {
    const GgufTensor& t = tensor(name);
    const uint64_t len = name.size();
    const uint32_t type = uint32_t(t.type);
    XXH64_update(st, &len, sizeof len);
    XXH64_update(st, name.data(), name.size());
    XXH64_update(st, &type, sizeof type);
    XXH64_update(st, t.ne.data(), t.ne.size() * sizeof(int64_t));
    XXH64_update(st, t.data, t.nbytes);
  }
  return XXH64_digest(st);
}

}  // namespace tq
