#include "model/paths.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

namespace tq {

namespace {

namespace fs = std::filesystem;

fs::path exe_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path();
}

// Candidates for a file at `rel` below the repository root: <exe dir>/../rel (the tool lives in
// build*/), <exe dir>/../../rel (tests in build*/tests/), then ./rel.
std::string find_file(const char* env, const std::string& rel) {
  if (const char* e = std::getenv(env); e != nullptr && *e != '\0') return e;
  std::vector<fs::path> cands;
  const fs::path d = exe_dir();
  if (!d.empty()) {
    cands.push_back(d.parent_path() / rel);
    cands.push_back(d.parent_path().parent_path() / rel);
  }
  cands.push_back(fs::path(".") / rel);
  std::error_code ec;
  for (const auto& c : cands)
    if (fs::exists(c, ec)) return c.lexically_normal().string();
  return (fs::path(".") / rel).lexically_normal().string();
}

}  // namespace

std::string default_model_path() {
  return find_file("TQ_MODEL", kDefaultModelFile);
}

std::string default_text_path() { return find_file("TQ_TEXT", "data/eval.txt"); }

std::string default_calib_path() { return find_file("TQ_CALIB", "data/calib.txt"); }

}  // namespace tq
