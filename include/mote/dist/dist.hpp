#pragma once
// The data-parallel room without its transports: the communicator contract, dist::single and the
// gradient buckets. dist::mpi and dist::nccl are included on their own (they need <mpi.h>, <nccl.h>).
#include "mote/dist/communicator.hpp"
#include "mote/dist/gradient_buckets.hpp"
#include "mote/dist/single.hpp"
