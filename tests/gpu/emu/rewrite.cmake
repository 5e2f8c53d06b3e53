# cmake -DIN=kernels/cuda/x.cu -DOUT=build/.../x.cu.cc -P rewrite.cmake
# Turns a .cu file into C++ for the CUDA emulator (README.md): the two
# pieces of CUDA syntax a header cannot stand in for.
#   kernel<<<grid, block, shmem, stream>>>(args)
#     -> mr_emu_launch(kernel, grid, block, shmem, stream)(args)
#   extern __shared__ T name[];  ->  T *name = (T *)mr_emu_dyn_shared();
# A #line keeps the original file and lines in messages (__FILE__ too).
file(READ "${IN}" src)
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_]*)<<<" "mr_emu_launch(\\1, " src "${src}")
string(REGEX REPLACE ">>>\\(" ")(" src "${src}")
string(REGEX REPLACE "extern __shared__ ([A-Za-z_][A-Za-z0-9_ ]*[A-Za-z0-9_]) ([A-Za-z_][A-Za-z0-9_]*)\\[\\];"
       "\\1 *\\2 = (\\1 *)mr_emu_dyn_shared();" src "${src}")
if(src MATCHES "<<<|>>>|extern __shared__")
  message(FATAL_ERROR "${IN}: CUDA syntax the emulator's rewrite does not know")
endif()
file(WRITE "${OUT}.tmp" "#line 1 \"${IN}\"\n${src}")
file(RENAME "${OUT}.tmp" "${OUT}")
