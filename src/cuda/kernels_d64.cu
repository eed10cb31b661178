#define TQ_HEAD_DIM 64
#include "cuda/kernels_impl.cuh"
