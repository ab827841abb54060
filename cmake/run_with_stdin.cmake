# cmake -DEXE=prog -DARGS=a;b -DINPUT=file -P run_with_stdin.cmake
# Runs EXE with INPUT as its standard input (ctest cannot redirect stdin itself).
execute_process(COMMAND "${EXE}" ${ARGS} INPUT_FILE "${INPUT}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${EXE} exited with ${rc}")
endif()
