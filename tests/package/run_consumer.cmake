# Installs mote into a scratch prefix, then configures, builds and runs an outside project
# that uses find_package(mote CONFIG REQUIRED); then the same program through add_subdirectory.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/mote-build -G ${GENERATOR} -DMOTE_BUILD_TESTS=OFF
    -DMOTE_BUILD_EXAMPLES=OFF -DMOTE_BUILD_BENCHMARKS=OFF -DMOTE_ENABLE_CUDA=OFF -DCMAKE_INSTALL_PREFIX=${prefix})
run(${CMAKE_COMMAND} --install ${WORK_DIR}/mote-build)
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/package/consumer -B ${WORK_DIR}/consumer-build -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)
run(${WORK_DIR}/consumer-build/consumer)
if(NOT last_output MATCHES "consumer ok")
  message(FATAL_ERROR "the consumer ran but did not report success:\n${last_output}")
endif()
message("${last_output}")

# add_subdirectory: mote's own tests, examples and benchmarks stay off when it is not top level.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/package/subdirectory_consumer -B ${WORK_DIR}/subdirectory-build
    -G ${GENERATOR} -DMOTE_SOURCE_DIR=${SOURCE_DIR} -DMOTE_ENABLE_CUDA=OFF -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/subdirectory-build)
run(${WORK_DIR}/subdirectory-build/consumer)
if(NOT last_output MATCHES "consumer ok")
  message(FATAL_ERROR "the add_subdirectory consumer ran but did not report success:\n${last_output}")
endif()
message("${last_output}")
