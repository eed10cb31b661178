// `tq types`: every cache type with its all-in bits per value at d = 64 and d = 128.
#include <cstdio>

#include "command.h"
#include "tq/codec.h"

namespace {

std::string bpv_or_dash(const std::string& t, int d, nlohmann::json& j) {
  try {
    const double b = tq::make_codec(t, d)->bpv();
    j = b;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4f", b);
    return buf;
  } catch (const tq::Error&) {
    j = nullptr;
    return "-";
  }
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("types", "List every cache type with its bits per value (bpv)");
  static bool json = false;
  cmd->add_flag("--json", json, "Print one JSON document {\"rows\":[{type,bpv_d64,bpv_d128}]}");
  cmd->callback([] {
    nlohmann::json rows = nlohmann::json::array();
    if (!json) std::printf("%-22s %9s %9s  %s\n", "type", "bpv d=64", "bpv d=128", "description");
    for (const auto& t : tq::list_types()) {
      nlohmann::json a, b;
      const std::string s64 = bpv_or_dash(t, 64, a), s128 = bpv_or_dash(t, 128, b);
      rows.push_back({{"type", t}, {"bpv_d64", a}, {"bpv_d128", b}});
      if (!json)
        std::printf("%-22s %9s %9s  %s\n", t.c_str(), s64.c_str(), s128.c_str(),
                    tq::describe_type(t).c_str());
    }
    if (json) tq::cli::print_json({{"rows", rows}});
  });
}
TQ_COMMAND(setup, 10);

}  // namespace
