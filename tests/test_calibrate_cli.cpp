// `tq calibrate` end to end on the default model (skipped when it is missing), and the refusals
// of codebook files through the CLI (another model, truncated, bit-flipped, unknown version,
// another preset, no codebooks at all): non-zero exit and one line naming the problem; `tq info
// --codebooks`; `tq compare` with one codebook file per polar-vq preset.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <vector>

#include "model/paths.h"
#include "temp_dir.h"
#include "cli_util.h"
#include "codecs/polarvq_file.h"

namespace {

const std::string kRoot = TQ_SOURCE_DIR;
const std::string kModel = kRoot + "/" + tq::kDefaultModelFile;
const std::string kCalib = kRoot + "/data/calib.txt";
const std::string kEval = kRoot + "/data/eval.txt";

bool have_model() {
  return std::ifstream(kModel).good() && std::ifstream(kCalib).good() &&
         std::ifstream(kEval).good();
}

std::vector<char> slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void spit(const std::string& p, const std::vector<char>& b) {
  std::ofstream(p, std::ios::binary).write(b.data(), std::streamsize(b.size()));
}

class CalibrateCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!have_model()) return;
    file_ = tq::test::temp_path("cb.tqcb");
    // Tiny settings: 4 windows of 64 tokens = 256 vectors per head, as many as the stage-2
    // codebooks have entries (the least k-means accepts).
    calib_ = run_tq("calibrate -m " + kModel + " -f " + kCalib +
                    " --samples 4 -c 64 --preset balanced --vq-points 256 --json -o " + file_);
  }
  static void TearDownTestSuite() {
    if (!file_.empty()) std::remove(file_.c_str());
  }
  void SetUp() override {
    if (!have_model()) GTEST_SKIP() << "model or text missing (run scripts/fetch_model.sh)";
  }
  // A short perplexity run with polar-vq:balanced and the given codebook file.
  static CliResult ppl(const std::string& codebooks, const std::string& type = "balanced") {
    return run_tq("perplexity -m " + kModel + " -f " + kEval + " -c 64 --chunks 2 -q -t 1 " +
                  "-ctk polar-vq:" + type + " -ctv polar-vq:" + type +
                  (codebooks.empty() ? "" : " --codebooks " + codebooks) + " --json");
  }
  static void expect_refused(const CliResult& r, const std::string& needle) {
    EXPECT_NE(r.status, 0);
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  }
  static std::string file_;
  static CliResult calib_;
};
std::string CalibrateCli::file_;
CliResult CalibrateCli::calib_;

TEST_F(CalibrateCli, WritesReloadsAndRuns) {
  ASSERT_EQ(calib_.status, 0) << calib_.err;
  const auto j = nlohmann::json::parse(calib_.out);
  EXPECT_EQ(j["samples"], 4);
  EXPECT_EQ(j["vectors_per_head"], 256);
  const tq::CodebookFile f = tq::read_codebook_file(file_);
  EXPECT_EQ(f.params.preset, "balanced");
  EXPECT_EQ(f.samples, 4u);
  EXPECT_EQ(f.ctx, 64u);  // -c 64
  EXPECT_EQ(f.n_layer, 30u);
  EXPECT_EQ(f.n_head_kv, 3u);
  EXPECT_EQ(f.head_dim, 64u);
  EXPECT_NE(f.model_fingerprint, 0u);
  EXPECT_NE(f.corpus_hash, 0u);
  ASSERT_EQ(f.heads.size(), 90u);
  EXPECT_TRUE(f.heads[0]->key_vq.empty());  // balanced: stage 2 on values only
  EXPECT_FALSE(f.heads[0]->value_vq.empty());

  const CliResult r = ppl(file_);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto p = nlohmann::json::parse(r.out);
  const double v = p["ppl"];
  EXPECT_TRUE(std::isfinite(v) && v > 1.0 && v < 1e4) << v;
}

TEST_F(CalibrateCli, DeterministicForASeed) {
  // Stage 1 only (cheap): the same file with 1 and 2 threads (heads run in parallel).
  const std::string a = file_ + ".a", b = file_ + ".b";
  const std::string args = "calibrate -m " + kModel + " -f " + kCalib +
                           " --samples 4 -c 32 --preset quality -o ";
  ASSERT_EQ(run_tq(args + a + " -t 1").status, 0);
  ASSERT_EQ(run_tq(args + b + " -t 2").status, 0);
  EXPECT_EQ(slurp(a), slurp(b));
  EXPECT_FALSE(slurp(a).empty());
  std::remove(a.c_str());
  std::remove(b.c_str());
}

TEST_F(CalibrateCli, SeveralPresetsGiveTheFilesOfSingleRuns) {
  // Later presets copy what an earlier one learned from the same samples (angles, stage-2
  // codebooks); the files must be those that a run of that preset alone writes.
  const std::string multi = file_ + ".m{}", single = file_ + ".s";
  const std::string args = "calibrate -m " + kModel + " -f " + kCalib +
                           " --samples 4 -c 64 --vq-points 256 -t 1 --preset ";
  ASSERT_EQ(run_tq(args + "balanced,quality+angle_bits=3,balanced+key_block_tokens=64 -o " +
                   multi).status, 0);
  ASSERT_EQ(run_tq(args + "balanced+key_block_tokens=64 -o " + single).status, 0);
  const std::string last = file_ + ".m2";
  EXPECT_EQ(slurp(last), slurp(single));
  EXPECT_FALSE(slurp(single).empty());
  for (const char* x : {".m0", ".m1", ".m2", ".s"}) std::remove((file_ + x).c_str());
}

TEST_F(CalibrateCli, NeedsCodebooksBeforeAnyWork) {
  expect_refused(ppl(""), "--codebooks");
  expect_refused(run_tq("generate -m " + kModel + " -p hi -n 1 -ctk polar-vq:max"),
                 "--codebooks");
}

TEST_F(CalibrateCli, RefusesBadCodebookFiles) {
  ASSERT_EQ(calib_.status, 0) << calib_.err;
  const std::string bad = file_ + ".bad";
  // Another model: same file, another fingerprint (re-written, so the checksum is valid).
  {
    tq::CodebookFile f = tq::read_codebook_file(file_);
    f.model_fingerprint ^= 0x1234;
    tq::write_codebook_file(bad, f);
    expect_refused(ppl(bad), "another model");
  }
  const std::vector<char> good = slurp(file_);
  {  // truncated
    spit(bad, std::vector<char>(good.begin(), good.begin() + good.size() / 2));
    expect_refused(ppl(bad), "truncated");
  }
  {  // one bit flipped in the payload
    auto b = good;
    b[b.size() / 2] ^= 0x10;
    spit(bad, b);
    expect_refused(ppl(bad), "checksum");
  }
  {  // unknown format version
    auto b = good;
    const uint32_t v = 99;
    std::memcpy(b.data() + 4, &v, 4);
    spit(bad, b);
    expect_refused(ppl(bad), "format version 99");
  }
  // Another preset than the file's.
  expect_refused(ppl(file_, "max"), "preset");
  // Calibration text too short for the samples asked.
  expect_refused(run_tq("calibrate -m " + kModel + " -f " + kCalib +
                        " --samples 100000 -c 64 -o " + bad),
                 "too short");
  std::remove(bad.c_str());
}

// kvquant3/kvquant4 (codecs/kvquant.h): `tq calibrate --preset kvquant` (tiny settings), then
// the types in perplexity (an asymmetric pair), compare and generate; refusals without the file
// or with a polar-vq file.
TEST_F(CalibrateCli, KvquantCalibratesAndRuns) {
  const std::string kf = file_ + ".kvq";
  const CliResult c = run_tq("calibrate -m " + kModel + " -f " + kCalib +
                             " --samples 4 -c 64 --preset kvquant -t 1 -o " + kf);
  ASSERT_EQ(c.status, 0) << c.err;
  const tq::CodebookFile f = tq::read_codebook_file(kf);
  EXPECT_EQ(f.params.preset, "kvquant");
  ASSERT_EQ(f.kvq.size(), 90u);
  EXPECT_TRUE(f.kvq[0]->valid(64));

  const std::string common = "-m " + kModel + " -f " + kEval + " -c 64 -q -t 1 ";
  const CliResult r = run_tq("perplexity " + common + "--chunks 2 -ctk kvquant3 -ctv kvquant4 " +
                             "--sinks 1 --codebooks " + kf + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const double v = nlohmann::json::parse(r.out)["ppl"];
  EXPECT_TRUE(std::isfinite(v) && v > 1.0 && v < 1e4) << v;
  const CliResult cmp = run_tq("compare " + common + "--chunks 1 --decode 2 --types "
                               "kvquant3,q8_0/kvquant4 --codebooks " + kf + " --json");
  ASSERT_EQ(cmp.status, 0) << cmp.err;
  EXPECT_NE(cmp.out.find("kvquant3 (S=1)"), std::string::npos) << cmp.out;
  const CliResult g = run_tq("generate -m " + kModel + " -p hi -n 3 -t 1 -ctk kvquant4 " +
                             "-ctv kvquant3 --codebooks " + kf);
  EXPECT_EQ(g.status, 0) << g.err;

  expect_refused(run_tq("perplexity " + common + "--chunks 1 -ctk kvquant3"),
                 "tq calibrate --preset kvquant");
  expect_refused(run_tq("perplexity " + common + "--chunks 1 -ctk kvquant3 --codebooks " + file_),
                 "--preset kvquant");
  std::remove(kf.c_str());
}

TEST_F(CalibrateCli, InfoShowsTheCalibrationContext) {
  ASSERT_EQ(calib_.status, 0) << calib_.err;
  const CliResult r = run_tq("info --codebooks " + file_ + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["preset"], "balanced");
  EXPECT_EQ(j["samples"], 4);
  EXPECT_EQ(j["ctx"], 64);
  EXPECT_EQ(j["format_version"], tq::kCodebookFormatVersion);
  EXPECT_EQ(j["params"]["angle_bits"], tq::polarvq_preset("balanced").angle_bits);
  const CliResult t = run_tq("info --codebooks " + file_);
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_NE(t.out.find("4 samples x 64 tokens"), std::string::npos) << t.out;
}

TEST_F(CalibrateCli, CompareTakesOneFilePerPreset) {
  ASSERT_EQ(calib_.status, 0) << calib_.err;
  const std::string q = file_ + ".q";
  ASSERT_EQ(run_tq("calibrate -m " + kModel + " -f " + kCalib +
                   " --samples 4 -c 32 --preset quality -t 1 -o " + q).status, 0);
  const std::string cmp = "compare -m " + kModel + " -f " + kEval +
                          " -c 32 --chunks 1 --decode 0 -q -t 1 --json ";
  const CliResult r = run_tq(cmp + "--types polar-vq:quality,polar-vq:balanced --codebooks " +
                             q + "," + file_);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["rows"].size(), 3u);  // the f16 reference and the two presets
  for (size_t i = 1; i < 3; ++i) {
    const double kld = j["rows"][i]["kld_mean"];
    EXPECT_TRUE(std::isfinite(kld) && kld >= 0) << j["rows"][i].dump();
  }
  // The quality row with its file gives what perplexity gives with that file alone.
  const CliResult one = run_tq(cmp + "--types polar-vq:quality --codebooks " + q);
  ASSERT_EQ(one.status, 0) << one.err;
  EXPECT_EQ(nlohmann::json::parse(one.out)["rows"][1]["kld_mean"], j["rows"][1]["kld_mean"]);
  expect_refused(run_tq(cmp + "--types polar-vq:balanced --codebooks " + file_ + "," + file_),
                 "two files");
  expect_refused(run_tq(cmp + "--types polar-vq:balanced --codebooks " + q + "," + file_),
                 "no row uses");
  expect_refused(run_tq(cmp + "--types polar-vq:quality,polar-vq:max --codebooks " + q + "," +
                        file_),
                 "no row uses");
  std::remove(q.c_str());
}

}  // namespace
