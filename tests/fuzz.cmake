# Short libFuzzer runs (label `fuzz`): tests/fuzz/ctest-fuzz.sh builds each
# target with clang + ASan/UBSan into <build>/fuzz (outside CMake's own
# targets, so the normal build never needs clang) and fuzzes a scratch copy
# of its seeds for MR_FUZZ_SECONDS.  Skipped (77) without clang or
# libclang-rt-14-dev.  Long runs: tests/fuzz/README.md.
set(MR_FUZZ_SECONDS 20 CACHE STRING "seconds per fuzz target in ctest")
foreach(spec fuzz-gguf:8192 fuzz-safetensors:4096 fuzz-tokenizer:40000)
  string(REPLACE ":" ";" parts ${spec})
  list(GET parts 0 target)
  list(GET parts 1 max_len)
  add_test(NAME ${target}
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/ctest-fuzz.sh ${target} ${PROJECT_BINARY_DIR}
                   ${MR_FUZZ_SECONDS} ${max_len})
  math(EXPR fuzz_timeout "${MR_FUZZ_SECONDS} + 240")
  set_tests_properties(${target} PROPERTIES LABELS fuzz SKIP_RETURN_CODE 77 TIMEOUT ${fuzz_timeout})
endforeach()
