// Plans (DESIGN.md §11): the knapsack solver against brute force, the plan file round trip and
// its refusals, and --plan on perplexity equal to the same types given by --layer-k/--layer-v.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "cache/kv_cache.h"
#include "cli_util.h"
#include "eval/plan.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/paths.h"
#include "temp_dir.h"
#include "tq/error.h"

namespace {

const std::string kModel = std::string(TQ_SOURCE_DIR) + "/" + tq::kDefaultModelFile;
const std::string kCalib = std::string(TQ_SOURCE_DIR) + "/data/calib.txt";
bool have_model() { return std::filesystem::exists(kModel) && std::filesystem::exists(kCalib); }

TEST(Plan, KnapsackMatchesBruteForce) {
  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const double grid = 1.0 / 16;
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 1 + int(rng() % 5), m = 1 + int(rng() % 4);
    std::vector<std::vector<double>> cost(n), bits(n);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < m; ++j) {
        cost[i].push_back(std::uniform_real_distribution<double>(0, 1)(rng));
        bits[i].push_back(double(1 + rng() % 128) * grid);  // on the grid: exact
      }
    const double budget = double(rng() % (n * 128 + 1)) * grid;
    // Brute force over every assignment.
    double best = std::numeric_limits<double>::infinity();
    std::vector<int> idx(n, 0);
    for (;;) {
      double c = 0, b = 0;
      for (int i = 0; i < n; ++i) c += cost[i][idx[i]], b += bits[i][idx[i]];
      if (b <= budget + 1e-12) best = std::min(best, c);
      int i = 0;
      while (i < n && ++idx[i] == m) idx[i++] = 0;
      if (i == n) break;
    }
    if (best == std::numeric_limits<double>::infinity()) {
      EXPECT_THROW(tq::solve_knapsack(cost, bits, budget, grid), tq::Error);
      continue;
    }
    const auto ch = tq::solve_knapsack(cost, bits, budget, grid);
    double c = 0, b = 0;
    for (int i = 0; i < n; ++i) c += cost[i][ch[i]], b += bits[i][ch[i]];
    EXPECT_LE(b, budget + 1e-12);
    EXPECT_NEAR(c, best, 1e-12) << "trial " << trial;
  }
}

tq::Plan small_plan() {
  tq::Plan p;
  p.model_fingerprint = 0x0123456789abcdefull;
  p.model_file = "m.gguf";
  p.n_layer = 3;
  p.n_kv_head = 2;
  p.head_dim = 64;
  p.calib_file = "c.txt";
  p.calib_hash = 42;
  p.ctx = 64;
  p.chunks = 1;
  p.tokens_scored = 31;
  p.candidates = {"turbo2", "turbo3", "f16"};
  p.bits_k = {2.25, 3.25, 16};
  p.bits_v = {2.25, 3.25, 16};
  p.kld_k = {{0.3, 0.1, 0}, {0.2, 0.05, 0}, {0.01, 0.005, 0}};
  p.kld_v = {{0.1, 0.03, 0}, {0.02, 0.01, 0}, {0.2, 0.02, 0}};
  return p;
}

// A part's bits (candidate_bits) are the cache's own bytes for that part, key centring
// included (DESIGN.md §3.1, §11): the f32 mean and the f16 per-page offsets of the centred
// types, resolved per type as KvCache does, for a prompt appended in the model's batches.
TEST(Plan, CandidateBitsAreTheCachesBytes) {
  tq::KvShape shape;
  shape.n_layer = 1;
  shape.n_kv_head = 2;
  shape.head_dim = 64;
  const std::vector<std::string> cands = {"turbo3", "q8_0", "f16", "turbo2.5", "q4_0"};
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.5f, 1.0f);
  for (auto centring : {tq::KeyCentring::kTypeDefault, tq::KeyCentring::kOn, tq::KeyCentring::kOff})
    for (bool per_page : {true, false})
      for (int sinks : {0, 5})
        for (int residual : {0, 40})
          for (int n_ctx : {32, 300, 700, 1100})
            for (bool scales : {true, false}) {
              tq::KvCacheOptions o;
              o.key_scales = scales;
              o.key_centring = centring;
              o.key_means_per_page = per_page;
              o.sink_tokens = sinks;
              o.residual_window = residual;
              std::vector<double> bk, bv;
              tq::candidate_bits(cands, shape, o, n_ctx, bk, bv);
              for (size_t j = 0; j < cands.size(); ++j) {
                SCOPED_TRACE(cands[j] + " centring " + tq::key_centring_name(centring) +
                             (per_page ? " page" : " first") + " S=" + std::to_string(sinks) +
                             " R=" + std::to_string(residual) + " n=" + std::to_string(n_ctx) +
                             (scales ? " scales" : ""));
                tq::KvCacheOptions c = o;
                c.type_k = c.type_v = cands[j];
                c.max_tokens = n_ctx;
                tq::KvCache cache(shape, c);
                const int seq = cache.new_seq();
                for (int t0 = 0; t0 < n_ctx; t0 += tq::LlamaModel::max_batch()) {
                  const int m = std::min(tq::LlamaModel::max_batch(), n_ctx - t0);
                  std::vector<float> k(size_t(m) * 2 * 64), v(k.size()), q(2 * k.size());
                  for (auto& x : k) x = nd(rng);
                  for (auto& x : v) x = nd(rng);
                  for (auto& x : q) x = nd(rng);
                  cache.observe_queries(seq, 0, q.data(), m, 4);  // as the model does
                  cache.append(seq, 0, k.data(), v.data(), m);
                }
                const double values = 2.0 * 64 * n_ctx;
                EXPECT_NEAR(bk[j], 8.0 * double(cache.k_bytes()) / values, 1e-9);
                EXPECT_NEAR(bv[j], 8.0 * double(cache.v_bytes()) / values, 1e-9);
              }
            }
}

TEST(Plan, SolveAndRoundTrip) {
  tq::Plan p = small_plan();
  tq::solve_plan(p, 3.0);
  EXPECT_LE(p.achieved_bpv, 3.0 + 1e-12);
  p.verified_kld = 0.5;
  p.verified_bpv = 2.9;
  const std::string path = tq::test::temp_path("plan_rt.json");
  tq::write_plan(path, p);
  const tq::Plan q = tq::read_plan(path);
  EXPECT_EQ(q.model_fingerprint, p.model_fingerprint);
  EXPECT_EQ(q.calib_hash, p.calib_hash);
  EXPECT_EQ(q.layer_k, p.layer_k);
  EXPECT_EQ(q.layer_v, p.layer_v);
  EXPECT_EQ(q.kld_k, p.kld_k);
  EXPECT_EQ(q.kld_v, p.kld_v);
  EXPECT_EQ(q.budget_bpv, p.budget_bpv);
  EXPECT_EQ(*q.verified_kld, 0.5);
  // Below the least reachable budget (2.25): refused, naming the minimum.
  try {
    tq::solve_plan(p, 2.0);
    FAIL();
  } catch (const tq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("2.25"), std::string::npos) << e.what();
  }
}

TEST(Plan, DamagedFilesRefused) {
  tq::Plan p = small_plan();
  tq::solve_plan(p, 3.0);
  const std::string path = tq::test::temp_path("plan_ok.json");
  tq::write_plan(path, p);
  std::ifstream in(path);
  const std::string good((std::istreambuf_iterator<char>(in)), {});
  auto refused = [&](const std::string& text, const char* what) {
    const std::string bad = tq::test::temp_path("plan_bad.json");
    std::ofstream(bad) << text;
    EXPECT_THROW(tq::read_plan(bad), tq::Error) << what;
  };
  refused(good.substr(0, good.size() / 2), "truncated");
  refused("", "empty");
  auto replace = [&](const std::string& a, const std::string& b) {
    std::string s = good;
    const auto at = s.find(a);
    EXPECT_NE(at, std::string::npos) << a;
    return s.replace(at, a.size(), b);
  };
  refused(replace("\"version\": 3", "\"version\": 4"), "version");
  refused(replace("\"key_scales\": true", "\"key_scales\": \"yes\""), "key scales");
  refused(replace("\"key_scales\": true,", ""), "version 3 without key_scales");
  // A version 2 file (before key scales) is read as measured: without them.
  {
    std::string v2 = replace("\"version\": 3", "\"version\": 2");
    const std::string ks = "\"key_scales\": true,";
    v2.erase(v2.find(ks), ks.size());
    const std::string old = tq::test::temp_path("plan_v2.json");
    std::ofstream(old) << v2;
    const tq::Plan q = tq::read_plan(old);
    EXPECT_FALSE(q.key_scales);
    EXPECT_EQ(q.key_centring, p.key_centring);
    EXPECT_EQ(q.layer_k, p.layer_k);
  }
  refused(replace("\"key_centring\": \"default\"", "\"key_centring\": \"sometimes\""),
          "key centring");
  refused(replace("\"key_means\": \"page\"", "\"key_means\": \"last\""), "key means");
  // Numbers out of range or not integers are refused, not cast (fuzz_plan's contract).
  refused(replace("\"n_layer\": 3", "\"n_layer\": 1e30"), "float n_layer");
  refused(replace("\"n_layer\": 3", "\"n_layer\": 3.0"), "non-integer n_layer");
  refused(replace("\"sinks\": 0", "\"sinks\": -1"), "negative sinks");
  refused(replace("\"sinks\": 0", "\"sinks\": 1e12"), "huge sinks");
  refused(replace("\"candidates\": [", "\"candidates\": [\"f16\","), "duplicate candidate");
  // A version 1 file (before centring by default) is read as it was measured: centre_keys true
  // is centring on with the first mean only, false is off.
  for (bool on : {true, false}) {
    std::string v1 = replace("\"version\": 3", "\"version\": 1");
    const std::string c = "\"key_centring\": \"default\"";
    v1.replace(v1.find(c), c.size(), on ? "\"center_keys\": true" : "\"center_keys\": false");
    const std::string old = tq::test::temp_path("plan_v1.json");
    std::ofstream(old) << v1;
    const tq::Plan q = tq::read_plan(old);
    EXPECT_EQ(q.key_centring, on ? tq::KeyCentring::kOn : tq::KeyCentring::kOff);
    EXPECT_FALSE(q.key_means_per_page);
    EXPECT_EQ(q.layer_k, p.layer_k);
  }
  refused(replace("turboquant-plan", "other"), "format");
  refused(replace("\"k\": \"" + p.layer_k[0] + "\"", "\"k\": \"turbo9x\""), "unknown type");
  EXPECT_THROW(tq::read_plan(tq::test::temp_path("no_such_plan.json")), tq::Error);
  // Another model.
  tq::LlamaHparams hp;
  hp.n_layer = 3;
  hp.n_kv_head = 2;
  hp.head_dim = 64;
  EXPECT_NO_THROW(tq::check_plan_model(p, path, p.model_fingerprint, hp));
  EXPECT_THROW(tq::check_plan_model(p, path, p.model_fingerprint ^ 1, hp), tq::Error);
  hp.n_layer = 4;
  EXPECT_THROW(tq::check_plan_model(p, path, p.model_fingerprint, hp), tq::Error);
}

// The measurement's shortcut: starting at layer L from the f16 run's kept residual stream gives
// the same final states as the full forward (layers below L are identical).
TEST(Plan, ForwardFromEqualsFullForward) {
  if (!have_model()) GTEST_SKIP() << "model or text missing (run scripts/fetch_model.sh)";
  auto f = tq::GgufFile::open(kModel);
  auto model = tq::LlamaModel::load(*f);
  const int n = 37;
  std::vector<int32_t> tok(n);
  for (int i = 0; i < n; ++i) tok[i] = 100 + 7 * i;
  tq::KvCacheOptions o;
  o.max_tokens = 64;
  o.max_seqs = 1;
  std::vector<float> full;
  std::vector<std::vector<float>> taps;
  {
    tq::KvCache c(model->kv_shape(), o);
    model->forward_taps(c, c.new_seq(), tok.data(), n, &full, &taps);
  }
  for (int l : {0, 5, model->hparams().n_layer - 1}) {
    tq::KvCache c(model->kv_shape(), o);
    std::vector<float> h;
    model->forward_from(c, c.new_seq(), l, taps[size_t(l)].data(), n, &h);
    ASSERT_EQ(h.size(), full.size());
    double md = 0;
    for (size_t i = 0; i < h.size(); ++i) md = std::max(md, double(std::fabs(h[i] - full[i])));
    EXPECT_EQ(md, 0.0) << "layer " << l;  // the same arithmetic in the same order
  }
}

TEST(PlanCli, MakeUseAndRefuse) {
  if (!have_model()) GTEST_SKIP() << "model or text missing (run scripts/fetch_model.sh)";
  const std::string plan = tq::test::temp_path("cli_plan.json");
  auto r = run_tq("plan -m " + kModel + " -f " + kCalib +
                  " -c 32 --chunks 1 --candidates turbo2,turbo3,f16 --bpv 3.0 -q -t 1 -o " + plan);
  ASSERT_EQ(r.status, 0) << r.err;
  const tq::Plan p = tq::read_plan(plan);
  ASSERT_TRUE(p.verified_bpv.has_value());
  EXPECT_LE(p.achieved_bpv, 3.0 + 1e-9);
  EXPECT_NEAR(*p.verified_bpv, p.achieved_bpv, 1e-6);  // the bit model is the cache's bytes
  // --plan gives the same result as the same types by flags.
  std::string lk, lv;
  for (int l = 0; l < p.n_layer; ++l) {
    lk += (l ? "," : "") + std::to_string(l) + "=" + p.layer_k[l];
    lv += (l ? "," : "") + std::to_string(l) + "=" + p.layer_v[l];
  }
  const std::string ppl =
      "perplexity -m " + kModel + " -f " + kCalib + " -c 32 --chunks 2 -q -t 1 ";
  const auto a = run_tq(ppl + "--json --plan " + plan);
  const auto b = run_tq(ppl + "--json --layer-k " + lk + " --layer-v " + lv);
  ASSERT_EQ(a.status, 0) << a.err;
  ASSERT_EQ(b.status, 0) << b.err;
  const auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  for (const char* k : {"ppl", "bpv_k", "bpv_v", "kv_bytes"}) EXPECT_EQ(ja[k], jb[k]) << k;
  // A refusal must not be vacuous: the plan is not all f16.
  EXPECT_LT(ja["bpv_k"].get<double>(), 16.0);
  // Refusals: one line, non-zero exit.
  for (const std::string& cmd :
       {ppl + "--plan " + plan + " -ctk turbo3", ppl + "--plan " + plan + " --layer-k 0=f16",
        ppl + "--plan " + plan + " --sinks 4", ppl + "--plan " + plan + " --no-center-keys",
        ppl + "--plan " + plan + " --key-means first",
        "compare -m " + kModel + " --types plan:" + plan + " -c 32 --chunks 1 --no-center-keys",
        "plan -m " + kModel + " -f " + kCalib + " -c 32 --chunks 1 --bpv 1.5 -q -o " + plan,
        "plan --from " + plan + " --bpv 2.0 -o " + plan,
        "compare -m " + kModel + " --types plan:/no/such/plan.json -c 32 --chunks 1",
        "perplexity -m " + std::string(TQ_SOURCE_DIR) +
            "/models/gemma-3-270m-q4_k_m.gguf -c 32 --chunks 1 --plan " + plan}) {
    if (cmd.find("gemma") != std::string::npos &&
        !std::filesystem::exists(std::string(TQ_SOURCE_DIR) + "/models/gemma-3-270m-q4_k_m.gguf"))
      continue;
    const auto x = run_tq(cmd);
    EXPECT_NE(x.status, 0) << cmd;
    EXPECT_EQ(count_lines(x.err), 1) << cmd << "\n" << x.err;
  }
  // Re-solving for another budget without measuring (at -c 32 the least is 2.75 bpv: turbo2's
  // keys are centred by default, and their f32 mean costs 1 bit per value at 32 tokens).
  const std::string p25 = tq::test::temp_path("cli_plan25.json");
  r = run_tq("plan --from " + plan + " --bpv 2.9 -o " + p25);
  ASSERT_EQ(r.status, 0) << r.err;
  const tq::Plan q = tq::read_plan(p25);
  EXPECT_LE(q.achieved_bpv, 2.9 + 1e-9);
  EXPECT_EQ(q.kld_k, p.kld_k);
}

}  // namespace
