#include "cpu/dispatch.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tq/error.h"

namespace tq::cpu {
namespace {

// F16C read from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know "f16c".
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c() &&
         __builtin_cpu_supports("bmi2");
}
bool cpu_has_avx512() {
  __builtin_cpu_init();
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq");
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

bool int8_scores_enabled() { return int8_flag().load(std::memory_order_relaxed); }
void set_int8_scores(bool on) { int8_flag().store(on); }
bool int8_scores_active() {
  __builtin_cpu_init();
  return int8_scores_enabled() && active_level() == Level::kAvx512 &&
         __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vnni");
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
