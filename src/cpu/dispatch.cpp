#include "cpu/dispatch.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tq/error.h"

namespace tq::cpu {
namespace {

// CPU features from CPUID, and whether the OS saves the AVX / AVX-512 register state (XGETBV).
// (Not __builtin_cpu_supports: clang rejects some of the feature names, e.g. "f16c".)
struct Features {
  bool avx2 = false, fma = false, f16c = false, bmi2 = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vbmi = false, avx512vnni = false;
};

const Features& features() {
  static const Features f = [] {
    Features r;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return r;
    const bool osxsave = c & (1u << 27), avx = c & (1u << 28);
    r.fma = c & (1u << 12);
    r.f16c = c & (1u << 29);
    uint64_t xcr0 = 0;
    if (osxsave) {
      uint32_t lo, hi;
      __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
      xcr0 = (uint64_t(hi) << 32) | lo;
    }
    const bool os_avx = osxsave && avx && (xcr0 & 0x6) == 0x6;        // XMM + YMM state
    const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;            // opmask + ZMM state
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return r;
    r.avx2 = os_avx && (b & (1u << 5));
    r.bmi2 = b & (1u << 8);
    r.fma = r.fma && os_avx;
    r.f16c = r.f16c && os_avx;
    r.avx512f = os_avx512 && (b & (1u << 16));
    r.avx512dq = os_avx512 && (b & (1u << 17));
    r.avx512bw = os_avx512 && (b & (1u << 30));
    r.avx512vl = os_avx512 && (b & (1u << 31));
    r.avx512vbmi = os_avx512 && (c & (1u << 1));
    r.avx512vnni = os_avx512 && (c & (1u << 11));
    return r;
  }();
  return f;
}

bool cpu_has_avx2() {
  const Features& f = features();
  return f.avx2 && f.fma && f.f16c && f.bmi2;
}
bool cpu_has_avx512() {
  const Features& f = features();
  return cpu_has_avx2() && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
}

Level default_level() {
  const char* env = std::getenv("TQ_SIMD");
  if (env && *env) {
    const Level l = parse_level(env);
    if (int(l) > int(detected_level()))
      throw Error(std::string("TQ_SIMD=") + env +
                  ": this CPU does not support it (best: " + level_name(detected_level()) + ")");
    return l;
  }
  return detected_level();
}

std::atomic<int>& current() {
  static std::atomic<int> c{int(default_level())};
  return c;
}

std::atomic<bool>& int8_flag() {
  static std::atomic<bool> f{[] {
    const char* e = std::getenv("TQ_INT8_SCORES");
    return !(e && (!std::strcmp(e, "0") || !std::strcmp(e, "off")));
  }()};
  return f;
}

}  // namespace

bool cpu_has_vbmi_vnni() { return features().avx512vbmi && features().avx512vnni; }

bool int8_scores_enabled() { return int8_flag().load(std::memory_order_relaxed); }
void set_int8_scores(bool on) { int8_flag().store(on); }
bool int8_scores_active() {
  return int8_scores_enabled() && active_level() == Level::kAvx512 && cpu_has_vbmi_vnni();
}

const char* level_name(Level l) {
  switch (l) {
    case Level::kScalar:
      return "scalar";
    case Level::kAvx2:
      return "avx2";
    case Level::kAvx512:
      return "avx512";
  }
  return "?";
}

Level parse_level(const char* s) {
  if (!std::strcmp(s, "scalar")) return Level::kScalar;
  if (!std::strcmp(s, "avx2")) return Level::kAvx2;
  if (!std::strcmp(s, "avx512")) return Level::kAvx512;
  throw Error(std::string("unknown SIMD level '") + s + "' (expected scalar, avx2 or avx512)");
}

Level detected_level() {
  static const Level l = cpu_has_avx512() ? Level::kAvx512
                         : cpu_has_avx2() ? Level::kAvx2
                                          : Level::kScalar;
  return l;
}

std::vector<Level> available_levels() {
  std::vector<Level> v;
  for (int i = 0; i <= int(detected_level()); ++i) v.push_back(Level(i));
  return v;
}

Level active_level() { return Level(current().load(std::memory_order_relaxed)); }

void force_level(Level l) {
  if (int(l) > int(detected_level()))
    throw Error(std::string("SIMD level ") + level_name(l) + " is not supported by this CPU");
  current().store(int(l));
}

void reset_level() { current().store(int(default_level())); }

const Kernels& kernels_for(Level l) {
  TQ_ASSERT(int(l) <= int(detected_level()));
  switch (l) {
    case Level::kAvx512:
      return kernels_avx512();
    case Level::kAvx2:
      return kernels_avx2();
    default:
      return kernels_scalar();
  }
}

const Kernels& kernels() { return kernels_for(active_level()); }

}  // namespace tq::cpu
