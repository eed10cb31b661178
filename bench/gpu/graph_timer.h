// Timing of device work as CUDA graphs, shared by the GPU micro-benchmarks (bench_linear.cu,
// gemm_sweep.cu). One timed sample is one graph of `copies` calls call(0) … call(copies - 1), each
// over another copy of its operands (the caller makes the copies large enough to spill the L2, so
// operands come from HBM as in a decode step, which also runs as a graph); time of one call =
// sample / copies, median over `reps` samples after `warm` untimed launches.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace tq::bench {

[[noreturn]] inline void die(const char* prog, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", prog, what.c_str());
  std::exit(1);
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

class GraphTimer {
 public:
  GraphTimer(const char* prog, cudaStream_t st, int copies, int warm, int reps)
      : prog_(prog), st_(st), copies_(copies), warm_(warm), reps_(reps), ev_(reps + 1) {
    for (auto& e : ev_) check(cudaEventCreate(&e), "event");
  }
  ~GraphTimer() {
    for (auto& e : ev_) cudaEventDestroy(e);
  }
  GraphTimer(const GraphTimer&) = delete;
  GraphTimer& operator=(const GraphTimer&) = delete;

  cudaEvent_t event(int i) const { return ev_.at(i); }

  // Median µs of one call(copy); call returns false when it cannot run (e.g. a cuBLASLt
  // algorithm the heuristic offered that fails), and then time() returns -1.
  template <class F>
  double time(F call) {
    if (!call(0) || cudaStreamSynchronize(st_) != cudaSuccess) {
      (void)cudaGetLastError();
      return -1;
    }
    cudaGraph_t g = nullptr;
    check(cudaStreamBeginCapture(st_, cudaStreamCaptureModeThreadLocal), "begin capture");
    bool ok = true;
    for (int c = 0; c < copies_; ++c) ok = call(c) && ok;
    check(cudaStreamEndCapture(st_, &g), "end capture");
    if (!ok) {
      check(cudaGraphDestroy(g), "graph destroy");
      return -1;
    }
    cudaGraphExec_t x = nullptr;
    check(cudaGraphInstantiate(&x, g, 0), "graph instantiate");
    for (int i = 0; i < warm_; ++i) check(cudaGraphLaunch(x, st_), "graph launch");
    check(cudaEventRecord(ev_[0], st_), "event record");
    for (int i = 0; i < reps_; ++i) {
      check(cudaGraphLaunch(x, st_), "graph launch");
      check(cudaEventRecord(ev_[i + 1], st_), "event record");
    }
    check(cudaStreamSynchronize(st_), "timed graphs");
    std::vector<double> us(reps_);
    for (int i = 0; i < reps_; ++i) {
      float ms = 0;
      check(cudaEventElapsedTime(&ms, ev_[i], ev_[i + 1]), "event time");
      us[i] = ms * 1e3 / copies_;
    }
    check(cudaGraphExecDestroy(x), "graph exec destroy");
    check(cudaGraphDestroy(g), "graph destroy");
    return median(us);
  }

 private:
  void check(cudaError_t e, const char* what) const {
    if (e != cudaSuccess) die(prog_, std::string(what) + ": " + cudaGetErrorString(e));
  }

  const char* prog_;
  cudaStream_t st_;
  int copies_, warm_, reps_;
  std::vector<cudaEvent_t> ev_;
};

}  // namespace tq::bench
