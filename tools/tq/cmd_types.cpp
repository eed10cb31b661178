// `tq types`: every cache type with its all-in bits per value at d = 64 and d = 128. Types whose
// key and value forms differ (polar-vq, KIVI) show K/V and report the mean as bpv.
#include <cstdio>
#include <optional>

#include "command.h"
#include "tq/codec.h"

namespace {

std::optional<double> bpv_of(const std::string& t, int d, bool key) {
  tq::CodecOptions o;
  o.is_key = key;
  try {
    return tq::make_codec(t, d, o)->bpv();
  } catch (const tq::Error&) {
    return std::nullopt;
  }
}

struct Cell {
  nlohmann::json mean, k, v;
  std::string text;
};

Cell cell(const std::string& t, int d) {
  Cell c;
  const auto k = bpv_of(t, d, true), v = bpv_of(t, d, false);
  char buf[48];
  if (!k || !v) {
    c.mean = c.k = c.v = nullptr;
    c.text = "-";
  } else if (*k == *v) {
    c.mean = c.k = c.v = *k;
    std::snprintf(buf, sizeof buf, "%.4f", *k);
    c.text = buf;
  } else {
    c.mean = 0.5 * (*k + *v);
    c.k = *k;
    c.v = *v;
    std::snprintf(buf, sizeof buf, "%.3f/%.3f", *k, *v);
    c.text = buf;
  }
  return c;
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "types", "List every cache type with its all-in bits per value (bpv) at d = 64 and 128");
  static bool json = false;
  cmd->add_flag("--json", json,
                "Print one JSON document {\"rows\":[{type,bpv_d64,bpv_d128,...}]} (bpv = mean of "
                "the key and value forms; bpv_k_*/bpv_v_* give each)");
  cmd->callback([] {
    nlohmann::json rows = nlohmann::json::array();
    if (!json)
      std::printf("%-20s %13s %13s  %s\n", "type", "bpv d=64", "bpv d=128", "description");
    for (const auto& t : tq::list_types()) {
      const Cell a = cell(t, 64), b = cell(t, 128);
      rows.push_back({{"type", t},
                      {"bpv_d64", a.mean},
                      {"bpv_d128", b.mean},
                      {"bpv_k_d64", a.k},
                      {"bpv_v_d64", a.v},
                      {"bpv_k_d128", b.k},
                      {"bpv_v_d128", b.v},
                      {"needs_calibration", tq::type_needs_calibration(t)},
                      {"center_keys", tq::type_traits(t).center_keys}});
      if (!json)
        std::printf("%-20s %13s %13s  %s%s\n", t.c_str(), a.text.c_str(), b.text.c_str(),
                    tq::describe_type(t).c_str(),
                    tq::type_traits(t).center_keys ? " [keys centred]" : "");
    }
    if (json) {
      tq::cli::print_json({{"rows", rows}});
      return;
    }
    std::printf(
        "bpv: codes only; [keys centred]: the type's keys are mean-centred by default "
        "(a f32 mean and an f16 offset per page: +32/n + 16/256 bits per key value for n "
        "tokens stored; --no-center-keys turns it "
        "off, --center-keys applies it to every type)\n");
  });
}
TQ_COMMAND(setup, 10);

}  // namespace
