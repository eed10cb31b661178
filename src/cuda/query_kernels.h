// Launchers of the small kernels beside the decode kernel (query_kernels.cu). Rows are
// (sequence, query head) pairs, [B][Hq]; D is 64, 128 or 256.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace tq::cuda {

// q' = scale·R q (fp16, or bf16 for a bf16 key cache; R null: identity); S non-null (turbo3p):
// also qs = √(π/2)/D · S q'.
void launch_qprep(const float* q, uint16_t* qo, uint16_t* qso, const float* R, const float* S,
                  int B, int Hq, int D, float scale, bool bf16, cudaStream_t st);
// q' = H(signs ⊙ q)·scale/√D (fp16) by the in-warp fast Walsh-Hadamard transform.
void launch_qprep_fwht(int D, const float* q, uint16_t* qo, const float* signs, int rows,
                       float scale, cudaStream_t st);
// Merge the splits of each row and map back: out = Rᵀ (Σ w_s o_s / Σ w_s l_s) (R null: identity).
void launch_combine(const float* part_o, const float* part_ml, float* out, const float* R, int B,
                    int Hq, int D, int splits, cudaStream_t st);
// The same with out = signs ⊙ H(o')/√D.
void launch_combine_fwht(int D, const float* part_o, const float* part_ml, float* out,
                         const float* signs, int rows, int splits, cudaStream_t st);
// Prefill: lens[i] = pos0 + i + 1 (query token i attends to positions ≤ pos0 + i).
void launch_causal_lens(int* lens, int T, int pos0, cudaStream_t st);

}  // namespace tq::cuda
