# Tests that take arguments: one reference check per committed fixture.
add_executable(check-reference ${CMAKE_CURRENT_SOURCE_DIR}/reference/check-reference.c
               ${CMAKE_CURRENT_SOURCE_DIR}/unit/harness.c)
mr_target_defaults(check-reference)
target_include_directories(check-reference PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit)
target_link_libraries(check-reference PRIVATE mr_runtime)
# --backend cuda needs the CUDA backend: linked (and MR_REFERENCE_CUDA set)
# only when CMake built it; otherwise that option exits 77.  The ctests
# reference-gpu-<fixture> are registered in gpu.cmake.
if(TARGET mr_kernels_cuda)
  target_link_libraries(check-reference PRIVATE mr_kernels_cuda)
  target_compile_definitions(check-reference PRIVATE MR_REFERENCE_CUDA=1)
endif()
foreach(fx llama qwen2 mixtral qwen2_moe qwen3_moe deepseek_v3)
  add_test(NAME reference-${fx} COMMAND check-reference ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx})
  set_tests_properties(reference-${fx} PROPERTIES LABELS "unit;reference" TIMEOUT 300)
endforeach()

# bf16 weight matrices against transformers run with the same bf16
# roundings (expected-bf16.*, tests/reference/make_bf16_expect.py); and the
# same staged as on a device.
foreach(fx llama qwen2 mixtral qwen2_moe qwen3_moe deepseek_v3)
  add_test(NAME reference-bf16-${fx} COMMAND check-reference --weights bf16 ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx})
  set_tests_properties(reference-bf16-${fx} PROPERTIES LABELS "unit;reference" TIMEOUT 300)
  add_test(NAME reference-staged-bf16-${fx}
           COMMAND check-reference --weights bf16 ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx})
  set_tests_properties(reference-staged-bf16-${fx} PROPERTIES LABELS "unit;reference" TIMEOUT 300
                       ENVIRONMENT MR_CPU_AS_DEVICE=1)
endforeach()

# The same on the CPU backend presented as a device (MR_CPU_AS_DEVICE=1:
# host_memory 0), so the model keeps separate host mirrors and moves every
# buffer as on a GPU: a missing upload or download fails here, not on the
# first GPU.  And plans whose tensor, expert and pipeline exchanges are
# staged through those mirrors over MPI.
foreach(fx llama qwen2 mixtral qwen2_moe qwen3_moe deepseek_v3)
  add_test(NAME reference-staged-${fx} COMMAND check-reference ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx})
  set_tests_properties(reference-staged-${fx} PROPERTIES LABELS "unit;reference" TIMEOUT 300
                       ENVIRONMENT MR_CPU_AS_DEVICE=1)
endforeach()
foreach(fx qwen2 deepseek_v3)
  set(plans tensor=2 pipeline=2 tensor=2,pipeline=2)
  if(fx STREQUAL "deepseek_v3")
    list(APPEND plans data=2,expert=2 tensor=2,expert=2 data=2,pipeline=2,expert=2)
  endif()
  add_test(NAME plans-staged-${fx} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/plan-matrix.sh $<TARGET_FILE:moerun>
           ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx} ${plans})
  set_tests_properties(plans-staged-${fx} PROPERTIES LABELS mpi TIMEOUT 900 RUN_SERIAL TRUE
                       ENVIRONMENT MR_CPU_AS_DEVICE=1)
endforeach()

# bf16 weight matrices (MR_WEIGHTS=bf16) under tensor and pipeline plans on
# qwen2 (tied embeddings: a last stage keeps only the bf16 LM head).  Its
# checkpoint is bf16 already, so the tensor split changes no rounding and
# the plans must give the one-rank tokens and logits; models whose sums
# reorder under a plan (MoE) move by bf16 rounding flips instead, which the
# reference-bf16-* checks bound.
add_test(NAME plans-bf16-qwen2 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/plan-matrix.sh $<TARGET_FILE:moerun>
         ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/qwen2 tensor=2 pipeline=2 tensor=2,pipeline=2)
set_tests_properties(plans-bf16-qwen2 PROPERTIES LABELS mpi TIMEOUT 600 RUN_SERIAL TRUE
                     ENVIRONMENT MR_WEIGHTS=bf16)

# Plan invariance over real MPI (mpirun -np N --oversubscribe): every plan
# gives exactly the tokens of one rank (greedy and seeded sampling).
set(MR_DENSE_PLANS tensor=2 tensor=4 pipeline=2 pipeline=4 data=2 data=2,tensor=2 tensor=2,pipeline=2
    data=2,pipeline=2 data=2,pipeline=2,tensor=2 data=2,tensor=2,micro_batches=1
    pipeline=2,layers_per_stage=3:1)
set(MR_MOE_PLANS data=2,expert=2 data=4,expert=2 tensor=2,expert=2 data=4,expert=4 data=2,tensor=2,expert=2
    data=2,tensor=2,expert=4 data=8,expert=8 data=2,pipeline=2,expert=2)
foreach(fx llama qwen2 mixtral qwen2_moe qwen3_moe deepseek_v3)
  set(plans ${MR_DENSE_PLANS})
  if(fx MATCHES "mixtral|moe|deepseek")
    list(APPEND plans ${MR_MOE_PLANS})
  endif()
  add_test(NAME plans-${fx} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/plan-matrix.sh $<TARGET_FILE:moerun>
           ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx} ${plans})
  set_tests_properties(plans-${fx} PROPERTIES LABELS mpi TIMEOUT 900 RUN_SERIAL TRUE)
endforeach()

# The same with overlap on (MR_ALLREDUCE_OVERLAP=1): row-parallel GEMMs
# reduced chunk by chunk on the progress thread, and for models with shared
# experts the expert-parallel combine in flight while they compute; the
# sums keep their order, so the tokens must still be one rank's.
foreach(fx qwen2_moe deepseek_v3)
  add_test(NAME plans-${fx}-overlap COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/plan-matrix.sh $<TARGET_FILE:moerun>
           ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx} tensor=2 data=2,expert=2 tensor=2,expert=2 data=4,expert=4
           data=2,tensor=2,expert=4 data=2,pipeline=2,expert=2)
  set_tests_properties(plans-${fx}-overlap PROPERTIES LABELS mpi TIMEOUT 600 RUN_SERIAL TRUE
                       ENVIRONMENT MR_ALLREDUCE_OVERLAP=1)
endforeach()

# Deterministic mode (comm.deterministic, MR_DETERMINISTIC=true): the same
# bits for every plan, batch and thread count.  check-reference
# --deterministic holds the fixed-order arithmetic to transformers (fp32 and
# bf16) and each prompt's logits alone on one thread to the bits of the
# batch on two; the plan runs differ from the one-rank run in batch size,
# token budget and threads too, and their logits must have its bits
# (MR_PLANS_LOGIT_TOL=bits; without the mode, tensor=2 on qwen2 differs in
# 93 of 93 rows).  Staged through device mirrors, and bf16 MoE, as well.
set(MR_DET_ENV MR_DETERMINISTIC=true MR_PLANS_LOGIT_TOL=bits
    "MR_PLANS_ARGS=--max-batch 5 --token-budget 13 --threads 2")
foreach(fx llama qwen2 mixtral qwen2_moe qwen3_moe deepseek_v3)
  add_test(NAME reference-det-${fx} COMMAND check-reference --deterministic ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx})
  set_tests_properties(reference-det-${fx} PROPERTIES LABELS "unit;reference" TIMEOUT 300)
  set(plans ${MR_DENSE_PLANS})
  if(fx MATCHES "mixtral|moe|deepseek")
    list(APPEND plans ${MR_MOE_PLANS})
  endif()
  add_test(NAME plans-det-${fx} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/plan-matrix.sh $<TARGET_FILE:moerun>
           ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx} ${plans})
  set_tests_properties(plans-det-${fx} PROPERTIES LABELS mpi TIMEOUT 900 RUN_SERIAL TRUE ENVIRONMENT "${MR_DET_ENV}")
endforeach()
add_test(NAME reference-det-bf16-qwen2_moe
         COMMAND check-reference --deterministic --weights bf16 ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/qwen2_moe)
set_tests_properties(reference-det-bf16-qwen2_moe PROPERTIES LABELS "unit;reference" TIMEOUT 300)
add_test(NAME plans-det-staged-deepseek_v3 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/plan-matrix.sh $<TARGET_FILE:moerun>
         ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/deepseek_v3 tensor=2 tensor=2,pipeline=2 data=2,expert=2 tensor=2,expert=2
         data=2,pipeline=2,expert=2)
set_tests_properties(plans-det-staged-deepseek_v3 PROPERTIES LABELS mpi TIMEOUT 600 RUN_SERIAL TRUE
                     ENVIRONMENT "${MR_DET_ENV};MR_CPU_AS_DEVICE=1")
add_test(NAME plans-det-bf16-qwen2_moe COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/plan-matrix.sh $<TARGET_FILE:moerun>
         ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/qwen2_moe tensor=2 tensor=4 tensor=2,expert=2 data=2,tensor=2,expert=4
         data=8,expert=8)
set_tests_properties(plans-det-bf16-qwen2_moe PROPERTIES LABELS mpi TIMEOUT 600 RUN_SERIAL TRUE
                     ENVIRONMENT "${MR_DET_ENV};MR_WEIGHTS=bf16")

# Shard reads measured by the loader under mpirun.
add_executable(test-shard-bytes ${CMAKE_CURRENT_SOURCE_DIR}/mpi/test-shard-bytes.c ${CMAKE_CURRENT_SOURCE_DIR}/unit/harness.c)
mr_target_defaults(test-shard-bytes)
target_include_directories(test-shard-bytes PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit)
target_link_libraries(test-shard-bytes PRIVATE mr_runtime)
set(MR_MPIRUN env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 mpirun --oversubscribe --bind-to none)
foreach(fx llama qwen2 mixtral qwen2_moe qwen3_moe deepseek_v3)
  add_test(NAME shard-bytes-tensor-${fx} COMMAND ${MR_MPIRUN} -np 2 $<TARGET_FILE:test-shard-bytes> tensor
           ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx})
  set_tests_properties(shard-bytes-tensor-${fx} PROPERTIES LABELS mpi TIMEOUT 150 RUN_SERIAL TRUE)
endforeach()
foreach(fx mixtral qwen2_moe qwen3_moe deepseek_v3)
  add_test(NAME shard-bytes-expert-${fx} COMMAND ${MR_MPIRUN} -np 4 $<TARGET_FILE:test-shard-bytes> expert
           ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx})
  set_tests_properties(shard-bytes-expert-${fx} PROPERTIES LABELS mpi TIMEOUT 150 RUN_SERIAL TRUE)
endforeach()

# A failing or killed rank ends the job within seconds (run under timeouts).
add_test(NAME mpi-failures COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/failures.sh $<TARGET_FILE:moerun>
         ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/llama)
set_tests_properties(mpi-failures PROPERTIES LABELS mpi TIMEOUT 200 RUN_SERIAL TRUE)
add_test(NAME mpi-launch COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/launch.sh ${PROJECT_BINARY_DIR}
         ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/qwen2)
set_tests_properties(mpi-launch PROPERTIES LABELS mpi TIMEOUT 120 RUN_SERIAL TRUE)

add_executable(compare-logits ${CMAKE_CURRENT_SOURCE_DIR}/mpi/compare-logits.c)
mr_target_defaults(compare-logits)
target_link_libraries(compare-logits PRIVATE ${MATH_LIB})

# The all-reduce engine: every algorithm x compression on 2..8 ranks.
add_executable(test-allreduce ${CMAKE_CURRENT_SOURCE_DIR}/mpi/test-allreduce.c ${CMAKE_CURRENT_SOURCE_DIR}/unit/harness.c)
mr_target_defaults(test-allreduce)
target_include_directories(test-allreduce PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit)
target_link_libraries(test-allreduce PRIVATE mr_runtime)
foreach(np 2 3 4 5 6 7 8)
  add_test(NAME allreduce-np${np} COMMAND ${MR_MPIRUN} -np ${np} $<TARGET_FILE:test-allreduce>)
  set_tests_properties(allreduce-np${np} PROPERTIES LABELS mpi TIMEOUT 150 RUN_SERIAL TRUE)
endforeach()

# Compressed tensor all-reduce on SmolLM2 tensor=3: token agreement with
# uncompressed (bf16 >= 99%, int8 >= 95%).  Needs the default model.
add_executable(agreement ${CMAKE_CURRENT_SOURCE_DIR}/compression/agreement.c)
mr_target_defaults(agreement)
target_link_libraries(agreement PRIVATE ${MATH_LIB})
add_test(NAME compression-agreement COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/compression/agreement.sh
         $<TARGET_FILE:moerun> $<TARGET_FILE:agreement> ${PROJECT_SOURCE_DIR}/models/smollm2-135m-instruct-q4_1.gguf)
set_tests_properties(compression-agreement PROPERTIES LABELS mpi TIMEOUT 900 RUN_SERIAL TRUE SKIP_RETURN_CODE 77)
