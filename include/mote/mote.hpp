#pragma once
// mote: the whole CPU side in one include. The CUDA side comes from mote/cuda.cuh in a .cu
// translation unit (kernels of a header-only library compile in the user's translation unit).
#include "mote/core/dtype.hpp"
#include "mote/core/error.hpp"
#include "mote/core/rng.hpp"
#include "mote/core/shape.hpp"
#include "mote/core/tensor.hpp"

#include "mote/backend/concept.hpp"
#include "mote/backend/precision.hpp"
#include "mote/backend/kernel_ops.hpp"
#include "mote/backend/cpu/cpu.hpp"
#include "mote/backend/cpu/eigen.hpp"
#include "mote/backend/cpu/elementwise.hpp"
#include "mote/backend/cpu/gemm.hpp"
#include "mote/backend/cpu/reduce.hpp"
#include "mote/backend/cpu/shape_ops.hpp"
#include "mote/backend/cpu/index.hpp"
#include "mote/backend/cpu/norm.hpp"
#include "mote/backend/cpu/activation.hpp"
#include "mote/backend/cpu/softmax.hpp"
#include "mote/backend/cpu/rope.hpp"
#include "mote/backend/cpu/attention.hpp"
#include "mote/backend/cpu/loss.hpp"

#include "mote/autograd/var.hpp"
#include "mote/autograd/elementwise.hpp"
#include "mote/autograd/matmul.hpp"
#include "mote/autograd/reduce.hpp"
#include "mote/autograd/shape_ops.hpp"
#include "mote/autograd/index.hpp"
#include "mote/autograd/norm.hpp"
#include "mote/autograd/activation.hpp"
#include "mote/autograd/softmax.hpp"
#include "mote/autograd/dropout.hpp"
#include "mote/autograd/rope.hpp"
#include "mote/autograd/attention.hpp"
#include "mote/autograd/loss.hpp"
#include "mote/autograd/expert_lora.hpp"

#include "mote/optim/param_group.hpp"
#include "mote/optim/sgd.hpp"
#include "mote/optim/adamw.hpp"
#include "mote/optim/clip.hpp"

#include "mote/io/atomic_file.hpp"
#include "mote/io/json.hpp"
#include "mote/io/jsonl.hpp"
#include "mote/io/sha256.hpp"
#include "mote/io/safetensors.hpp"
#include "mote/io/hf_config.hpp"
#include "mote/io/tokenizer.hpp"
#include "mote/io/bpe_trainer.hpp"

#include "mote/nn/nn.hpp"

#include "mote/lora/lora.hpp"

#include "mote/dist/dist.hpp"

#include "mote/train/train.hpp"

#include "mote/aligncot/aligncot.hpp"

#include "mote/eval/eval.hpp"
