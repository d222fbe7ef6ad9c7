#pragma once
// dist::nccl: the communicator over NCCL, for tensors in GPU memory (the CUDA backend), one rank per
// GPU. MPI launches the ranks and carries the bootstrap (rank 0's ncclUniqueId) and the short host
// values (fingerprints, step counts, random states); gradient sums run in NCCL on the stream mote's
// kernels use, so they are ordered after the backward that produced them. Every wait has a deadline:
// a peer that died makes the others abort the NCCL communicator and throw dist_error.
// Needs <nccl.h>, <cuda_runtime.h> and <mpi.h>: link NCCL, CUDA::cudart and MPI's libraries.
//
//   mote::dist::mpi::session mpi_session(&argc, &argv);
//   mote::dist::nccl world{mote::dist::mpi{}};  // picks GPU (local rank % GPUs on the node)
//   mote::dist::GradientBuckets<float, mote::cuda, mote::dist::nccl> buckets(experts.parameters(), world);
//   loss.backward({.on_leaf_ready = buckets.hook()});
//   buckets.finish();                           // gradients summed over every rank's GPU
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "mote/dist/communicator.hpp"
#include "mote/dist/mpi.hpp"

namespace mote::dist {

class nccl {
 public:
  static constexpr const char* name = "nccl";
  // Device memory only: a host-memory backend trains over dist::mpi.
  template <class B>
  static constexpr bool reduces_on = !B::host_accessible;

  // One sum in flight: an event recorded after it on the stream, and what it is, for messages.
  struct request {
    cudaEvent_t done = nullptr;
    std::string what;
  };

  // Joins the NCCL communicator of `host`'s ranks on GPU `device` (-1: this rank's place among the
  // ranks of its node, modulo the node's GPU count). `stream` is where the sums run: the stream the
  // CUDA backend queues the gradients' kernels on (mote::cuda::current_stream(); 0 outside any
  // cuda::stream_scope).
  explicit nccl(mpi host, int device = -1, cudaStream_t stream = nullptr) : state_(std::make_shared<State>(std::move(host), stream)) {
    State& s = *state_;
    int devices = 0;
    check_cuda(cudaGetDeviceCount(&devices), "cudaGetDeviceCount", "counting this node's GPUs");
    if (devices == 0) throw dist_error("mote: dist::nccl: rank " + std::to_string(s.host.rank()) + " sees no CUDA device");
    s.device = device >= 0 ? device : s.host.local_rank() % devices;
    if (s.device >= devices)
      throw dist_error("mote: dist::nccl: device " + std::to_string(s.device) + " asked for, but this node has " +
                       std::to_string(devices) + " GPU(s)");
    check_cuda(cudaSetDevice(s.device), "cudaSetDevice", "selecting GPU " + std::to_string(s.device));
    ncclUniqueId id{};
    if (s.host.rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId", "creating the communicator's id");
    const std::string shared = s.host.broadcast(std::string(reinterpret_cast<const char*>(&id), sizeof id), 0);
    std::copy(shared.begin(), shared.end(), reinterpret_cast<char*>(&id));
    // Non-blocking init, so a rank that never arrives is a timeout here rather than a hang.
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    check_nccl(ncclCommInitRankConfig(&s.comm, s.host.size(), id, s.host.rank(), &config), "ncclCommInitRankConfig",
               "joining the NCCL communicator");
    s.wait_until_settled("joining the NCCL communicator");
  }

  int rank() const noexcept { return state_->host.rank(); }
  int size() const noexcept { return state_->host.size(); }
  int device() const noexcept { return state_->device; }
  mpi& host() noexcept { return state_->host; }

  // Sums in place across ranks. Device memory goes over NCCL; host memory (the Trainer's step counts
  // and stop votes) over MPI.
  template <class T>
  void all_reduce_sum(std::span<T> data) {
    if (is_host_memory(data.data())) return state_->host.all_reduce_sum(data);
    request r = start_all_reduce_sum(data);
    wait(r);
  }

  template <class T>
  request start_all_reduce_sum(std::span<T> data, std::string what = "an all-reduce") {
    State& s = *state_;
    if (is_host_memory(data.data())) {
      s.host.all_reduce_sum(data);
      return {};
    }
    request r{nullptr, std::move(what)};
    check_nccl(ncclAllReduce(data.data(), data.data(), data.size(), datatype<T>(), ncclSum, s.comm, s.stream), "ncclAllReduce", r.what);
    s.wait_until_settled(r.what);  // a non-blocking communicator may still be queuing the call
    check_cuda(cudaEventCreateWithFlags(&r.done, cudaEventDisableTiming), "cudaEventCreateWithFlags", r.what);
    check_cuda(cudaEventRecord(r.done, s.stream), "cudaEventRecord", r.what);
    return r;
  }

  // Completes a started sum, or aborts the communicator and throws once the timeout passes.
  void wait(request& r) {
    if (!r.done) return;
    const State& s = *state_;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(s.host.timeout_s());
    for (std::int64_t polls = 0;; ++polls) {
      const cudaError_t status = cudaEventQuery(r.done);
      if (status == cudaSuccess) break;
      if (status != cudaErrorNotReady) {
        cudaEventDestroy(r.done);
        r.done = nullptr;
        check_cuda(status, "cudaEventQuery", r.what);
      }
      state_->check_async(r.what);
      if (polls > 1000 && std::chrono::steady_clock::now() > deadline) {
        cudaEventDestroy(r.done);
        r.done = nullptr;
        state_->abort();
        throw dist_error("mote: dist: rank " + std::to_string(rank()) + " of " + std::to_string(size()) + " waited " +
                         std::to_string(static_cast<long>(s.host.timeout_s())) + " s for " + r.what +
                         " (NCCL), and a peer never joined: a rank died, stalled, or is running another step. "
                         "The limit is MOTE_DIST_TIMEOUT_S");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(polls < 10000 ? 20 : 500));
    }
    cudaEventDestroy(r.done);
    r.done = nullptr;
  }

  std::vector<std::string> all_gather(const std::string& mine) { return state_->host.all_gather(mine); }
  std::string broadcast(const std::string& value, int root) { return state_->host.broadcast(value, root); }
  void barrier() { state_->host.barrier(); }

 private:
  struct State {
    State(mpi h, cudaStream_t s) : host(std::move(h)), stream(s) {}
    State(const State&) = delete;
    State& operator=(const State&) = delete;
    ~State() {
      if (comm) ncclCommDestroy(comm);
    }

    // Polls a non-blocking communicator until the last call settled, with the MPI timeout.
    void wait_until_settled(const std::string& what) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(host.timeout_s());
      for (;;) {
        ncclResult_t state = ncclSuccess;
        check_nccl(ncclCommGetAsyncError(comm, &state), "ncclCommGetAsyncError", what);
        if (state == ncclSuccess) return;
        if (state != ncclInProgress) {
          const std::string reason = ncclGetLastError(comm);
          abort();
          throw dist_error("mote: dist: NCCL failed during " + what + ": " + ncclGetErrorString(state) +
                           (reason.empty() ? std::string() : " (" + reason + ")"));
        }
        if (std::chrono::steady_clock::now() > deadline) {
          abort();
          throw dist_error("mote: dist: rank " + std::to_string(host.rank()) + " waited " + std::to_string(static_cast<long>(host.timeout_s())) +
                           " s for " + what + " (NCCL); a peer never joined. The limit is MOTE_DIST_TIMEOUT_S");
        }
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
    void check_async(const std::string& what) {
      ncclResult_t state = ncclSuccess;
      check_nccl(ncclCommGetAsyncError(comm, &state), "ncclCommGetAsyncError", what);
      if (state != ncclSuccess && state != ncclInProgress) {
        const std::string reason = ncclGetLastError(comm);
        abort();
        throw dist_error("mote: dist: NCCL failed during " + what + ": " + ncclGetErrorString(state) +
                         (reason.empty() ? std::string() : " (" + reason + ")"));
      }
    }
    // After a failure or timeout the communicator cannot be used: abort frees it without waiting for peers.
    void abort() {
      if (comm) ncclCommAbort(comm);
      comm = nullptr;
    }

    mpi host;
    cudaStream_t stream = nullptr;
    int device = 0;
    ncclComm_t comm = nullptr;
  };

  static bool is_host_memory(const void* p) {
    cudaPointerAttributes attributes{};
    if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
      cudaGetLastError();  // clears the sticky "invalid value" of an unknown host pointer on old runtimes
      return true;
    }
    return attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged;
  }

  template <class T>
  static ncclDataType_t datatype() {
    if constexpr (std::is_same_v<T, float>) return ncclFloat32;
    else if constexpr (std::is_same_v<T, double>) return ncclFloat64;
    else if constexpr (std::is_same_v<T, std::int64_t>) return ncclInt64;
    else if constexpr (std::is_same_v<T, std::int32_t>) return ncclInt32;
    else static_assert(sizeof(T) == 0, "dist::nccl sums float, double, int32 and int64 only");
  }

  static void check_nccl(ncclResult_t code, const char* call, const std::string& what) {
    if (code == ncclSuccess || code == ncclInProgress) return;
    throw dist_error(std::string("mote: dist: ") + call + " failed during " + what + ": " + ncclGetErrorString(code));
  }
  static void check_cuda(cudaError_t code, const char* call, const std::string& what) {
    if (code == cudaSuccess) return;
    throw dist_error(std::string("mote: dist: ") + call + " failed during " + what + ": " + cudaGetErrorString(code));
  }

  std::shared_ptr<State> state_;  // copies share the communicator, as the Trainer and its buckets do
};

static_assert(Communicator<nccl>);

}  // namespace mote::dist
