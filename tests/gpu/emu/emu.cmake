# mr_kernels_cuda built for the CUDA emulator (-DMR_CUDA_EMU=ON; README.md):
# the .cu files of kernels/cuda rewritten by rewrite.cmake and compiled as
# C++ against the stand-in headers in include/, with emu-runtime.cc in
# place of the CUDA runtime and cuBLAS.  Included from kernels/; test-emu
# (the emulator's own test) is added by tests/gpu.cmake.
set(MR_EMU_DIR ${PROJECT_SOURCE_DIR}/tests/gpu/emu CACHE INTERNAL "the CUDA emulator")

# mr_emu_rewrite(OUT_VAR a.cu ...): the rewritten C++ files, made at build time.
function(mr_emu_rewrite out_var)
  set(gen)
  foreach(cu ${ARGN})
    get_filename_component(name ${cu} NAME)
    set(out ${CMAKE_CURRENT_BINARY_DIR}/cuda-emu/${name}.cc)
    add_custom_command(OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -DIN=${cu} -DOUT=${out} -P ${MR_EMU_DIR}/rewrite.cmake
      DEPENDS ${cu} ${MR_EMU_DIR}/rewrite.cmake
      COMMENT "cuda-emu: rewriting ${name}")
    list(APPEND gen ${out})
  endforeach()
  set(${out_var} ${gen} PARENT_SCOPE)
endfunction()

# mr_emu_target(TARGET): the emulator's headers and flags.  No contraction:
# the codecs and scatter must give the CPU's bits, as nvcc is asked to
# (kernels/CMakeLists.txt); no sign-compare warnings (device code: nvcc
# never shows it to gcc).
function(mr_emu_target tgt)
  set_target_properties(${tgt} PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS ON)
  target_include_directories(${tgt} BEFORE PRIVATE ${MR_EMU_DIR}/include)
  target_compile_options(${tgt} PRIVATE -O2 -g -ffp-contract=off -Wall -Wextra -Werror
    -Wno-unknown-pragmas -Wno-unused-parameter -Wno-sign-compare)
endfunction()

file(GLOB MR_EMU_CU CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/kernels/cuda/*.cu)
mr_emu_rewrite(MR_EMU_GEN ${MR_EMU_CU})
add_library(mr_kernels_cuda STATIC ${MR_EMU_GEN} ${MR_EMU_DIR}/emu-runtime.cc ${MR_EMU_DIR}/emu-stream.cc
  ${MR_EMU_DIR}/emu-cublas.cc)
mr_emu_target(mr_kernels_cuda)
target_include_directories(mr_kernels_cuda PUBLIC ${PROJECT_SOURCE_DIR})
