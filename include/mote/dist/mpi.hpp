#pragma once
// dist::mpi: the communicator over MPI (OpenMPI, MPICH), for tensors in host memory. Every collective
// is started non-blocking and waited with a deadline, so a rank whose peer died or stalled stops with
// a dist_error naming the call instead of hanging. Needs <mpi.h>: link MPI::MPI_CXX (CMake's FindMPI with
// MPI_CXX_SKIP_MPICXX ON; only the C API is used).
//
//   mote::dist::mpi::session mpi_session(&argc, &argv);  // MPI_Init_thread ... MPI_Finalize
//   mote::dist::mpi world;                               // MPI_COMM_WORLD
//   mote::train::Trainer trainer(model, experts, options, world);
// The C API only: the deprecated C++ bindings of some MPI headers do not compile warning-free.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "mote/dist/communicator.hpp"

namespace mote::dist {

class mpi {
 public:
  static constexpr const char* name = "mpi";
  template <class B>
  static constexpr bool reduces_on = B::host_accessible;

  // One collective in flight: what it is, for the timeout message.
  struct request {
    MPI_Request handle = MPI_REQUEST_NULL;
    std::string what;
  };

  // Initializes MPI for the program's lifetime unless something else already did (thread level
  // FUNNELED: only the main thread calls MPI), and makes MPI errors return codes that mote turns
  // into dist_error. Under several ranks an uncaught error should end in abort(), not a finalize
  // that waits for peers.
  class session {
   public:
    session(int* argc, char*** argv) {
      int initialized = 0;
      MPI_Initialized(&initialized);
      if (!initialized) {
        int provided = 0;
        check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread", "initializing MPI");
        owns_ = true;
      }
      MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    }
    session(const session&) = delete;
    session& operator=(const session&) = delete;
    ~session() {
      if (!owns_) return;
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (!finalized) MPI_Finalize();
    }
    // Ends every rank of the job (MPI_Abort): the way out after an error that the peers cannot see.
    [[noreturn]] static void abort(int code) {
      MPI_Abort(MPI_COMM_WORLD, code);
      std::abort();
    }

   private:
    bool owns_ = false;
  };

  // The limit on any one wait: MOTE_DIST_TIMEOUT_S when set, else 300 s.
  static double default_timeout_s() {
    if (const char* v = std::getenv("MOTE_DIST_TIMEOUT_S"); v && *v) {
      char* end = nullptr;
      const double s = std::strtod(v, &end);
      if (end && *end == '\0' && s > 0) return s;
      throw dist_error(std::string("mote: dist: MOTE_DIST_TIMEOUT_S is '") + v + "', expected a number of seconds > 0");
    }
    return 300.0;
  }

  explicit mpi(double timeout_s = default_timeout_s(), MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm), timeout_s_(timeout_s) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized)
      throw dist_error("mote: dist::mpi: MPI is not initialized; create a dist::mpi::session(&argc, &argv) at the top of main first");
    if (!(timeout_s > 0)) throw dist_error("mote: dist::mpi: timeout_s must be > 0, got " + std::to_string(timeout_s));
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank", "reading this process's rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size", "reading the world size");
  }

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  double timeout_s() const noexcept { return timeout_s_; }

  // This rank's place among the ranks on its node (a collective: every rank calls it), for picking a GPU.
  int local_rank() {
    MPI_Comm node = MPI_COMM_NULL;
    check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node), "MPI_Comm_split_type",
          "finding the ranks on this node");
    int local = 0;
    const int code = MPI_Comm_rank(node, &local);
    MPI_Comm_free(&node);
    check(code, "MPI_Comm_rank", "reading this rank's place on its node");
    return local;
  }

  template <class T>
  void all_reduce_sum(std::span<T> data) {
    request r = start_all_reduce_sum(data);
    wait(r);
  }

  // Sums in place across ranks; wait() completes it. Spans past INT_MAX elements go as several calls.
  template <class T>
  request start_all_reduce_sum(std::span<T> data, std::string what = "an all-reduce") {
    if (data.size() > static_cast<std::size_t>(INT_MAX)) {
      for (std::size_t begin = 0; begin < data.size(); begin += INT_MAX / 2)
        all_reduce_sum(data.subspan(begin, std::min<std::size_t>(INT_MAX / 2, data.size() - begin)));
      return {};
    }
    request r{MPI_REQUEST_NULL, std::move(what)};
    check(MPI_Iallreduce(MPI_IN_PLACE, data.data(), static_cast<int>(data.size()), datatype<T>(), MPI_SUM, comm_, &r.handle),
          "MPI_Iallreduce", r.what);
    return r;
  }

  // Completes a started collective, or throws dist_error once timeout_s passes without it.
  void wait(request& r) {
    if (r.handle == MPI_REQUEST_NULL) return;
    const auto start = std::chrono::steady_clock::now();
    const auto deadline = start + std::chrono::duration<double>(timeout_s_);
    for (std::int64_t polls = 0;; ++polls) {
      int done = 0;
      check(MPI_Test(&r.handle, &done, MPI_STATUS_IGNORE), "MPI_Test", r.what);
      if (done) return;
      if (polls < 1000) continue;  // a collective between two ranks on one node usually ends in microseconds
      if (std::chrono::steady_clock::now() > deadline)
        throw dist_error("mote: dist: rank " + std::to_string(rank_) + " of " + std::to_string(size_) + " waited " +
                         std::to_string(static_cast<long>(timeout_s_)) + " s for " + r.what +
                         " (MPI), and a peer never joined: a rank died, stalled, or is running another step. "
                         "The limit is MOTE_DIST_TIMEOUT_S");
      std::this_thread::sleep_for(std::chrono::microseconds(polls < 10000 ? 20 : 500));
    }
  }

  std::vector<std::string> all_gather(const std::string& mine) {
    const int length = static_cast<int>(mine.size());
    std::vector<int> lengths(static_cast<std::size_t>(size_));
    request sizes{MPI_REQUEST_NULL, "the all-gather of string lengths"};
    check(MPI_Iallgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, comm_, &sizes.handle), "MPI_Iallgather", sizes.what);
    wait(sizes);
    std::vector<int> offsets(static_cast<std::size_t>(size_), 0);
    for (std::size_t i = 1; i < offsets.size(); ++i) offsets[i] = offsets[i - 1] + lengths[i - 1];
    std::string all(static_cast<std::size_t>(offsets.back() + lengths.back()), '\0');
    request data{MPI_REQUEST_NULL, "the all-gather of strings"};
    check(MPI_Iallgatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR, comm_, &data.handle),
          "MPI_Iallgatherv", data.what);
    wait(data);
    std::vector<std::string> out;
    for (std::size_t i = 0; i < lengths.size(); ++i) out.push_back(all.substr(static_cast<std::size_t>(offsets[i]), static_cast<std::size_t>(lengths[i])));
    return out;
  }

  std::string broadcast(const std::string& value, int root) {
    long long length = static_cast<long long>(value.size());
    request size{MPI_REQUEST_NULL, "the broadcast of a string length"};
    check(MPI_Ibcast(&length, 1, MPI_LONG_LONG, root, comm_, &size.handle), "MPI_Ibcast", size.what);
    wait(size);
    std::string out = rank_ == root ? value : std::string(static_cast<std::size_t>(length), '\0');
    request data{MPI_REQUEST_NULL, "the broadcast of a string"};
    check(MPI_Ibcast(out.data(), static_cast<int>(length), MPI_CHAR, root, comm_, &data.handle), "MPI_Ibcast", data.what);
    wait(data);
    return out;
  }

  void barrier() {
    request r{MPI_REQUEST_NULL, "a barrier"};
    check(MPI_Ibarrier(comm_, &r.handle), "MPI_Ibarrier", r.what);
    wait(r);
  }

 private:
  template <class T>
  static MPI_Datatype datatype() {
    if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
    else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
    else if constexpr (std::is_same_v<T, std::int64_t>) return MPI_INT64_T;
    else if constexpr (std::is_same_v<T, std::int32_t>) return MPI_INT32_T;
    else static_assert(sizeof(T) == 0, "dist::mpi sums float, double, int32 and int64 only");
  }

  static void check(int code, const char* call, const std::string& what) {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING] = {};
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw dist_error(std::string("mote: dist: ") + call + " failed during " + what + ": " + std::string(text, static_cast<std::size_t>(length)));
  }

  MPI_Comm comm_;
  double timeout_s_;
  int rank_ = 0, size_ = 1;
};

static_assert(Communicator<mpi>);

}  // namespace mote::dist
