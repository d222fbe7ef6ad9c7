# Builds the libFuzzer target with clang++ (the project compiler may be g++) and runs it for a bounded
# number of inputs over the seed corpus. New inputs go to a scratch directory, never into the corpus.
# The target is a .cc file so the tests/**/*.cpp glob that builds mote_tests leaves it out.
# Inputs: CLANG, SANITIZE (e.g. fuzzer or fuzzer,address,undefined), INCLUDE_DIR, EIGEN_DIR, SOURCE,
# CORPUS, WORK_DIR, RUNS, MAX_LEN.
file(MAKE_DIRECTORY ${WORK_DIR})
string(REPLACE "," "_" tag ${SANITIZE})
set(binary ${WORK_DIR}/fuzz_safetensors_${tag})
execute_process(COMMAND ${CLANG} -std=c++20 -g -O1 -Wall -Wextra -Werror -fsanitize=${SANITIZE}
                        -fno-sanitize-recover=all -fno-omit-frame-pointer -I${INCLUDE_DIR} -isystem ${EIGEN_DIR}
                        ${SOURCE} -o ${binary}
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the fuzzer with ${CLANG} -fsanitize=${SANITIZE} failed:\n${err}")
endif()
set(scratch ${WORK_DIR}/new_inputs_${tag})
file(REMOVE_RECURSE ${scratch})
file(MAKE_DIRECTORY ${scratch})
execute_process(COMMAND ${binary} -runs=${RUNS} -max_len=${MAX_LEN} -seed=1 -print_final_stats=1
                        -artifact_prefix=${WORK_DIR}/ ${scratch} ${CORPUS}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the fuzzer found a failure (artifact in ${WORK_DIR}):\n${out}\n${err}")
endif()
string(REGEX MATCH "Done [0-9]+ runs in [0-9]+ second" done "${err}")
message("fuzz_safetensors (${SANITIZE}): ${done}s, no failures")
