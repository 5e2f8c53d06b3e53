# mr_comm_nccl: the NCCL communicator (comm-nccl.c, plain C on the CUDA
# runtime API and nccl.h) and the all-reduce engine on the device over it
# (allreduce-cuda.c), a library of its own so that mr_runtime builds
# without CUDA.  Built when MR_HAVE_CUDA is ON and nccl.h and libnccl are
# found (in the CUDA toolkit, the system, or NCCL_HOME).
# On the CUDA emulator (tests/gpu/emu) it is built against emu-nccl.cc, NCCL's
# calls carried out over MPI on the emulator's device memory.
if(NOT MR_HAVE_CUDA)
  message(STATUS "moerun: NCCL communicator OFF (no CUDA)")
  return()
endif()
if(MR_CUDA_EMU)
  add_library(mr_nccl_emu STATIC ${MR_EMU_DIR}/emu-nccl.cc)
  mr_emu_target(mr_nccl_emu)
  target_compile_definitions(mr_nccl_emu PRIVATE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
  target_link_libraries(mr_nccl_emu PUBLIC mr_kernels_cuda MPI::MPI_C)
  add_library(mr_comm_nccl STATIC ${CMAKE_CURRENT_SOURCE_DIR}/comm-nccl.c ${CMAKE_CURRENT_SOURCE_DIR}/allreduce-cuda.c)
  mr_target_defaults(mr_comm_nccl)
  target_include_directories(mr_comm_nccl BEFORE PRIVATE ${MR_EMU_DIR}/include)
  target_link_libraries(mr_comm_nccl PUBLIC mr_runtime mr_kernels_cuda mr_nccl_emu)
  message(STATUS "moerun: NCCL communicator ON, on the CUDA emulator's NCCL (tests/gpu/emu/emu-nccl.cc)")
  return()
endif()
find_package(CUDAToolkit REQUIRED)
find_path(MR_NCCL_INCLUDE_DIR nccl.h
  HINTS $ENV{NCCL_HOME}/include ${CUDAToolkit_INCLUDE_DIRS} /usr/include /usr/local/include)
find_library(MR_NCCL_LIBRARY nccl
  HINTS $ENV{NCCL_HOME}/lib $ENV{NCCL_HOME}/lib64 ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
if(NOT MR_NCCL_INCLUDE_DIR OR NOT MR_NCCL_LIBRARY)
  message(STATUS "moerun: NCCL communicator OFF (nccl.h or libnccl not found; set NCCL_HOME)")
  return()
endif()
add_library(mr_comm_nccl STATIC ${CMAKE_CURRENT_SOURCE_DIR}/comm-nccl.c ${CMAKE_CURRENT_SOURCE_DIR}/allreduce-cuda.c)
mr_target_defaults(mr_comm_nccl)
target_include_directories(mr_comm_nccl SYSTEM PRIVATE ${MR_NCCL_INCLUDE_DIR})
target_link_libraries(mr_comm_nccl PUBLIC mr_runtime mr_kernels_cuda CUDA::cudart ${MR_NCCL_LIBRARY})
message(STATUS "moerun: NCCL communicator ON (${MR_NCCL_LIBRARY})")
