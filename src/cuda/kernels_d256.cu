#define TQ_HEAD_DIM 256
#include "cuda/kernels_impl.cuh"
