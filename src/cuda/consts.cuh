// Device-side constants of one cache format (plain data, passed to kernels by value).
#pragma once
#include <cstdint>
#include <vector_types.h>

#include "cuda/formats.cuh"

namespace tq::cuda {

constexpr int kQCells = 256;

struct FormatConsts {
  Fmt fmt = Fmt::kTurbo3;
  int D = 128;
  // Per part: fp16 codebook split into low/high bytes for prmt lookups (LUT4: the 8
  // magnitudes |c[8+m]|; LUT1: {−1, +1}).
  uint32_t lut_lo[2][2] = {}, lut_hi[2][2] = {};
  float bounds[2][15] = {};  // Lloyd-Max decision boundaries (append)
  int nbounds[2] = {};
  float cent[2][16] = {};    // centroids (append, T3P residual)
  // Quantizer cells for part 0 of the Hadamard types: cell i of kQCells covers
  // [−G + i·w, −G + (i+1)·w); entry = {the one boundary inside it (or +inf), #boundaries below
  // the cell, stored as int bits}; index(u) = entry.y + (entry.x < u), with
  // cell = ⌊u/w + G/w⌋ (clamped).
  const float2* qcells = nullptr;
  float qinv = 0.f, qoff = 0.f;
  int pdim[2] = {};          // rotation size of each part
  bool fwht = false;         // single power-of-two rotation: u = FWHT(signs ⊙ x)/√D
  const float* signs = nullptr;      // [D]
  const float* rot_t[2] = {};        // dense part rotations, transposed (pdim × pdim)
  const float* R = nullptr;          // D×D: rotated = R·x (null: identity)
  const float* S = nullptr;          // T3P sketch, row-major D×D
  const float* St = nullptr;         // its transpose
};

// CUDA error check → tq::Error (host code).
void check_cuda(int err, const char* what);
#define TQ_CUDA_CHECK(x) ::tq::cuda::check_cuda(int(x), #x)

}  // namespace tq::cuda
