// Issue 17 regression tests, command-line side: every numeric flag range-checked where it
// enters (one line on stderr, exit 1, no work done), preset parameters validated, hostile model
// and codebook files refused with a message that names the problem. Cases that need the default
// model are skipped when models/ lacks it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "cli_util.h"
#include "core/numeric_flag.h"
#include "fuzz_common.h"
#include "tq/error.h"

namespace {

namespace fs = std::filesystem;

bool have_model() {
  return fs::exists(std::string(TQ_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf");
}
std::string model_arg() {
  return std::string(" -m ") + TQ_SOURCE_DIR + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

// One line "tq: error: ..." holding `what`, exit status 1, nothing on stdout.
void expect_one_line_error(const std::string& args, const std::string& what) {
  const CliResult r = run_tq(args);
  EXPECT_EQ(r.status, 1) << args << "\n" << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << args << "\n" << r.err;
  EXPECT_EQ(r.err.rfind("tq: error: ", 0), 0u) << args << "\n" << r.err;
  EXPECT_NE(r.err.find(what), std::string::npos) << args << "\n" << r.err;
  EXPECT_TRUE(r.out.empty()) << args << "\n" << r.out;
}

TEST(NumericFlag, ParsesExactlyAndRefusesTheRest) {
  EXPECT_EQ(tq::parse_int_flag("-n", "64", 0, 100), 64);
  EXPECT_EQ(tq::parse_int_flag("-n", "+7", 0, 100), 7);
  EXPECT_EQ(tq::parse_int_flag("-n", "-1", -1, 100), -1);
  for (const char* bad : {"", "-", "+", "+-5", "5x", " 5", "5 ", "0x10", "1e3", "5.0"})
    EXPECT_THROW(tq::parse_int_flag("-n", bad, -100, 100), tq::Error) << bad;
  EXPECT_THROW(tq::parse_int_flag("-n", "101", 0, 100), tq::Error);
  EXPECT_THROW(tq::parse_int_flag("-n", "99999999999999999999", 0, INT64_MAX), tq::Error);
  try {
    tq::parse_int_flag("--chunks", "-5", -1, 100);
    ADD_FAILURE();
  } catch (const tq::Error& e) {
    EXPECT_STREQ(e.what(), "--chunks -5 is out of range [-1, 100]");
  }
  EXPECT_DOUBLE_EQ(tq::parse_float_flag("--temp", "0.7", 0, 100), 0.7);
  EXPECT_DOUBLE_EQ(tq::parse_float_flag("--temp", "1e-3", 0, 100), 1e-3);
  for (const char* bad : {"nan", "inf", "-inf", "NaN", "", "1e400", "0.5x", "-1", "101"})
    EXPECT_THROW(tq::parse_float_flag("--temp", bad, 0, 100), tq::Error) << bad;
  // A hostile argument cannot break the one-line message.
  try {
    tq::parse_int_flag("-n", "1\n2", 0, 9);
  } catch (const tq::Error& e) {
    EXPECT_EQ(std::strchr(e.what(), '\n'), nullptr);
  }
}

// Values the commands used to reinterpret silently; refused at parse time, before any work.
TEST(CliFlags, OutOfRangeNumbersAreOneLineErrors) {
  expect_one_line_error("perplexity --chunks -5", "--chunks -5 is out of range");
  expect_one_line_error("perplexity --chunks 0", "--chunks must be at least 1");
  expect_one_line_error("perplexity -c -50", "--ctx-size -50 is out of range");
  expect_one_line_error("compare --types q8_0 --chunks -5", "--chunks -5 is out of range");
  expect_one_line_error("compare --types q8_0 --decode -1", "--decode -1 is out of range");
  expect_one_line_error("generate -c -50", "--ctx-size -50 is out of range");
  expect_one_line_error("generate -n 2147483647", "--n-predict 2147483647 is out of range");
  expect_one_line_error("generate -n -3", "--n-predict -3 is out of range");
  expect_one_line_error("generate -n 12abc", "--n-predict: expected an integer");
  expect_one_line_error("generate -t 1000", "--threads 1000 is out of range");
  expect_one_line_error("generate -t -1", "--threads -1 is out of range");
  for (const char* t : {"nan", "inf", "-1"})
    expect_one_line_error(std::string("generate --temp ") + t, "--temp");
  expect_one_line_error("generate --top-p nan", "--top-p");
  expect_one_line_error("generate --residual -4", "--residual -4 is out of range");
  expect_one_line_error("calibrate -o /dev/null --samples 0", "--samples 0 is out of range");
  expect_one_line_error("calibrate -o /dev/null -t 100000", "--threads 100000 is out of range");
  expect_one_line_error("distortion --dim 0", "--dim 0 is out of range");
}

// `--preset NAME+KEY=VALUE` was never validated: a value group of 0 or a stage-2 dimension of 0
// crashed calibrate (SIGFPE); value_group=-64 was written to the file.
TEST(CliFlags, PresetParametersAreValidated) {
  const std::string out = " -o /tmp/tq_rel_never_written_" + std::to_string(getpid());
  expect_one_line_error("calibrate --preset stage1+value_group=0" + out, "value_group = 0");
  expect_one_line_error("calibrate --preset stage1+value_group=-64" + out, "value_group = -64");
  expect_one_line_error("calibrate --preset stage1+group_size=0" + out, "group_size = 0");
  expect_one_line_error("calibrate --preset balanced+vq_dim=0" + out, "vq_dim = 0");
  expect_one_line_error("calibrate --preset stage1+angle_bits=12" + out, "angle_bits = 12");
  expect_one_line_error("calibrate --preset stage1+value_group=64abc" + out, "expected an integer");
}

TEST(CliFlags, CodebooksDirectoryIsNamed) {
  if (!have_model()) GTEST_SKIP() << "model missing";
  expect_one_line_error("perplexity -q --chunks 1 -c 64 -ctk polar-vq:balanced --codebooks " +
                            fs::temp_directory_path().string() + model_arg(),
                        "is a directory");
}

// Limits that need the text or the model: more chunks than the text holds (was clamped to 33),
// more decode steps than the context leaves (was clamped).
TEST(CliFlags, ChunksAndDecodeBeyondWhatFitsAreRefused) {
  if (!have_model()) GTEST_SKIP() << "model missing";
  expect_one_line_error("perplexity -q --chunks 2147483647" + model_arg(),
                        "--chunks 2147483647: the text holds");
  expect_one_line_error("compare -q --types q8_0 --decode 100000" + model_arg(),
                        "--decode 100000 must be in [0, ");
}

// The crafted model of issue 17 (13.5 KB there, head_count = 2^29 + 2) through the tool: a
// one-line error, no SIGSEGV.
TEST(CliModel, HostileModelFilesAreOneLineErrors) {
  const std::string dir =
      fs::temp_directory_path().string() + "/tq_rel_cli_" + std::to_string(getpid());
  fs::create_directories(dir);
  const auto write = [&](const std::string& name, std::vector<uint8_t> b, const std::string& key,
                         uint32_t v) {
    for (size_t i = 8; i + key.size() + 8 <= b.size(); ++i)
      if (std::memcmp(&b[i], key.data(), key.size()) == 0 && b[i - 8] == key.size()) {
        std::memcpy(&b[i + key.size() + 4], &v, 4);
        break;
      }
    const std::string p = dir + "/" + name;
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
    return p;
  };
  tq::fuzz::TinySpec s;
  s.tokenizer = true;
  const auto b = tq::fuzz::tiny_model(s);
  const std::string heads = write("heads.gguf", b, "llama.attention.head_count", (1u << 29) + 2);
  for (const char* cmd : {"generate -n 2 -p hi -m ", "perplexity -q -c 8 -m "})
    expect_one_line_error(cmd + heads, "llama.attention.head_count = 536870914 is out of range");
  float neg = -10000.f;
  uint32_t u;
  std::memcpy(&u, &neg, 4);
  const std::string base = write("base.gguf", b, "llama.rope.freq_base", u);
  expect_one_line_error("generate -n 2 -p hi -m " + base, "llama.rope.freq_base = -10000");
  // The unmodified tiny model runs (the errors above are the patches', not the seed's).
  const CliResult ok = run_tq("generate -n 2 -p hi -m " + write("good.gguf", b, "no.such.key", 0));
  EXPECT_EQ(ok.status, 0) << ok.err;
  fs::remove_all(dir);
}

// Every allocation failure ends with the one-line "out of memory" (std::bad_alloc reaches the
// tool's top level; inside OpenMP regions ParallelErrors carries it out). Under a 450 MB address
// space limit the 135M model's f32 weights (0.54 GB) cannot be allocated. Skipped in sanitizer
// builds: ASan reserves terabytes of address space at start.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TQ_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TQ_ASAN 1
#endif
TEST(CliMemory, OutOfMemoryIsOneLine) {
#ifdef TQ_ASAN
  GTEST_SKIP() << "address space limits do not work under ASan";
#endif
#ifdef TQ_TOOL_LINKS_CUDA
  // cuBLAS and the CUDA runtime reserve more address space than the limit below before main()
  // runs (the loader fails to map libcublasLt); the non-CUDA build runs this test.
  GTEST_SKIP() << "the tool links the CUDA libraries: an address-space limit stops the loader";
#endif
  if (!have_model()) GTEST_SKIP() << "model missing";
  const std::string err = "/tmp/tq_rel_oom_" + std::to_string(getpid());
  // The weights stay quantized and memory-mapped (~100 MB), so a short run fits in the limit on
  // a machine with few threads; an f32 cache of the model's whole 8192-token context (377 MB,
  // allocated when the cache is made) does not, whatever the machine's thread stacks and BLAS
  // buffers take. The memory check passes it (it counts physical memory, not this limit).
  const std::string cmd = "ulimit -v 450000; exec " + std::string(TQ_TOOL_PATH) +
                          " generate -t 1 -n 1 -p hi -c 8192 -ctk f32 -ctv f32" + model_arg() +
                          " 2>" + err;
  const int st = std::system(("sh -c '" + cmd + "' >/dev/null").c_str());
  std::ifstream in(err);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::remove(err.c_str());
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1) << text;
  EXPECT_EQ(text, "tq: error: out of memory\n");
}

// `--device cuda` (generate, perplexity): what the GPU cache cannot hold is refused in one line
// before any work, on every machine (with or without a GPU, CUDA build or not); a run the GPU
// can serve fails here only for want of a GPU (the device tests run it).
TEST(CliDevice, CudaRefusesWhatTheGpuCacheCannotHold) {
  if (!have_model()) GTEST_SKIP() << "model missing";
  for (const char* cmd : {"generate -n 1 -p hi", "perplexity -q -c 64 --chunks 1"}) {
    const std::string c = std::string(cmd) + model_arg() + " --device cuda";
    expect_one_line_error(c + " -ctk f16 -ctv f16", "has no GPU form");
    expect_one_line_error(c + " -ctk bf16 -ctv q8_0", "differ");
    expect_one_line_error(c + " -ctk turbo3 -ctv turbo3", "--no-center-keys");
    expect_one_line_error(c + " -ctk q8_0 -ctv q8_0 --sinks 4", "CPU-only");
    expect_one_line_error(c + " -ctk q8_0 -ctv q8_0 --boundary 1", "CPU-only");
  }
#ifndef TQ_TOOL_LINKS_CUDA
  expect_one_line_error("generate -n 1 -p hi --device cuda" + model_arg(), "without CUDA");
#endif
}

}  // namespace
