// Temporary files of the tests: every test process gets its own fresh folder under the system's
// temporary folder ($TMPDIR), made by mkdtemp and removed with its contents when the process
// ends, so that parallel ctest runs (and runs of several checkouts) never share a path.
#pragma once
#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace tq::test {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tq-test.XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("cannot create a temporary folder");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A path named `name` inside this process's own temporary folder.
inline std::string temp_path(const std::string& name) {
  static TempDir dir;
  return (dir.path() / name).string();
}

}  // namespace tq::test
