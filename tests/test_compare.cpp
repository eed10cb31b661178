// `tq compare`: type-list parsing (pairs, presets, row options, errors), the Pareto frontier,
// a tiny end-to-end run on the default model (skipped when it is missing), and the boundary
// count check of compare and perplexity.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "eval/compare.h"
#include "model/paths.h"
#include "temp_dir.h"
#include "tq/error.h"

namespace {

const std::string kModel = std::string(TQ_SOURCE_DIR) + "/" + tq::kDefaultModelFile;
const std::string kText = std::string(TQ_SOURCE_DIR) + "/data/eval.txt";
bool have_model() { return std::filesystem::exists(kModel) && std::filesystem::exists(kText); }

TEST(CompareParse, SinglesPairsPresets) {
  const auto e = tq::parse_type_list("turbo3, q8_0/turbo3,turboquant_k3v4_nc,q4_0+h,f16");
  ASSERT_EQ(e.size(), 5u);
  EXPECT_EQ(e[0].ctk, "turbo3");
  EXPECT_EQ(e[0].ctv, "turbo3");
  EXPECT_EQ(e[0].boundary_layers, -1);
  EXPECT_EQ(e[1].ctk, "q8_0");
  EXPECT_EQ(e[1].ctv, "turbo3");
  EXPECT_EQ(e[2].preset, "turboquant_k3v4_nc");
  EXPECT_EQ(e[2].ctk, "vllm-k3nc");
  EXPECT_EQ(e[2].ctv, "vllm-v4");
  EXPECT_EQ(e[2].boundary_layers, 2);
  EXPECT_EQ(e[2].boundary_type, "f16");
  EXPECT_EQ(e[3].ctk, "q4_0+h");
  EXPECT_TRUE(e[4].is_f16());
  EXPECT_FALSE(e[0].is_f16());
}

TEST(CompareParse, RowOptionsAndKiviDefault) {
  const auto e = tq::parse_type_list("kivi2,kivi4@R=0,turbo3@S=4,q8_0/kivi2@R=64@S=2");
  ASSERT_EQ(e.size(), 4u);
  tq::CompareOptions o;
  EXPECT_EQ(tq::row_cache_options(e[0], o).residual_window, 128);  // KIVI keeps R = 128
  EXPECT_EQ(tq::row_cache_options(e[1], o).residual_window, 0);
  EXPECT_EQ(tq::row_cache_options(e[2], o).sink_tokens, 4);
  EXPECT_EQ(tq::row_cache_options(e[2], o).residual_window, 0);
  EXPECT_EQ(tq::row_cache_options(e[3], o).residual_window, 64);
  EXPECT_EQ(tq::row_cache_options(e[3], o).sink_tokens, 2);
  // --residual on the command line wins over KIVI's default.
  o.residual_given = true;
  o.cache.residual_window = 32;
  EXPECT_EQ(tq::row_cache_options(e[0], o).residual_window, 32);
  // A preset's boundary layers win over --boundary.
  o.cache.boundary_layers = 5;
  const auto p = tq::parse_type_list("turboquant_4bit_nc,turbo4");
  EXPECT_EQ(tq::row_cache_options(p[0], o).boundary_layers, 2);
  EXPECT_EQ(tq::row_cache_options(p[1], o).boundary_layers, 5);
}

TEST(CompareParse, Errors) {
  for (const char* bad :
       {"", " ", "a/b/c", "q8_0/turbo3/turbo4", "/x", "x/", "turbo3,,q8_0", "turbo3,", "nope",
        "q8_0/nope", "turbo3@X=1", "turbo3@R=-1", "turbo3@R=abc", "@R=4", "turboquant_k8v4/q8_0"}) {
    EXPECT_THROW(tq::parse_type_list(bad), tq::Error) << "'" << bad << "'";
  }
  try {
    tq::parse_type_list("turbo3,nope");
    FAIL();
  } catch (const tq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope"), std::string::npos);
  }
}

TEST(ComparePareto, Frontier) {
  std::vector<tq::CompareRow> r(5);
  const double pts[5][2] = {{16, 0}, {8.5, 0.001}, {4.5, 0.01}, {5.0, 0.02}, {3.25, 0.05}};
  for (int i = 0; i < 5; ++i) {
    r[i].bpv = pts[i][0];
    r[i].kld_mean = pts[i][1];
  }
  const auto f = tq::pareto_frontier(r);
  EXPECT_EQ(f, (std::vector<size_t>{4, 2, 1, 0}));  // 5.0 bpv is dominated by 4.5
}

TEST(CompareCli, BadInputFailsBeforeWork) {
  for (const char* types : {"a/b/c", "/x", "nope", "turbo3,,q8_0"}) {
    const auto r = run_tq(std::string("compare --types '") + types + "'");
    EXPECT_EQ(r.status, 1) << types;
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find("error"), std::string::npos);
  }
}

TEST(CompareCli, BoundaryCountError) {
  if (!have_model()) GTEST_SKIP() << "model or text missing (run scripts/fetch_model.sh)";
  for (const std::string& cmd :
       {"compare -m " + kModel + " --types turbo3 --boundary 31 -c 16 --chunks 1",
        "perplexity -m " + kModel + " -f " + kText + " --boundary 99 -c 16 --chunks 1"}) {
    const auto r = run_tq(cmd);
    EXPECT_EQ(r.status, 1) << cmd;
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find("exceeds the model's 30 layers"), std::string::npos) << r.err;
  }
}

TEST(CompareCli, TinyRunJson) {
  if (!have_model()) GTEST_SKIP() << "model or text missing (run scripts/fetch_model.sh)";
  const std::string csv = tq::test::temp_path("compare.csv");
  const auto r =
      run_tq("compare -m " + kModel + " -f " + kText +
             " -c 48 --chunks 1 --decode 2 -q --json --types f16,q8_0/turbo3 --csv " + csv);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ctx"], 48);
  EXPECT_EQ(j["chunks"], 1);
  ASSERT_EQ(j["rows"].size(), 2u);  // f16 is the reference row itself, not run twice
  for (const auto& row : j["rows"])
    for (const char* k : {"ctk", "ctv", "bpv", "ppl", "dppl_pct", "kld_mean", "kld_p99", "top1",
                          "kv_bytes", "decode_tps"})
      EXPECT_TRUE(row.contains(k)) << k;
  const auto& f16 = j["rows"][0];
  EXPECT_EQ(f16["ctk"], "f16");
  EXPECT_NEAR(f16["kld_mean"].get<double>(), 0.0, 1e-6);
  EXPECT_EQ(f16["dppl_pct"].get<double>(), 0.0);
  EXPECT_EQ(f16["top1"].get<double>(), 1.0);
  EXPECT_NEAR(f16["bpv"].get<double>(), 16.0, 1e-9);
  const auto& q = j["rows"][1];
  EXPECT_EQ(q["ctk"], "q8_0");
  EXPECT_EQ(q["ctv"], "turbo3");
  EXPECT_GT(q["kld_mean"].get<double>(), 0.0);
  EXPECT_LT(q["bpv"].get<double>(), 16.0);
  EXPECT_GT(q["decode_tps"].get<double>(), 0.0);
  // The CSV reads back (--from-csv runs nothing) to the same rows.
  const auto back = run_tq("compare --from-csv " + csv + " --json");
  ASSERT_EQ(back.status, 0) << back.err;
  const auto jb = nlohmann::json::parse(back.out);
  ASSERT_EQ(jb["rows"].size(), 2u);
  EXPECT_EQ(jb["rows"][1]["ctv"], "turbo3");
  EXPECT_NEAR(jb["rows"][1]["kld_mean"].get<double>(), q["kld_mean"].get<double>(), 1e-9);
  std::filesystem::remove(csv);
}

// @C=0 / @C=1 per row; the type default otherwise (turbo* centred, baselines not).
TEST(CompareParse, KeyCentringRowOption) {
  const auto e = tq::parse_type_list("turbo3,turbo3@C=0,q4_0@C=1,f16@C=0,f16@C=1");
  ASSERT_EQ(e.size(), 5u);
  tq::CompareOptions o;
  EXPECT_EQ(tq::row_cache_options(e[0], o).key_centring, tq::KeyCentring::kTypeDefault);
  EXPECT_EQ(tq::row_cache_options(e[1], o).key_centring, tq::KeyCentring::kOff);
  EXPECT_EQ(tq::row_cache_options(e[2], o).key_centring, tq::KeyCentring::kOn);
  EXPECT_TRUE(e[3].is_f16());   // uncentred f16 is the reference itself
  EXPECT_FALSE(e[4].is_f16());  // centred f16 is a row of its own
  // The command line's --no-center-keys reaches rows without @C=.
  o.cache.key_centring = tq::KeyCentring::kOff;
  EXPECT_EQ(tq::row_cache_options(e[0], o).key_centring, tq::KeyCentring::kOff);
  EXPECT_EQ(tq::row_cache_options(e[2], o).key_centring, tq::KeyCentring::kOn);
  EXPECT_THROW(tq::parse_type_list("turbo3@C=2"), tq::Error);
}

// Every row says whether its keys were centred (JSON and CSV), and the means are in its bpv.
TEST(CompareCli, RowsSayWhetherKeysWereCentred) {
  if (!have_model()) GTEST_SKIP() << "model or text missing (run scripts/fetch_model.sh)";
  const std::string csv = tq::test::temp_path("compare-ctr.csv");
  const auto r = run_tq("compare -m " + kModel + " -f " + kText +
                        " -c 64 --chunks 1 --decode 0 -q -t 1 --json --types "
                        "turbo3,turbo3@C=0,q4_0,q4_0@C=1 --csv " +
                        csv);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["rows"].size(), 5u);
  const auto& rows = j["rows"];
  const int L = 30;                         // SmolLM2-135M
  EXPECT_EQ(rows[0]["centred_layers"], 0);  // the f16 reference
  EXPECT_EQ(rows[1]["centred_layers"], L);
  EXPECT_EQ(rows[1]["key_centring"], "default");
  EXPECT_EQ(rows[2]["centred_layers"], 0);
  EXPECT_EQ(rows[2]["key_centring"], "off");
  EXPECT_NE(rows[2]["label"].get<std::string>().find("C=0"), std::string::npos);
  EXPECT_EQ(rows[3]["centred_layers"], 0);  // a baseline stays as its authors define it
  EXPECT_EQ(rows[4]["centred_layers"], L);
  // d = 64 f32 means, one page's d f16 offsets and d f16 key scales per (layer, head) over 64
  // tokens: +1.0 bpv on the keys, +0.5 all-in.
  EXPECT_NEAR(rows[1]["bpv_k"].get<double>() - rows[2]["bpv_k"].get<double>(), 1.0, 1e-9);
  EXPECT_NEAR(rows[1]["bpv"].get<double>() - rows[2]["bpv"].get<double>(), 0.5, 1e-9);
  EXPECT_EQ(rows[1]["key_scales"], true);
  EXPECT_EQ(rows[1]["key_means"], "page");
  const auto back = run_tq("compare --from-csv " + csv + " --json");
  ASSERT_EQ(back.status, 0) << back.err;
  const auto jb = nlohmann::json::parse(back.out);
  ASSERT_EQ(jb["rows"].size(), 5u);
  EXPECT_EQ(jb["rows"][2]["key_centring"], "off");
  EXPECT_EQ(jb["rows"][4]["centred_layers"], L);
  std::filesystem::remove(csv);
}

}  // namespace
