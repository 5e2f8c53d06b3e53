# SmolLM2-135M-Instruct from its packaged Q4_1 GGUF against transformers
# loading the same file (fixture tests/fixtures/gguf-smollm2).  The model is
# not in git: scripts/setup.sh installs it; without it the test fails and
# says so.
add_executable(check-gguf-fidelity ${CMAKE_CURRENT_SOURCE_DIR}/reference/check-gguf-fidelity.c
               ${CMAKE_CURRENT_SOURCE_DIR}/unit/harness.c)
mr_target_defaults(check-gguf-fidelity)
target_include_directories(check-gguf-fidelity PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit)
target_link_libraries(check-gguf-fidelity PRIVATE mr_runtime)
add_test(NAME gguf-fidelity-smollm2
         COMMAND check-gguf-fidelity ${PROJECT_SOURCE_DIR}/models/smollm2-135m-instruct-q4_1.gguf
                 ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/gguf-smollm2)
set_tests_properties(gguf-fidelity-smollm2 PROPERTIES LABELS "unit;reference;gguf" TIMEOUT 300)
