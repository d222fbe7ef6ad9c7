#pragma once
// dist::single: the communicator of one process. Every collective is the identity, so a Trainer
// written for data parallelism runs unchanged, and at no cost, in one process.
#include <span>
#include <string>
#include <vector>

#include "mote/dist/communicator.hpp"

namespace mote::dist {

struct single {
  static constexpr const char* name = "single";
  template <class B>
  static constexpr bool reduces_on = true;
  struct request {};

  int rank() const noexcept { return 0; }
  int size() const noexcept { return 1; }
  template <class T>
  void all_reduce_sum(std::span<T>) const noexcept {}
  template <class T>
  request start_all_reduce_sum(std::span<T>, const std::string& = {}) const noexcept {
    return {};
  }
  void wait(request&) const noexcept {}
  std::vector<std::string> all_gather(const std::string& mine) const { return {mine}; }
  std::string broadcast(const std::string& value, int) const { return value; }
  void barrier() const noexcept {}

  // Throws when a launcher started several copies of a program that has no MPI: each would train
  // alone on all the data and overwrite the others' checkpoints.
  static void require_alone(const std::string& program) {
    const int launched = launched_world_size();
    if (launched > 1)
      throw dist_error("mote: dist: " + program + " was started as one of " + std::to_string(launched) +
                       " processes, but it was built without MPI (dist::single); each process would train alone. "
                       "Install libopenmpi-dev, rebuild, and launch with mpirun again");
  }
};

static_assert(Communicator<single>);

}  // namespace mote::dist
