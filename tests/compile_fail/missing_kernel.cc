// Must NOT compile: mote::add on a backend without a 'binary_forward' kernel. The test
// (expect_missing_kernel.cmake) requires MOTE_CALL_KERNEL's sentence in the compiler output.
// Built with -DMOTE_TOY_HAS_KERNELS it must compile, proving the toy backend is otherwise sound.
// Named .cc so that the test suite's *.cpp glob never builds it into mote_tests.
#include <mote/mote.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace toyland {

// A host backend with the memory functions of mote::Backend and no compute kernels.
struct toy {
  static constexpr const char* name = "toy";
  static constexpr bool host_accessible = true;
  template <class T>
  static T* allocate(std::size_t n) {
    return n ? new T[n] : nullptr;
  }
  template <class T>
  static void deallocate(T* p, std::size_t /*n*/) noexcept {
    delete[] p;
  }
  template <class T>
  static void copy_to_host(const T* src, T* dst, std::size_t n) {
    if (n) std::memcpy(dst, src, n * sizeof(T));
  }
  template <class T>
  static void copy_from_host(const T* src, T* dst, std::size_t n) {
    if (n) std::memcpy(dst, src, n * sizeof(T));
  }
  template <class T>
  static void copy(const T* src, T* dst, std::size_t n) {
    if (n) std::memcpy(dst, src, n * sizeof(T));
  }
  template <class T>
  static void fill(T* p, std::size_t n, T value) {
    std::fill(p, p + n, value);
  }
  static void synchronize() noexcept {}
};

// Tensor itself gathers views through strided_copy, so even a memory-only backend needs it.
template <class T>
void strided_copy(toy, const T* src, const std::int64_t* shape4, const std::int64_t* strides4, T* dst) {
  strided_copy(mote::cpu{}, src, shape4, strides4, dst);
}

#ifdef MOTE_TOY_HAS_KERNELS
template <class T>
void binary_forward(toy, mote::backend::BinaryOp op, const T* a, std::int64_t na, const T* b, std::int64_t nb, T* out,
                    std::int64_t n) {
  binary_forward(mote::cpu{}, op, a, na, b, nb, out, n);
}
template <class T>
void binary_backward(toy, mote::backend::BinaryOp op, const T* a, std::int64_t na, const T* b, std::int64_t nb,
                     const T* dout, std::int64_t n, T* da, T* db) {
  binary_backward(mote::cpu{}, op, a, na, b, nb, dout, n, da, db);
}
// add hands its gradient on to its first input, adding it when that input already has one.
template <class T>
void axpy(toy, T alpha, const T* x, T* y, std::int64_t n) {
  axpy(mote::cpu{}, alpha, x, y, n);
}
#endif

}  // namespace toyland

static_assert(mote::Backend<toyland::toy>);

int main() {
  const mote::Var<float, toyland::toy> a(mote::Tensor<float, toyland::toy>::zeros({2, 3}), true);
  const mote::Var<float, toyland::toy> b(mote::Tensor<float, toyland::toy>::zeros({3}), true);
  const auto c = mote::add(a, b);
  return c.numel() == 6 ? 0 : 1;
}
