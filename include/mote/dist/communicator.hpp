#pragma once
// The communicator contract that data-parallel training and sharded generation are written against.
// A communicator is a policy type, chosen like a backend: dist::single (one process, no
// communication), dist::mpi (CPU tensors over MPI) or dist::nccl (device tensors over NCCL).
#include <concepts>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "mote/core/error.hpp"

namespace mote::dist {

// A collective failed, timed out, or the ranks disagree; the message names the rank, the call and why.
struct dist_error : error {
  using error::error;
};

// What every communicator provides. Sums run in place over `data` in the memory the policy reduces in
// (host memory for single and mpi, device memory for nccl); start/wait overlap a sum with other work;
// all_gather and broadcast move short host strings (fingerprints, records, random states).
template <class C>
concept Communicator = std::copy_constructible<C> &&
                       requires(C& c, std::span<float> f, std::span<double> d, const std::string& s, typename C::request& r) {
                         { c.rank() } -> std::convertible_to<int>;
                         { c.size() } -> std::convertible_to<int>;
                         { C::name } -> std::convertible_to<const char*>;
                         c.all_reduce_sum(f);
                         c.all_reduce_sum(d);
                         { c.start_all_reduce_sum(f) } -> std::same_as<typename C::request>;
                         c.wait(r);
                         { c.all_gather(s) } -> std::same_as<std::vector<std::string>>;
                         { c.broadcast(s, 0) } -> std::same_as<std::string>;
                         c.barrier();
                       };

// Whether communicator C sums tensors of backend B where they live (mpi: host memory; nccl: device).
template <class C, class B>
concept ReducesOn = Communicator<C> && C::template reduces_on<B>;

// The world size a launcher announced in the environment (mpirun, srun, a PMI launcher); 1 when none
// did (SLURM_NTASKS is not read: a batch script's own single process sees it too). A program without MPI support uses it to refuse running N copies that would each train alone.
inline int launched_world_size() noexcept {
  for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    const char* value = std::getenv(variable);
    if (!value || !*value) continue;
    char* end = nullptr;
    const long n = std::strtol(value, &end, 10);
    if (end && *end == '\0' && n > 0 && n < (1L << 30)) return static_cast<int>(n);
  }
  return 1;
}

}  // namespace mote::dist
