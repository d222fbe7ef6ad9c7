# Compiles each public header alone (-fsyntax-only), so none leans on another's includes.
set(failed "")
foreach(header IN LISTS HEADERS)
  execute_process(COMMAND ${CXX} -std=c++20 -fsyntax-only -fopenmp -Wall -Wextra -Werror -x c++
                          -I${INCLUDE_DIR} -isystem ${EIGEN_DIR} -include ${header} /dev/null
                  RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    list(APPEND failed ${header})
    message("${header} does not compile on its own:\n${err}")
  endif()
endforeach()
list(LENGTH HEADERS count)
if(failed)
  message(FATAL_ERROR "headers that do not compile alone: ${failed}")
endif()
message("all ${count} headers compile on their own")
