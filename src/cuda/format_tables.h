// Host-side format tables of the CUDA cache (format_tables.cu): the device constants of one
// format and the turbo3 int8 codebook tables. Names and bpv: tq_cuda.h.
#pragma once
#include <cstdint>

#include "cuda/consts.cuh"

namespace tq::cuda {

// The device-side constants of format f at head dim D (device memory owned by the result:
// release with free_consts).
FormatConsts* make_consts(Fmt f, int D, uint64_t seed);
void free_consts(FormatConsts* c);

// turbo3's 8 fp16 centroids as int8 tables for prmt lookups (byte c of t[0] / t[1] = entry of
// code c / c + 4). Two-byte (exact): h = α(256·t1 + t2), returns α = ulp of the smallest
// |centroid|. One-byte: h ≈ s·t (|t| ≤ 127, s minimising the squared rounding error), returns s.
float make_i8_tables(const float* cent, uint32_t t1[2], uint32_t t2[2]);
float make_i8_table1(const float* cent, uint32_t t[2]);

}  // namespace tq::cuda
