# Compiles SOURCE twice with the C++ compiler: with the toy backend's kernels it must compile (so
# the file is otherwise sound), and without them it must fail with MOTE_CALL_KERNEL's sentence.
set(flags -std=c++20 -fsyntax-only -fopenmp -x c++ -I${INCLUDE_DIR} -isystem ${EIGEN_DIR})
set(expected "this backend has no 'binary_forward' kernel")

execute_process(COMMAND ${CXX} ${flags} -DMOTE_TOY_HAS_KERNELS ${SOURCE}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the control build (toy backend with its kernels) should compile but failed:\n${out}${err}")
endif()

execute_process(COMMAND ${CXX} ${flags} ${SOURCE} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "mote::add on a backend without 'binary_forward' compiled; it must not")
endif()
string(FIND "${out}${err}" "${expected}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "the build failed, but without \"${expected}\":\n${out}${err}")
endif()
message("compiling mote::add on a kernel-less backend fails with: mote: ${expected}; run this op on mote::cpu")
