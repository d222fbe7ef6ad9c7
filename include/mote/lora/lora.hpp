#pragma once
// The lora room: LoRA experts on the linear layers of a frozen model, their routers (MoTE step
// routing, learned top-k, single LoRA), trainable token rows, PEFT adapter files, and merging into
// the base weights.
#include "mote/lora/options.hpp"
#include "mote/lora/routers.hpp"
#include "mote/lora/routing.hpp"
#include "mote/lora/expert_layer.hpp"
#include "mote/lora/adapter_io.hpp"
#include "mote/lora/expert_set.hpp"
#include "mote/lora/trainable_tokens.hpp"
