// `tq bench attention` / `tq bench encode`: CPU decode-attention and append throughput over
// compressed caches (SPEC §5, issue 6). Baselines (f16 and q8_0) are always measured in the same
// run, interleaved with the other types repetition by repetition, so that their ratios survive
// a noisy shared machine; every number is the median over the repetitions.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <random>
#include <sstream>

#include "command.h"
#include "attention/decode.h"
#include "cpu/dispatch.h"
#include "tq/codec.h"

namespace {

struct Opts {
  std::string ctx = "1024,8192,32768,65536";
  std::string dim = "128,64";
  std::string types = "f32,f16,q8_0,q4_0,turbo2,turbo3,turbo4,turbo2.5,turbo3.5,turbo3p,polar";
  int threads = 0;
  int repeats = 7;
  int kv_heads = 0, q_per_kv = 0;  // 0 = by dim: d=64 → 3×3 (default model), else 8×4 (Llama-3-8B)
  bool json = false;
  uint64_t seed = 1;
  size_t tokens = 20000;  // encode bench
};

template <class T>
std::vector<T> parse_list(const std::string& s, const char* what) {
  std::vector<T> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    if constexpr (std::is_same_v<T, std::string>) {
      v.push_back(item);
    } else {
      try {
        size_t pos = 0;
        const long long x = std::stoll(item, &pos);
        if (pos != item.size() || x <= 0) throw 0;
        v.push_back(T(x));
      } catch (...) {
        throw tq::Error(std::string("--") + what + ": '" + item + "' is not a positive integer");
      }
    }
  }
  if (v.empty()) throw tq::Error(std::string("--") + what + ": empty list");
  return v;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
// CPU time of the calling thread: "per core" throughput on a machine shared with other jobs.
double thread_cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}
double process_cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string machine() {
  char buf[256] = "?";
  if (FILE* f = std::fopen("/proc/cpuinfo", "r")) {
    char line[512];
    while (std::fgets(line, sizeof line, f))
      if (!std::strncmp(line, "model name", 10)) {
        const char* p = std::strchr(line, ':');
        if (p) std::snprintf(buf, sizeof buf, "%s", p + 2);
        buf[std::strcspn(buf, "\n")] = 0;
        break;
      }
    std::fclose(f);
  }
  return buf;
}

// The cache of one type at one (ctx, dim): every KV head its own memory (the first head is
// encoded from random vectors, the others are copies of it, which costs the same to read).
struct TypeCache {
  std::string type;
  std::unique_ptr<tq::Codec> k, v;
  std::vector<std::vector<uint8_t>> kb, vb;
  std::vector<std::vector<tq::cpu::KvPage>> pages;
  size_t bytes = 0;
};

void bench_attention(const Opts& o) {
  const auto ctxs = parse_list<size_t>(o.ctx, "ctx");
  const auto dims = parse_list<int>(o.dim, "dim");
  auto types = parse_list<std::string>(o.types, "types");
  std::vector<std::string> all = types;
  for (const char* b : {"f16", "q8_0"})
    if (std::find(all.begin(), all.end(), b) == all.end()) all.push_back(b);
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  for (int d : dims)  // every type must exist at every dim before anything is printed
    for (const auto& t : all) tq::make_codec(t, d);
  nlohmann::json rows = nlohmann::json::array();
  if (!o.json)
    std::printf("# tq bench attention: %s, SIMD %s, %d thread(s), median of %d\n",
                machine().c_str(), tq::cpu::level_name(tq::cpu::active_level()), threads,
                o.repeats);
  for (int d : dims) {
    const int kvh = o.kv_heads > 0 ? o.kv_heads : (d == 64 ? 3 : 8);
    const int G = o.q_per_kv > 0 ? o.q_per_kv : (d == 64 ? 3 : 4);
    if (!o.json)
      std::printf(
          "\n## d=%d, %d KV heads x %d query heads each (wall clock; then CPU time of all "
          "threads)\n%-10s %8s %12s %9s %10s %10s %12s %10s %10s\n",
          d, kvh, G, "type", "ctx", "us/token", "GB/s", "vs f16", "vs q8_0", "cpu us/tok",
          "cpu vs f16", "cpu vs q8");
    for (size_t ctx : ctxs) {
      std::mt19937_64 rng(o.seed + ctx * 131 + d);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      std::vector<float> kx(ctx * d), vx(ctx * d);
      for (auto& x : kx) x = nd(rng);
      for (auto& x : vx) x = nd(rng);
      std::vector<float> q(size_t(kvh) * G * d), out(q.size());
      for (auto& x : q) x = nd(rng);
      std::vector<TypeCache> caches;
      for (const auto& t : all) {
        TypeCache c;
        c.type = t;
        c.k = tq::make_codec(t, d);
        tq::CodecOptions vo;
        vo.is_key = false;
        c.v = tq::make_codec(t, d, vo);
        if (c.k->block_tokens() != 1)
          throw tq::Error("bench attention: type '" + t + "' has multi-token blocks");
        std::vector<uint8_t> k1(ctx * c.k->block_bytes()), v1(ctx * c.v->block_bytes());
        c.k->encode(kx.data(), ctx, k1.data());
        c.v->encode(vx.data(), ctx, v1.data());
        for (int h = 0; h < kvh; ++h) {
          c.kb.push_back(k1);
          c.vb.push_back(v1);
        }
        for (int h = 0; h < kvh; ++h) c.pages.push_back({{c.kb[h].data(), c.vb[h].data(), ctx}});
        c.bytes = size_t(kvh) * (k1.size() + v1.size());
        caches.push_back(std::move(c));
      }
      const float scale = 1.0f / std::sqrt(float(d));
      tq::cpu::DecodeOptions opt;
      opt.threads = threads;
      std::map<std::string, std::vector<double>> times, cpu_times;
      auto run_one = [&](TypeCache& c) {
        std::vector<tq::cpu::HeadTask> tasks;
        for (int h = 0; h < kvh; ++h)
          tasks.push_back(
              {c.k.get(), c.v.get(), c.pages[h], &q[size_t(h) * G * d], &out[size_t(h) * G * d]});
        const double t0 = now_s(), c0 = process_cpu_s();
        tq::cpu::decode_attention_batch(tasks, G, scale, opt);
        cpu_times[c.type].push_back(process_cpu_s() - c0);
        return now_s() - t0;
      };
      for (auto& c : caches) run_one(c);  // warm-up
      cpu_times.clear();
      for (int r = 0; r < o.repeats; ++r)
        for (auto& c : caches) times[c.type].push_back(run_one(c));
      const double tf16 = median(times["f16"]), tq8 = median(times["q8_0"]);
      const double cf16 = median(cpu_times["f16"]), cq8 = median(cpu_times["q8_0"]);
      for (auto& c : caches) {
        if (std::find(types.begin(), types.end(), c.type) == types.end()) continue;
        const double t = median(times[c.type]), ct = median(cpu_times[c.type]);
        const double gbps = double(c.bytes) / t / 1e9;
        rows.push_back({{"type", c.type},
                        {"ctx", ctx},
                        {"dim", d},
                        {"kv_heads", kvh},
                        {"q_per_kv", G},
                        {"us_per_token", t * 1e6},
                        {"gbps", gbps},
                        {"cache_bytes", c.bytes},
                        {"speedup_vs_f16", tf16 / t},
                        {"speedup_vs_q8_0", tq8 / t},
                        {"cpu_us_per_token", ct * 1e6},
                        {"cpu_speedup_vs_f16", cf16 / ct},
                        {"cpu_speedup_vs_q8_0", cq8 / ct}});
        if (!o.json)
          std::printf("%-10s %8zu %12.1f %9.2f %9.2fx %9.2fx %12.1f %9.2fx %9.2fx\n",
                      c.type.c_str(), ctx, t * 1e6, gbps, tf16 / t, tq8 / t, ct * 1e6, cf16 / ct,
                      cq8 / ct);
      }
      std::fflush(stdout);
    }
  }
  if (o.json)
    tq::cli::print_json({{"machine", machine()},
                         {"simd", tq::cpu::level_name(tq::cpu::active_level())},
                         {"threads", threads},
                         {"repeats", o.repeats},
                         {"rows", rows}});
}

// Append throughput: GB/s of f32 input per core (one thread; per CPU-second of that thread, and
// per wall-clock second).
void bench_encode(const Opts& o) {
  const auto dims = parse_list<int>(o.dim, "dim");
  const auto types = parse_list<std::string>(o.types, "types");
  for (int d : dims)
    for (const auto& t : types) tq::make_codec(t, d);
  nlohmann::json rows = nlohmann::json::array();
  if (!o.json)
    std::printf(
        "# tq bench encode: %s, SIMD %s, 1 thread, median of %d\n"
        "%-10s %5s %12s %14s %15s\n",
        machine().c_str(), tq::cpu::level_name(tq::cpu::active_level()), o.repeats, "type", "dim",
        "ns/token", "GB/s per core", "GB/s wall-clock");
  for (int d : dims) {
    std::mt19937_64 rng(o.seed + d);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(o.tokens * d);
    for (auto& v : x) v = nd(rng);
    for (const auto& t : types) {
      auto c = tq::make_codec(t, d);
      const size_t n = o.tokens / size_t(c->block_tokens());
      std::vector<uint8_t> codes(n * c->block_bytes());
      c->encode(x.data(), std::min<size_t>(n, 100), codes.data());  // warm-up
      std::vector<double> ts, tw;
      for (int r = 0; r < o.repeats; ++r) {
        const double t0 = now_s(), c0 = thread_cpu_s();
        c->encode(x.data(), n, codes.data());
        ts.push_back(thread_cpu_s() - c0);
        tw.push_back(now_s() - t0);
      }
      const double tm = median(ts), twm = median(tw), toks = double(n * c->block_tokens());
      const double gbps = toks * d * 4 / tm / 1e9, gbps_wall = toks * d * 4 / twm / 1e9;
      rows.push_back({{"type", t},
                      {"dim", d},
                      {"ns_per_token", tm / toks * 1e9},
                      {"gbps", gbps},
                      {"gbps_wall", gbps_wall}});
      if (!o.json)
        std::printf("%-10s %5d %12.1f %14.3f %15.3f\n", t.c_str(), d, tm / toks * 1e9, gbps,
                    gbps_wall);
    }
  }
  if (o.json)
    tq::cli::print_json({{"machine", machine()},
                         {"simd", tq::cpu::level_name(tq::cpu::active_level())},
                         {"rows", rows}});
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "CPU benchmarks: decode attention, encode throughput");
  cmd->require_subcommand(1);
  static Opts o;
  auto common = [](CLI::App* s) {
    s->add_option("--dim", o.dim, "Head dimensions, comma-separated");
    s->add_option("--types", o.types, "Cache types, comma-separated");
    s->add_option("--repeats", o.repeats, "Repetitions (the median is reported)")
        ->check(CLI::Range(1, 1000));
    s->add_option("--seed", o.seed, "Seed of the random data");
    s->add_option(
        "--simd",
        [](const CLI::results_t& r) {
          tq::cpu::force_level(tq::cpu::parse_level(r[0].c_str()));
          return true;
        },
        "Force a SIMD level: scalar, avx2, avx512 (default: TQ_SIMD or the best available)");
    s->add_flag("--json", o.json, "One JSON document {\"rows\":[...]} on stdout");
  };
  auto* att = cmd->add_subcommand(
      "attention",
      "Single-token decode attention over a cache of each type: time per token, GB/s of cache "
      "bytes read, speedup vs f16 and q8_0 measured in the same run");
  att->add_option("--ctx", o.ctx, "Context lengths, comma-separated");
  att->add_option("--threads,-t", o.threads, "OpenMP threads (default: all)")
      ->check(CLI::Range(1, 1024));
  att->add_option("--kv-heads", o.kv_heads, "KV heads (default: 3 at d=64, else 8)")
      ->check(CLI::Range(1, 1024));
  att->add_option("--q-per-kv", o.q_per_kv, "Query heads per KV head (default: 3 at d=64, else 4)")
      ->check(CLI::Range(1, 64));
  common(att);
  att->callback([] { bench_attention(o); });
  auto* enc =
      cmd->add_subcommand("encode", "Append (encode) throughput per core: GB/s of f32 input");
  enc->add_option("--tokens", o.tokens, "Tokens per repetition")->check(CLI::Range(1, 100000000));
  common(enc);
  enc->callback([] {
    if (o.types == Opts().types)
      o.types = "f16,q8_0,q4_0,turbo2,turbo3,turbo4,turbo2.5,turbo3.5,turbo3p,polar";
    bench_encode(o);
  });
}
TQ_COMMAND(setup, 90);

}  // namespace
