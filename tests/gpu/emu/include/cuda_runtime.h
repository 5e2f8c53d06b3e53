/* Stand-in for the CUDA runtime's header in the emulator build
 * (tests/gpu/emu/README.md): the device side (emu.h) and the runtime API
 * (cuda_runtime_api.h) that kernels/cuda uses, with the real names, values
 * and meanings, carried out on the CPU by emu-runtime.cc.  Not the NVIDIA
 * header; nothing here talks to a GPU. */
#ifndef MR_EMU_CUDA_RUNTIME_H
#define MR_EMU_CUDA_RUNTIME_H

#include "../emu.h"
#include "cuda_runtime_api.h"

template <typename T> static inline cudaError_t cudaMalloc(T **p, size_t bytes) {
    return cudaMalloc((void **)p, bytes);
}

#endif
