#!/usr/bin/env bash
# On a GPU machine: an ncu profile of one turbo3 decode launch (B=32, ctx=32768) with stall reasons.
set -uo pipefail
BIN=${BIN:-build-cuda}
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
M=smsp__average_warps_issue_stalled
timeout 240 $NCU --clock-control none -k regex:decode_kernel -c 1 \
  --section SpeedOfLight --section WarpStateStats --section Occupancy \
  --section SchedulerStats --section ComputeWorkloadAnalysis \
  --metrics ${M}_math_pipe_throttle_per_issue_active.ratio,${M}_short_scoreboard_per_issue_active.ratio,${M}_long_scoreboard_per_issue_active.ratio,${M}_wait_per_issue_active.ratio,${M}_mio_throttle_per_issue_active.ratio,${M}_not_selected_per_issue_active.ratio,${M}_selected_per_issue_active.ratio,${M}_lg_throttle_per_issue_active.ratio,${M}_dispatch_stall_per_issue_active.ratio,${M}_no_instruction_per_issue_active.ratio,${M}_barrier_per_issue_active.ratio,${M}_branch_resolving_per_issue_active.ratio,sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_fmaheavy.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_uniform.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,sm__inst_executed_pipe_alu.sum,sm__inst_executed_pipe_fma.sum,sm__inst_executed_pipe_fmaheavy.sum,sm__inst_executed_pipe_xu.sum \
  "$BIN/bench_gpu_decode" --quick --types turbo3 --out /tmp/x.json > "$OUT/ncu_t3.txt" 2>&1
grep -E "stalled|pipe|Duration|Registers|Achieved Occ|Throughput|Frequency|Issue|Eligible|Active Warps|Executed Ipc" \
  "$OUT/ncu_t3.txt" | head -60
