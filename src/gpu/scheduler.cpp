// turboquant GPU runtime — continuous batching (see scheduler.h).
#include "gpu/scheduler.h"

#include <algorithm>
#include <cmath>
#include <deque>

#include "tq/error.h"

namespace tq::gpu {

namespace {

// best − second-best of a row of logits
float top2_gap(const float* l, size_t n) {
  float a = -INFINITY, b = -INFINITY;
  for (size_t j = 0; j < n; ++j) {
    if (l[j] > a) {
      b = a;
      a = l[j];
    } else if (l[j] > b) {
      b = l[j];
    }
  }
  return a - b;
}

}  // namespace

std::vector<std::vector<int32_t>> run_batched(GpuRuntime& rt, const std::vector<Request>& reqs,
                                              SchedulerStats* stats,
                                              std::vector<std::vector<float>>* margins) {
  const RuntimeConfig& c = rt.config();
  for (size_t i = 0; i < reqs.size(); ++i) {
    const Request& r = reqs[i];
    const int budget = int(r.prompt.size()) + r.max_new;
    if (r.prompt.empty() || r.max_new <= 0)
      throw Error("request " + std::to_string(i) + ": empty prompt or no tokens to generate");
    if (budget > c.max_ctx || rt.pages_for(budget) > rt.pages_total())
      throw Error("request " + std::to_string(i) + " (" + std::to_string(budget) +
                  " tokens) can never fit: context " + std::to_string(c.max_ctx) + ", pool " +
                  std::to_string(rt.pages_total() * 32) + " tokens");
  }
  struct Running {
    int req, seq;
    int32_t next;  // token to feed
  };
  std::vector<std::vector<int32_t>> out(reqs.size());
  if (margins) margins->assign(reqs.size(), {});
  std::deque<int> waiting;
  for (size_t i = 0; i < reqs.size(); ++i) waiting.push_back(int(i));
  std::vector<Running> run;
  SchedulerStats st;
  std::vector<float> logits;
  while (!waiting.empty() || !run.empty()) {
    // admit in order while a slot and the whole budget's pages are free
    while (!waiting.empty() && int(run.size()) < c.max_seqs) {
      const Request& r = reqs[waiting.front()];
      const int budget = int(r.prompt.size()) + r.max_new;
      if (rt.pages_for(budget) > rt.pages_free()) {
        ++st.waits;
        break;
      }
      const int s = rt.new_seq();
      if (!rt.try_reserve(s, budget)) throw Error("scheduler: page reservation failed");
      rt.prefill(s, r.prompt.data(), int(r.prompt.size()), &logits);
      const int32_t first =
          int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      out[waiting.front()].push_back(first);
      if (margins) (*margins)[waiting.front()].push_back(top2_gap(logits.data(), logits.size()));
      run.push_back({waiting.front(), s, first});
      waiting.pop_front();
    }
    // retire what is complete (a request of max_new = 1 is done after its prefill)
    for (size_t i = 0; i < run.size();) {
      if (int(out[run[i].req].size()) >= reqs[run[i].req].max_new) {
        rt.free_seq(run[i].seq);
        run.erase(run.begin() + long(i));
      } else {
        ++i;
      }
    }
    if (run.empty()) continue;
    std::vector<int> seqs;
    std::vector<int32_t> toks, next;
    for (const Running& r : run) {
      seqs.push_back(r.seq);
      toks.push_back(r.next);
    }
    rt.decode(seqs, toks, &next, margins ? &logits : nullptr);
    ++st.steps;
    st.max_running = std::max(st.max_running, int(run.size()));
    for (size_t i = 0; i < run.size(); ++i) {
      out[run[i].req].push_back(next[i]);
      if (margins) {
        const size_t V = logits.size() / run.size();
        (*margins)[run[i].req].push_back(top2_gap(logits.data() + i * V, V));
      }
      run[i].next = next[i];
      ++st.tokens_out;
    }
  }
  if (stats) *stats = st;
  return out;
}

}  // namespace tq::gpu
