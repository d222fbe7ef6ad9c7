#pragma once
// mote with the CUDA backend: include this (instead of mote/mote.hpp) from a .cu translation unit
// compiled by nvcc, and link CUDA::cudart and CUDA::cublas. Var<float, mote::cuda> then runs every
// op, whole models, their optimizers and generation on the device.
#include "mote/mote.hpp"

#include "mote/backend/cuda/cuda.cuh"
#include "mote/backend/cuda/math.cuh"
#include "mote/backend/cuda/elementwise.cuh"
#include "mote/backend/cuda/gemm.cuh"
#include "mote/backend/cuda/reduce.cuh"
#include "mote/backend/cuda/softmax.cuh"
#include "mote/backend/cuda/shape_ops.cuh"
#include "mote/backend/cuda/index.cuh"
#include "mote/backend/cuda/norm.cuh"
#include "mote/backend/cuda/activation.cuh"
#include "mote/backend/cuda/rope.cuh"
#include "mote/backend/cuda/attention.cuh"
#include "mote/backend/cuda/loss.cuh"
#include "mote/backend/cuda/optim.cuh"
