// A progress bar on stderr for long work. Drawn only when stderr is a terminal (or
// TQ_PROGRESS=1), so logs and CI output stay clean.
#pragma once
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace tq {

class Progress {
 public:
  Progress(std::string label, size_t total) : label_(std::move(label)), total_(total) {
    const char* env = std::getenv("TQ_PROGRESS");
    enabled_ = env ? std::string(env) == "1" : isatty(2);
    start_ = std::chrono::steady_clock::now();
  }
  ~Progress() { done(); }
  void update(size_t done_count, const std::string& note = "") {
    if (!enabled_ || total_ == 0) return;
    const double f = double(done_count) / double(total_);
    const int width = 30, fill = int(f * width + 0.5);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::fprintf(stderr, "\r%s [%.*s%*s] %3d%% %zu/%zu %.1fs %s\x1b[K", label_.c_str(), fill,
                 "##############################", width - fill, "", int(f * 100), done_count,
                 total_, secs, note.c_str());
    std::fflush(stderr);
    drawn_ = true;
  }
  void done() {
    if (drawn_) std::fprintf(stderr, "\r\x1b[K");
    drawn_ = false;
  }

 private:
  std::string label_;
  size_t total_;
  bool enabled_ = false, drawn_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace tq
