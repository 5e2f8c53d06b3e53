# Text in, text out for `moerun generate` (tests/text/): prompts against the
# tokenizers library's ids, stop strings, error records, the OpenAI batch
# format, and a 2-rank data=2 run.  Needs the default model (scripts/setup.sh).
find_package(Python3 COMPONENTS Interpreter)
if(Python3_FOUND)
  add_test(NAME text-generate COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/text/test-text.py
           $<TARGET_FILE:moerun> ${PROJECT_SOURCE_DIR})
  set_tests_properties(text-generate PROPERTIES LABELS text TIMEOUT 600 RUN_SERIAL TRUE)
endif()
