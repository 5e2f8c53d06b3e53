# GPU tests (label gpu): the CUDA backend against the CPU backend, op by op,
# the block codecs against runtime/compress.c byte for byte, and the model on
# the CUDA backend against the transformers fixtures.  Built when
# nvcc is found; exits 77 (skipped) on a machine without a CUDA device.
# gpu-floors (memory bandwidth, cuBLAS GEMM rates) is a program, not a test:
# tests/gpu/run.sh runs it on the GPU machine.
if(NOT MR_HAVE_CUDA)
  return()
endif()
if(NOT MR_CUDA_EMU)
  find_package(CUDAToolkit REQUIRED) # its targets are scoped to the directory
endif()
add_executable(test-gpu-ops ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test-gpu-ops.c
               ${CMAKE_CURRENT_SOURCE_DIR}/unit/harness.c)
mr_target_defaults(test-gpu-ops)
target_include_directories(test-gpu-ops PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit)
target_link_libraries(test-gpu-ops PRIVATE mr_kernels_cuda mr_kernels mr_runtime)
add_test(NAME test-gpu-ops COMMAND test-gpu-ops)
set_tests_properties(test-gpu-ops PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 600)

# On the emulator: its own test, and the op test again with blocks and
# threads in the other order and fibers for every kernel (a race between
# threads that the order decides changes a result).
if(MR_CUDA_EMU)
  mr_emu_rewrite(MR_EMU_TEST_GEN ${CMAKE_CURRENT_SOURCE_DIR}/gpu/emu/test-emu.cu)
  add_executable(test-emu ${MR_EMU_TEST_GEN})
  mr_emu_target(test-emu)
  target_link_libraries(test-emu PRIVATE mr_kernels_cuda)
  add_test(NAME test-emu COMMAND test-emu)
  # its NCCL (emu-nccl.cc) on its own: results, refusals, and two misuses
  # that must abort every rank with a message
  add_executable(test-emu-nccl ${CMAKE_CURRENT_SOURCE_DIR}/gpu/emu/test-emu-nccl.c
                 ${CMAKE_CURRENT_SOURCE_DIR}/unit/harness.c)
  mr_target_defaults(test-emu-nccl)
  target_include_directories(test-emu-nccl BEFORE PRIVATE ${MR_EMU_DIR}/include ${CMAKE_CURRENT_SOURCE_DIR}/unit)
  target_link_libraries(test-emu-nccl PRIVATE mr_nccl_emu)
  set(mr_mpirun env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 mpirun --oversubscribe
      --bind-to none)
  add_test(NAME test-emu-nccl COMMAND env MR_EMU_DEVICES=2 ${mr_mpirun} -np 3 $<TARGET_FILE:test-emu-nccl>)
  add_test(NAME test-emu-nccl-mismatch COMMAND ${mr_mpirun} -np 2 $<TARGET_FILE:test-emu-nccl> mismatch)
  add_test(NAME test-emu-nccl-recv-size COMMAND ${mr_mpirun} -np 2 $<TARGET_FILE:test-emu-nccl> recv-size)
  set_tests_properties(test-emu-nccl test-emu-nccl-mismatch test-emu-nccl-recv-size PROPERTIES LABELS gpu
                       TIMEOUT 150 RUN_SERIAL TRUE)
  set_tests_properties(test-emu-nccl-mismatch PROPERTIES PASS_REGULAR_EXPRESSION
                       "collective #[0-9]+ of communicator rank 0: ncclAllReduce\\(count 10.*rank 1 calls kind 1 \\(count 11")
  set_tests_properties(test-emu-nccl-recv-size PROPERTIES PASS_REGULAR_EXPRESSION
                       "ncclRecv of 8 bytes from rank 0 got a longer send")
  add_test(NAME test-gpu-ops-reverse COMMAND test-gpu-ops)
  set_tests_properties(test-emu test-gpu-ops-reverse PROPERTIES LABELS gpu TIMEOUT 300)
  set_tests_properties(test-gpu-ops-reverse PROPERTIES ENVIRONMENT "MR_EMU_ORDER=reverse;MR_EMU_FIBERS=always")
  # No device allocation in the decode loop (its allocation count, MR_EMU_STATS).
  foreach(fw llama:fp32 deepseek_v3:bf16)
    string(REPLACE ":" ";" fw ${fw})
    list(GET fw 0 fx)
    list(GET fw 1 wt)
    add_test(NAME decode-no-alloc-${fx} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/gpu/emu/decode-no-alloc.sh
             $<TARGET_FILE:moerun> ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx} ${wt})
    set_tests_properties(decode-no-alloc-${fx} PROPERTIES LABELS gpu TIMEOUT 300)
  endforeach()
endif()

# The transformers reference checks (tests.cmake's check-reference) on the
# CUDA backend: same fixtures, fp32, tolerance 1e-4, identical greedy ids.
foreach(fx llama qwen2 mixtral qwen2_moe qwen3_moe deepseek_v3)
  add_test(NAME reference-gpu-${fx} COMMAND check-reference --backend cuda
           ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx})
  set_tests_properties(reference-gpu-${fx} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 300)
  # bf16 weights (the GPU default) against expected-bf16.* (tests.cmake)
  add_test(NAME reference-gpu-bf16-${fx} COMMAND check-reference --backend cuda --weights bf16
           ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx})
  set_tests_properties(reference-gpu-bf16-${fx} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 300)
endforeach()

# (its measurements live in bench/gpu-floors-lib.cu, shared with bench-engine;
# on the emulator it is built as C++, and run small below: timings mean
# nothing there, the calls and the JSON do)
if(MR_CUDA_EMU)
  mr_emu_rewrite(MR_FLOORS_GEN ${CMAKE_CURRENT_SOURCE_DIR}/gpu/gpu-floors.cu)
  add_executable(gpu-floors ${MR_FLOORS_GEN})
  mr_emu_target(gpu-floors)
else()
  add_executable(gpu-floors ${CMAKE_CURRENT_SOURCE_DIR}/gpu/gpu-floors.cu)
  set_target_properties(gpu-floors PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
  target_compile_options(gpu-floors PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings -Xcompiler=-Wall,-Wextra,-Werror>)
endif()
target_link_libraries(gpu-floors PRIVATE mr_bench_gpu)

# The NCCL communicator against the MPI one, a GPU per rank
# (runtime/nccl.cmake makes mr_comm_nccl when NCCL is found).
if(TARGET mr_comm_nccl)
  add_executable(test-nccl-comm ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test-nccl-comm.c
                 ${CMAKE_CURRENT_SOURCE_DIR}/unit/harness.c)
  mr_target_defaults(test-nccl-comm)
  target_include_directories(test-nccl-comm PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit)
  if(MR_CUDA_EMU)
    target_include_directories(test-nccl-comm BEFORE PRIVATE ${MR_EMU_DIR}/include)
    target_link_libraries(test-nccl-comm PRIVATE mr_comm_nccl mr_runtime ${MATH_LIB})
  else()
    target_link_libraries(test-nccl-comm PRIVATE mr_comm_nccl mr_runtime CUDA::cudart ${MATH_LIB})
  endif()
  # np 1: every op on a NCCL communicator of one rank (what a one-GPU
  # machine can run); np 2: the real exchange, or on one GPU the refusal.
  foreach(np 1 2)
    add_test(NAME nccl-comm-np${np} COMMAND env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120
             mpirun --oversubscribe --bind-to none -np ${np} $<TARGET_FILE:test-nccl-comm>)
    set_tests_properties(nccl-comm-np${np} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 150 RUN_SERIAL TRUE)
  endforeach()
  # On the emulator (NCCL over MPI, emu-nccl.cc) each process has its own
  # devices: with MR_EMU_DEVICES=4 ranks get a GPU each and the exchange
  # runs (np 2 and 4, sub-groups of 2); np2 above, one device, is the refusal.
  if(MR_CUDA_EMU)
    foreach(np 2 4)
      add_test(NAME nccl-comm-emu-np${np} COMMAND env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
               MR_EMU_DEVICES=4 timeout 240 mpirun --oversubscribe --bind-to none -np ${np}
               $<TARGET_FILE:test-nccl-comm>)
      set_tests_properties(nccl-comm-emu-np${np} PROPERTIES LABELS gpu TIMEOUT 300 RUN_SERIAL TRUE)
    endforeach()
  endif()
endif()

# Plans on the one GPU of the machine (MR_DEVICE=cuda): several ranks share
# it, so their tensor and expert groups fall back to MPI with host staging;
# every plan must give the one-rank GPU run's tokens and logits within 1e-4
# (tests/mpi/plan-matrix.sh).  In fp32 (MR_WEIGHTS): with bf16 weights, the
# GPU default, a plan's fp32 all-reduce rounds differently from one rank's
# sum, ~1e-7, and that flips bf16 roundings of the next layer's input (the
# CPU backend too; DESIGN contract 2 is fp32).  On the emulator (MR_CUDA_EMU)
# if-gpu.sh runs them without a GPU.
foreach(fx llama deepseek_v3)
  set(plans tensor=2 pipeline=2 data=2 tensor=2,pipeline=2)
  if(fx STREQUAL "deepseek_v3")
    list(APPEND plans data=2,expert=2 tensor=2,expert=2)
  endif()
  add_test(NAME plans-gpu-${fx} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/gpu/if-gpu.sh
           ${CMAKE_CURRENT_SOURCE_DIR}/mpi/plan-matrix.sh $<TARGET_FILE:moerun>
           ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx} ${plans})
  set_tests_properties(plans-gpu-${fx} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 900 RUN_SERIAL TRUE
                       ENVIRONMENT "MR_DEVICE=cuda;MR_WEIGHTS=fp32;MR_CUDA_EMU=$<BOOL:${MR_CUDA_EMU}>")
endforeach()

# Deterministic mode on the GPU (kernels/cuda/cuda-fixed.cu, the CPU's
# fixed-order product bit for bit): transformers within 1e-4 and each prompt
# alone with the batched run's bits; every plan with the one-rank GPU run's
# bits, in bf16 (the GPU default: the mode makes bf16 plans exact too),
# with another batch size and token budget than the one-rank run.
foreach(fx llama qwen2_moe deepseek_v3)
  add_test(NAME reference-gpu-det-${fx} COMMAND check-reference --backend cuda --deterministic
           ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx})
  set_tests_properties(reference-gpu-det-${fx} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 300)
endforeach()
set(MR_GPU_DET_ENV MR_DEVICE=cuda MR_DETERMINISTIC=true MR_PLANS_LOGIT_TOL=bits
    "MR_PLANS_ARGS=--max-batch 5 --token-budget 13" MR_CUDA_EMU=$<BOOL:${MR_CUDA_EMU}>)
foreach(fx llama deepseek_v3)
  set(plans tensor=2 pipeline=2 data=2,tensor=2)
  if(fx STREQUAL "deepseek_v3")
    list(APPEND plans tensor=2,expert=2 data=2,expert=2)
  endif()
  add_test(NAME plans-gpu-det-${fx} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/gpu/if-gpu.sh
           ${CMAKE_CURRENT_SOURCE_DIR}/mpi/plan-matrix.sh $<TARGET_FILE:moerun>
           ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx} ${plans})
  set_tests_properties(plans-gpu-det-${fx} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 900 RUN_SERIAL TRUE
                       ENVIRONMENT "${MR_GPU_DET_ENV}")
endforeach()

# On the emulator, the same plans with a GPU per rank (MR_EMU_DEVICES=4):
# the tensor and expert groups are NCCL communicators (emu-nccl.cc), which
# every plan run's log must say; fp32 within 1e-4, and deterministic bf16
# with the one-rank run's bits.  (A real machine with one GPU cannot run
# these; with several, plans-gpu-* above take NCCL by themselves.)
if(MR_CUDA_EMU)
  set(MR_GPU_NCCL_ENV MR_EMU_DEVICES=4 MR_CUDA_EMU=1 "MR_PLANS_LOG_EXPECT=group: communicator nccl")
  foreach(fx llama deepseek_v3)
    set(plans tensor=2 tensor=2,pipeline=2 data=2,tensor=2)
    if(fx STREQUAL "deepseek_v3")
      set(plans tensor=2 data=2,expert=2 tensor=2,expert=2 tensor=2,pipeline=2,expert=2)
    endif()
    add_test(NAME plans-gpu-nccl-${fx} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/plan-matrix.sh
             $<TARGET_FILE:moerun> ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx} ${plans})
    set_tests_properties(plans-gpu-nccl-${fx} PROPERTIES LABELS gpu TIMEOUT 900 RUN_SERIAL TRUE
                         ENVIRONMENT "MR_DEVICE=cuda;MR_WEIGHTS=fp32;${MR_GPU_NCCL_ENV}")
  endforeach()
  # Overlap on: the expert combine (NCCL all-to-all on its stream) in flight
  # on the progress thread while the shared experts compute on the backend's
  # stream (runtime/model.c, overlap_combine); the stream-order check holds
  # the two apart, and the debug log must say the overlap ran.
  add_test(NAME plans-gpu-nccl-overlap-deepseek_v3 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/plan-matrix.sh
           $<TARGET_FILE:moerun> ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/deepseek_v3 data=2,expert=2 tensor=2,expert=2)
  set_tests_properties(plans-gpu-nccl-overlap-deepseek_v3 PROPERTIES LABELS gpu TIMEOUT 900 RUN_SERIAL TRUE
                       ENVIRONMENT "MR_DEVICE=cuda;MR_WEIGHTS=fp32;MR_ALLREDUCE_OVERLAP=1;MR_LOG_LEVEL=debug;\
MR_EMU_DEVICES=4;MR_CUDA_EMU=1;MR_PLANS_LOG_EXPECT=group: communicator nccl && expert combine overlapped")
  add_test(NAME plans-gpu-det-nccl-deepseek_v3 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/plan-matrix.sh
           $<TARGET_FILE:moerun> ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/deepseek_v3 tensor=2 tensor=2,expert=2
           data=2,tensor=2)
  set_tests_properties(plans-gpu-det-nccl-deepseek_v3 PROPERTIES LABELS gpu TIMEOUT 900 RUN_SERIAL TRUE
                       ENVIRONMENT "${MR_GPU_DET_ENV};${MR_GPU_NCCL_ENV}")
endif()

# The tensor all-reduce engine on device buffers (runtime/allreduce-cuda.c,
# over NCCL) against the host engine on staged copies (comm.backend = mpi):
# ring, two-shot, hierarchical, every compression, overlap -- the same
# output bytes and logits bits.  A GPU per rank (skipped with fewer); on
# the emulator, MR_EMU_DEVICES=4.
foreach(fx llama deepseek_v3)
  add_test(NAME allreduce-device-vs-host-${fx} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/gpu/if-gpu.sh
           ${CMAKE_CURRENT_SOURCE_DIR}/gpu/allreduce-device-vs-host.sh $<TARGET_FILE:moerun>
           ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx})
  set_tests_properties(allreduce-device-vs-host-${fx} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 900
                       RUN_SERIAL TRUE ENVIRONMENT "MR_CUDA_EMU=$<BOOL:${MR_CUDA_EMU}>")
endforeach()

# bench-allreduce-gpu runs (a smoke test, 2 ranks, small sizes: its
# timings mean nothing here; tests/gpu/run.sh --bench measures on GPUs).
if(TARGET bench-allreduce-gpu)
  add_test(NAME bench-allreduce-gpu-smoke COMMAND env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
           MR_EMU_DEVICES=2 timeout 240 mpirun --oversubscribe --bind-to none -np 2
           $<TARGET_FILE:bench-allreduce-gpu> --sizes 4K,33K --iters 1 --warmup 0 --algos ring,two_shot
           --compressions none,int8)
  set_tests_properties(bench-allreduce-gpu-smoke PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 300
                       RUN_SERIAL TRUE PASS_REGULAR_EXPRESSION "two_shot +int8")
endif()
if(TARGET bench-overlap-gpu)
  add_test(NAME bench-overlap-gpu-smoke COMMAND env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
           MR_EMU_DEVICES=2 timeout 240 mpirun --oversubscribe --bind-to none -np 2
           $<TARGET_FILE:bench-overlap-gpu> --shapes smollm2-down --tokens 48 --iters 1 --chunk-kib 1
           --compression int8)
  set_tests_properties(bench-overlap-gpu-smoke PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 300
                       RUN_SERIAL TRUE PASS_REGULAR_EXPRESSION "smollm2-down +48 +576 +768 +16")
endif()

if(TARGET bench-moe-overlap-gpu)
  add_test(NAME bench-moe-overlap-gpu-smoke COMMAND env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
           MR_EMU_DEVICES=2 timeout 240 mpirun --oversubscribe --bind-to none -np 2
           $<TARGET_FILE:bench-moe-overlap-gpu> --shapes dsv2-lite --tokens 4 --iters 1)
  set_tests_properties(bench-moe-overlap-gpu-smoke PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 300
                       RUN_SERIAL TRUE PASS_REGULAR_EXPRESSION "dsv2-lite +4 +2048 +2816 +6 ")
endif()

# The floors and bench-engine --backend cuda run (small sizes, tiny models:
# the programs of tests/gpu/run.sh --bench, their timings meaning nothing
# here).  bench-engine's last row needs every decode step and the engine's
# whole greedy run at batch 4 done on the device.
add_test(NAME gpu-floors-smoke COMMAND gpu-floors --mib 4 --gemm 48
         --json ${CMAKE_CURRENT_BINARY_DIR}/gpu-floors-smoke.json)
set_tests_properties(gpu-floors-smoke PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 120
                     PASS_REGULAR_EXPRESSION "cuBLAS gemm bf16 -> bf16 +48x48x48 ")
foreach(row "llama;fp32;" "deepseek_v3;bf16;--synthetic")
  list(GET row 0 fx)
  list(GET row 1 wt)
  list(GET row 2 syn)
  add_test(NAME bench-engine-gpu-smoke-${fx} COMMAND bench-engine --model ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fx}
           ${syn} --backend cuda --weights ${wt} --batches 1,4 --prompt 8 --steps 2 --prefill-batch 2 --generate 3
           --floor-mib 4 --floor-gemm 32 --json ${CMAKE_CURRENT_BINARY_DIR}/bench-engine-gpu-smoke-${fx}.json)
  set_tests_properties(bench-engine-gpu-smoke-${fx} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 300
                       PASS_REGULAR_EXPRESSION "\ngenerate +4 +12 ")
endforeach()

# The default model (GGUF, text prompts through the tokenizer) on the CUDA
# backend: the CPU backend's output file byte for byte, fp32 weights, greedy.
add_test(NAME generate-gpu-smollm2 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/gpu/if-gpu.sh
         ${CMAKE_CURRENT_SOURCE_DIR}/gpu/generate-vs-cpu.sh $<TARGET_FILE:moerun>
         ${PROJECT_SOURCE_DIR}/models/smollm2-135m-instruct-q4_1.gguf ${PROJECT_SOURCE_DIR}/examples/prompts.jsonl)
set_tests_properties(generate-gpu-smollm2 PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 300
                     ENVIRONMENT "MR_CUDA_EMU=$<BOOL:${MR_CUDA_EMU}>")
