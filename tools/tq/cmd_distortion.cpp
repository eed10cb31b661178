// `tq distortion`: measured MSE and inner-product error of each type on random unit vectors,
// next to the TurboQuant paper's values and bounds (DESIGN.md §2.2).
#include <cmath>
#include <cstdio>
#include <sstream>

#include "command.h"
#include "codecs/turbo.h"
#include "numeric_options.h"
#include "core/lloyd_max.h"
#include "core/progress.h"
#include "eval/distortion.h"
#include "tq/codec.h"

namespace {

struct Opts {
  int dim = 128;
  size_t n = 20000;
  uint64_t seed = 1;
  bool json = false;
  std::string types =
      "turbo1,turbo2,turbo3,turbo4,turbo1nc,turbo2nc,turbo3nc,turbo4nc,turbo2p,turbo3p,turbo4p,"
      "turbo5p,turbo2.5,turbo3.5,polar";
};

// Paper values (TurboQuant, Gaussian limit, rounded) for b = 1..4.
const double kPaperMse[] = {0.36, 0.117, 0.03, 0.009};
const double kPaperProd[] = {1.57, 0.56, 0.18, 0.047};  // × 1/d

// The bits of a TurboQuant type and its kind ('m': TurboQuant_mse with or without norm
// correction, 'p': TurboQuant_prod), from the codec itself; 0 bits for every other type
// (the split types have no single bit-width).
int turbo_bits(const std::string& t, int dim, char& kind) {
  kind = 0;
  const auto c = tq::make_codec(t, dim);
  if (auto* m = dynamic_cast<const tq::TurboMseCodec*>(c.get())) {
    kind = 'm';
    return m->bits();
  }
  if (auto* p = dynamic_cast<const tq::TurboProdCodec*>(c.get())) {
    kind = 'p';
    return p->bits();
  }
  return 0;
}

void run(const Opts& o) {
  if (o.n < 2) throw tq::Error("distortion: --n must be at least 2");
  std::vector<std::string> types;
  std::stringstream ss(o.types);
  for (std::string t; std::getline(ss, t, ',');)
    if (!t.empty()) types.push_back(t);
  for (auto& t : types) (void)tq::make_codec(t, o.dim);  // validate names and dim up front

  nlohmann::json rows = nlohmann::json::array();
  if (!o.json) {
    std::printf("random unit vectors: d = %d, n = %zu, seed = %llu\n", o.dim, o.n,
                (unsigned long long)o.seed);
    std::printf("%-9s %7s %10s %10s %10s %10s %10s  %11s %11s %9s %7s\n", "type", "bpv", "D_mse",
                "theory", "paper", "lower", "upper", "ip_var·d", "theory·d", "bias/se", "slope");
  }
  tq::Progress bar("distortion", types.size());
  size_t done = 0;
  for (const auto& t : types) {
    bar.update(done++, t);
    const auto r = tq::measure_distortion(t, o.dim, o.n, o.seed);
    char kind;
    const int b = turbo_bits(t, o.dim, kind);
    nlohmann::json row = {{"type", t},         {"bits", nullptr},      {"bpv", r.bpv},
                          {"d_mse", r.d_mse},  {"d_mse_se", r.d_mse_se}, {"ip_var", r.ip_var},
                          {"ip_bias", r.ip_bias}, {"ip_bias_se", r.ip_bias_se},
                          {"ip_slope", r.ip_slope}, {"paper_d_mse", nullptr},
                          {"theory_d_mse", nullptr}, {"lower_bound", nullptr},
                          {"upper_bound", nullptr}, {"theory_ip_var", nullptr},
                          {"paper_ip_var", nullptr}};
    double theory = NAN, paper = NAN, lo = NAN, hi = NAN, tip = NAN;
    if (b > 0) {
      row["bits"] = b;
      const int mb = kind == 'p' ? b - 1 : b;  // bits of the mse stage
      if (kind != 'p') {
        theory = tq::lloyd_max_codebook(o.dim, b).unit_mse();
        lo = std::pow(4.0, -b);
        hi = std::sqrt(3.0) * M_PI / 2 * std::pow(4.0, -b);
        row["theory_d_mse"] = theory;
        row["lower_bound"] = lo;
        row["upper_bound"] = hi;
        if (b <= 4) row["paper_d_mse"] = paper = kPaperMse[b - 1];
      } else {
        theory = tq::lloyd_max_codebook(o.dim, mb).unit_mse();
        // D_prod ≈ (π/(2d))·D_mse(b−1)·‖y‖², y unit.
        tip = M_PI / (2.0 * o.dim) * theory;
        row["theory_ip_var"] = tip;
        if (mb >= 1 && mb <= 4) row["paper_ip_var"] = kPaperProd[mb] / o.dim;
      }
    }
    rows.push_back(row);
    if (!o.json) {
      auto f = [](double v, const char* fmt = "%10.5f") {
        char buf[32];
        if (std::isnan(v)) return std::string("-");
        std::snprintf(buf, sizeof buf, fmt, v);
        return std::string(buf);
      };
      std::printf("%-9s %7.3f %10.5f %10s %10s %10s %10s  %11.4f %11s %9.2f %7.3f\n", t.c_str(),
                  r.bpv, r.d_mse, f(kind == 'p' ? NAN : theory).c_str(), f(paper).c_str(),
                  f(lo).c_str(), f(hi).c_str(), r.ip_var * o.dim, f(tip * o.dim, "%11.4f").c_str(),
                  r.ip_bias / r.ip_bias_se, r.ip_slope);
    }
  }
  bar.done();
  if (o.json) tq::cli::print_json({{"dim", o.dim}, {"n", o.n}, {"seed", o.seed}, {"rows", rows}});
}

void setup(CLI::App& app) {
  static Opts o;
  auto* cmd = app.add_subcommand(
      "distortion",
      "Measure D_mse and inner-product error on random unit vectors vs the TurboQuant paper");
  tq::cli::add_int_option(cmd, "-d,--dim", o.dim, 2, 1 << 16, "Vector dimension (head_dim)");
  tq::cli::add_int_option(cmd, "--n", o.n, 1, 1 << 26, "Number of random vectors");
  cmd->add_option("--seed", o.seed, "Seed of the random vectors")->capture_default_str();
  cmd->add_option("--types", o.types, "Comma-separated cache types")->capture_default_str();
  cmd->add_flag("--json", o.json,
                "One JSON document: {dim,n,rows:[{type,bits,bpv,d_mse,ip_var,ip_bias,"
                "paper_d_mse,...}]}");
  cmd->callback([] { run(o); });
}
TQ_COMMAND(setup, 20);

}  // namespace
