#pragma once
// The nn room: Config and presets, blocks, CausalLM, generation, checkpoints, vocabulary growth and
// parameter transfer across backends.
#include "mote/nn/config.hpp"
#include "mote/nn/linear.hpp"
#include "mote/nn/token_adapter.hpp"
#include "mote/nn/layers.hpp"
#include "mote/nn/causal_lm.hpp"
#include "mote/nn/generate.hpp"
#include "mote/nn/checkpoint.hpp"
#include "mote/nn/resize.hpp"
#include "mote/nn/transfer.hpp"
