#define TQ_HEAD_DIM 128
#include "cuda/kernels_impl.cuh"
