#pragma once
// The aligncot room: AlignCoT stages as types, Pipeline<Stages...>, the chain format, chains to
// training sequences (routes, step-skip masks, packing, the expanded data), the chain dataset for
// the trainer, stage-token registration, the experts a pipeline trains, self-generated chains and
// adaptive inference.
#include "mote/aligncot/stages.hpp"
#include "mote/aligncot/pipeline.hpp"
#include "mote/aligncot/chain.hpp"
#include "mote/aligncot/rows.hpp"
#include "mote/aligncot/dataset.hpp"
#include "mote/aligncot/stage_tokens.hpp"
#include "mote/aligncot/experts.hpp"
#include "mote/aligncot/inference.hpp"
#include "mote/aligncot/self_generate.hpp"
