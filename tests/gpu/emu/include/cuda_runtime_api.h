/* Stand-in (tests/gpu/emu): the runtime API is all in cuda_runtime.h. */
#include "cuda_runtime.h"
