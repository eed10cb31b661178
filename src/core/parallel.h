// turboquant — exceptions out of OpenMP parallel regions.
//
// An exception that leaves an OpenMP structured block calls std::terminate (the region's end is
// an implicit barrier the other threads wait at; there is nowhere to unwind to), so a tq::Error
// or std::bad_alloc thrown by one thread ended the process with "terminate called after
// throwing…" (exit 134) instead of the tool's one-line message. ParallelErrors keeps the first
// exception thrown by any thread; rethrow() raises it on the calling thread after the region:
//
//   tq::ParallelErrors errors;
//   #pragma omp parallel for
//   for (int64_t i = 0; i < n; ++i)
//     errors.run([&] { work(i); });
//   errors.rethrow();
//
// Once one thread has failed, run() skips the remaining bodies (their results are discarded
// anyway). The non-throwing path costs one relaxed atomic load per call. Wrap the body of each
// iteration, never a region that contains `omp for` or a barrier: a thread leaving such a
// region early would leave the others waiting at a barrier it never reaches.
#pragma once
#include <atomic>
#include <exception>
#include <mutex>

namespace tq {

class ParallelErrors {
 public:
  // Runs f(), keeping the exception it throws (the first one of the region wins). Never throws.
  template <class F>
  void run(F&& f) noexcept {
    if (failed()) return;
    try {
      f();
    } catch (...) {
      capture();
    }
  }
  // True once some thread's body has thrown.
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  // Rethrows the captured exception, if any. Call after the parallel region, outside it.
  void rethrow() {
    if (!failed()) return;
    std::exception_ptr e;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      e = first_;
      first_ = nullptr;
      failed_.store(false, std::memory_order_relaxed);
    }
    if (e) std::rethrow_exception(e);
  }

 private:
  void capture() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!first_) first_ = std::current_exception();
    failed_.store(true, std::memory_order_relaxed);
  }

  std::mutex mutex_;
  std::exception_ptr first_;
  std::atomic<bool> failed_{false};
};

}  // namespace tq
