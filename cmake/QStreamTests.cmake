# ctest tests for the C API (included from the top-level CMakeLists.txt).
#   ctest -L valgrind       only the valgrind runs;  ctest -LE valgrind  everything else
set(QS_FIXTURE "${PROJECT_SOURCE_DIR}/tests/fixtures/tiny/llama")
set(QS_TINY "${CMAKE_BINARY_DIR}/tiny.qsf")
set(QS_WORK "${CMAKE_BINARY_DIR}/qs-test-work")

# prompt and greedy ids of the transformers reference
file(READ "${QS_FIXTURE}/reference.json" _qs_ref)
foreach(key input_ids greedy_ids)
  string(JSON _n LENGTH "${_qs_ref}" ${key})
  math(EXPR _last "${_n} - 1")
  set(_ids "")
  foreach(i RANGE ${_last})
    string(JSON _v GET "${_qs_ref}" ${key} ${i})
    list(APPEND _ids ${_v})
  endforeach()
  string(REPLACE ";" "," QS_${key} "${_ids}")
endforeach()

# 0. the tiny fixture converted to QSF by the CLI
add_test(NAME qs_convert_tiny
  COMMAND "${QSTREAM_CLI}" convert "${QS_FIXTURE}" -o "${QS_TINY}" --quant f32 --quiet)
set_tests_properties(qs_convert_tiny PROPERTIES FIXTURES_SETUP tiny_model)

# 1. the header compiles as C99 and C++11, pedantic, warnings as errors
set(_qs_hdr_src "${PROJECT_SOURCE_DIR}/qstream-capi/tests/c/header_check.c")
add_test(NAME qs_header_c99
  COMMAND "${CMAKE_C_COMPILER}" -std=c99 -Wall -Wextra -Werror -pedantic
          -I "${PROJECT_SOURCE_DIR}/include" -c "${_qs_hdr_src}" -o "${CMAKE_BINARY_DIR}/header_c99.o")
add_test(NAME qs_header_cxx11
  COMMAND "${CMAKE_CXX_COMPILER}" -x c++ -std=c++11 -Wall -Wextra -Werror -pedantic
          -I "${PROJECT_SOURCE_DIR}/include" -c "${_qs_hdr_src}" -o "${CMAKE_BINARY_DIR}/header_cxx11.o")

# 2. error codes through the C ABI
add_executable(qs_test_errors "${PROJECT_SOURCE_DIR}/qstream-capi/tests/c/errors.c")
target_link_libraries(qs_test_errors PRIVATE QStream::qstream)
add_test(NAME qs_errors COMMAND ${CMAKE_COMMAND} -E make_directory "${QS_WORK}")
add_test(NAME qs_errors_run COMMAND qs_test_errors "${QS_TINY}" "${QS_WORK}")
set_tests_properties(qs_errors PROPERTIES FIXTURES_SETUP workdir)
set_tests_properties(qs_errors_run PROPERTIES FIXTURES_REQUIRED "tiny_model;workdir"
  PASS_REGULAR_EXPRESSION "errors: all checks passed")

# 2b. the examples' C++ wrapper: a throwing callback reaches the caller, not the library
add_executable(qs_test_wrapper "${PROJECT_SOURCE_DIR}/qstream-capi/tests/c/wrapper.cpp")
target_include_directories(qs_test_wrapper PRIVATE "${PROJECT_SOURCE_DIR}/examples-c")
target_link_libraries(qs_test_wrapper PRIVATE QStream::qstream)
add_test(NAME qs_wrapper_run COMMAND qs_test_wrapper "${QS_TINY}")
set_tests_properties(qs_wrapper_run PROPERTIES FIXTURES_REQUIRED tiny_model
  PASS_REGULAR_EXPRESSION "wrapper: all checks passed")

# 3. examples against the converted model
add_test(NAME qs_example_simple COMMAND qs_simple "${QS_TINY}" "Hello world" 16)
set_tests_properties(qs_example_simple PROPERTIES FIXTURES_REQUIRED tiny_model
  PASS_REGULAR_EXPRESSION "generated 16 tokens .* tok/s")
add_test(NAME qs_example_tokenize COMMAND qs_tokenize "${QS_TINY}" "Hello world, how are you?")
set_tests_properties(qs_example_tokenize PROPERTIES FIXTURES_REQUIRED tiny_model
  PASS_REGULAR_EXPRESSION "round trip OK")
add_test(NAME qs_example_tokenize_static COMMAND qs_tokenize_static "${QS_TINY}" "Hello world, how are you?")
set_tests_properties(qs_example_tokenize_static PROPERTIES FIXTURES_REQUIRED tiny_model
  PASS_REGULAR_EXPRESSION "round trip OK")
# greedy tokens equal transformers' and are identical across 4 concurrent contexts
add_test(NAME qs_example_threads COMMAND qs_threads "${QS_TINY}" 4 "${QS_input_ids}" "${QS_greedy_ids}")
set_tests_properties(qs_example_threads PROPERTIES FIXTURES_REQUIRED tiny_model
  PASS_REGULAR_EXPRESSION "4 threads: identical greedy tokens")
# the standalone attention cache from a hand-written decoder loop, against f32 attention
add_test(NAME qs_example_attention COMMAND qs_attention)
set_tests_properties(qs_example_attention PROPERTIES PASS_REGULAR_EXPRESSION "attention: all checks passed")
file(WRITE "${CMAKE_BINARY_DIR}/chat_input.txt" "Hello there!\nTell me a story.\n")
add_test(NAME qs_example_chat
  COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:qs_chat> "-DARGS=${QS_TINY};--max-tokens;12;--greedy"
          -DINPUT=${CMAKE_BINARY_DIR}/chat_input.txt -P "${PROJECT_SOURCE_DIR}/cmake/run_with_stdin.cmake")
set_tests_properties(qs_example_chat PROPERTIES FIXTURES_REQUIRED tiny_model
  PASS_REGULAR_EXPRESSION "chat: 2 turns")

# 4. an outside project: install to a temporary prefix, find_package(QStream) /
#    FindQStream.cmake / pkg-config, build and run the examples
add_test(NAME qs_install_consumer
  COMMAND bash "${PROJECT_SOURCE_DIR}/cmake/test_consumer.sh" "${CMAKE_BINARY_DIR}" "${PROJECT_SOURCE_DIR}" "${QS_TINY}"
          "${CMAKE_C_COMPILER}" "${CMAKE_CXX_COMPILER}" "${QSTREAM_CLI}")
set_tests_properties(qs_install_consumer PROPERTIES FIXTURES_REQUIRED tiny_model
  PASS_REGULAR_EXPRESSION "consumer: all OK" TIMEOUT 600)

# 5. valgrind (label "valgrind"; skipped when valgrind is absent). Only definite leaks
#    fail: "possibly lost" blocks are process-lifetime statics (interned static names,
#    crossbeam/rayon globals) by design.
find_program(VALGRIND valgrind)
if(VALGRIND)
  set(_vg "${VALGRIND}" --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite
          --suppressions=${PROJECT_SOURCE_DIR}/cmake/valgrind.supp --quiet)
  add_test(NAME qs_valgrind_simple COMMAND ${_vg} $<TARGET_FILE:qs_simple> "${QS_TINY}" "Hello" 8)
  add_test(NAME qs_valgrind_threads
    COMMAND ${_vg} $<TARGET_FILE:qs_threads> "${QS_TINY}" 2 "${QS_input_ids}" "${QS_greedy_ids}")
  add_test(NAME qs_valgrind_errors COMMAND ${_vg} $<TARGET_FILE:qs_test_errors> "${QS_TINY}" "${QS_WORK}")
  add_test(NAME qs_valgrind_tokenize COMMAND ${_vg} $<TARGET_FILE:qs_tokenize> "${QS_TINY}" "Hello world")
  set_tests_properties(qs_valgrind_simple qs_valgrind_threads qs_valgrind_errors qs_valgrind_tokenize PROPERTIES
    LABELS valgrind FIXTURES_REQUIRED "tiny_model;workdir" TIMEOUT 900)
  add_test(NAME qs_valgrind_attention COMMAND ${_vg} $<TARGET_FILE:qs_attention>)
  set_tests_properties(qs_valgrind_attention PROPERTIES LABELS valgrind TIMEOUT 900
    PASS_REGULAR_EXPRESSION "attention: all checks passed")
else()
  message(STATUS "valgrind not found: the valgrind tests are skipped")
endif()
