#pragma once
// mote with the CUDA backend: include this (instead of mote/mote.hpp) from a .cu translation unit
// compiled by nvcc, and link CUDA::cudart and CUDA::cublas. Var<float, mote::cuda> then runs the
// ops whose kernels are in backend/cuda; the others stop at compile time naming the missing kernel.
#include "mote/mote.hpp"

#include "mote/backend/cuda/cuda.cuh"
#include "mote/backend/cuda/elementwise.cuh"
#include "mote/backend/cuda/gemm.cuh"
#include "mote/backend/cuda/reduce.cuh"
#include "mote/backend/cuda/softmax.cuh"
