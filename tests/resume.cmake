# Resumable output, stop signals (issue 8): tests/resume/*.sh under
# mpirun --oversubscribe on the llama fixture (label mpi); the long kill
# test (30 random kills) is label slow.
set(MR_RESUME_DIR ${CMAKE_CURRENT_SOURCE_DIR}/resume)
add_test(NAME resume-kill COMMAND ${MR_RESUME_DIR}/kill-resume.sh $<TARGET_FILE:moerun>
         ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/llama 10)
add_test(NAME resume-signal COMMAND ${MR_RESUME_DIR}/signal-stop.sh $<TARGET_FILE:moerun>
         ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/llama)
add_test(NAME resume-refuse COMMAND ${MR_RESUME_DIR}/refuse.sh $<TARGET_FILE:moerun>
         ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/llama ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/qwen2)
set_tests_properties(resume-kill resume-signal resume-refuse PROPERTIES LABELS mpi TIMEOUT 200 RUN_SERIAL TRUE)
add_test(NAME resume-kill-long COMMAND ${MR_RESUME_DIR}/kill-resume.sh $<TARGET_FILE:moerun>
         ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/llama 30)
set_tests_properties(resume-kill-long PROPERTIES LABELS "mpi;slow" TIMEOUT 600 RUN_SERIAL TRUE)
