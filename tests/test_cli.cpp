// The `tq` tool: JSON outputs parse and carry the documented keys; user errors are one line on
// stderr with a non-zero exit.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli_util.h"

TEST(Cli, TypesJson) {
  const auto r = run_tq("types --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.contains("rows"));
  bool saw_turbo3 = false;
  for (const auto& row : j["rows"]) {
    ASSERT_TRUE(row.contains("type") && row.contains("bpv_d64") && row.contains("bpv_d128"));
    if (row["type"] == "turbo3") {
      saw_turbo3 = true;
      EXPECT_DOUBLE_EQ(row["bpv_d128"].get<double>(), 3.125);
      EXPECT_DOUBLE_EQ(row["bpv_d64"].get<double>(), 3.25);
      EXPECT_EQ(row["center_keys"], true);  // the project's own keys: centred by default
    }
    if (row["type"] == "q4_0") EXPECT_EQ(row["center_keys"], false);  // a baseline
  }
  EXPECT_TRUE(saw_turbo3);
}

TEST(Cli, DistortionJson) {
  const auto r = run_tq("distortion --dim 64 --n 500 --seed 3 --types turbo2,turbo3p --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["dim"], 64);
  EXPECT_EQ(j["n"], 500);
  ASSERT_EQ(j["rows"].size(), 2u);
  for (const char* k : {"type", "bits", "bpv", "d_mse", "ip_var", "ip_bias", "paper_d_mse"})
    EXPECT_TRUE(j["rows"][0].contains(k)) << k;
  EXPECT_EQ(j["rows"][0]["bits"], 2);
  EXPECT_NEAR(j["rows"][0]["paper_d_mse"].get<double>(), 0.117, 1e-9);
}

TEST(Cli, UnknownTypeIsOneLineError) {
  const auto r = run_tq("distortion --types turbo3,bogus9 --n 10");
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("unknown cache type 'bogus9'"), std::string::npos) << r.err;
}

TEST(Cli, UnsupportedDimensionIsOneLineError) {
  const auto r = run_tq("distortion --types polar --dim 72 --n 10");
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("head dimension 72"), std::string::npos) << r.err;
}

TEST(Cli, BadFlagAndHelp) {
  EXPECT_NE(run_tq("distortion --no-such-flag").status, 0);
  EXPECT_NE(run_tq("").status, 0);  // a subcommand is required
  const auto h = run_tq("distortion --help");
  EXPECT_EQ(h.status, 0);
  EXPECT_NE(h.out.find("--dim"), std::string::npos);
}

TEST(Cli, CenterKeysFlagsExcludeEachOther) {
  for (const char* cmd : {"perplexity", "generate", "compare"}) {
    const std::string extra = std::string(cmd) == "compare" ? " --types turbo3" : "";
    const auto r = run_tq(std::string(cmd) + extra + " --center-keys --no-center-keys");
    EXPECT_NE(r.status, 0) << cmd;
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find("exclude each other"), std::string::npos) << r.err;
    const auto h = run_tq(std::string(cmd) + " --help");
    EXPECT_NE(h.out.find("--no-center-keys"), std::string::npos) << cmd;
  }
}
