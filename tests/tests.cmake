# Tests that take arguments: one reference check per committed fixture.
add_executable(check-reference ${CMAKE_CURRENT_SOURCE_DIR}/reference/check-reference.c
               ${CMAKE_CURRENT_SOURCE_DIR}/unit/harness.c)
mr_target_defaults(check-reference)
target_include_directories(check-reference PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit)
target_link_libraries(check-reference PRIVATE mr_runtime)
foreach(fx llama qwen2 mixtral qwen2_moe qwen3_moe deepseek_v3)
  add_test(NAME reference-${fx} COMMAND check-reference ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx})
  set_tests_properties(reference-${fx} PROPERTIES LABELS "unit;reference" TIMEOUT 300)
endforeach()
