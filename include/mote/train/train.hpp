#pragma once
// The train room: schedules, the Trainer (epochs, accumulation, clipping, evaluation, checkpoints with
// exact resume, signals, progress, metrics) and the Batch / Dataset contract it consumes.
#include "mote/optim/clip.hpp"
#include "mote/train/batch.hpp"
#include "mote/train/checkpoint.hpp"
#include "mote/train/metrics.hpp"
#include "mote/train/options.hpp"
#include "mote/train/schedule.hpp"
#include "mote/train/signals.hpp"
#include "mote/train/trainer.hpp"
#include "mote/train/whole_model.hpp"
