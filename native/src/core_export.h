// libdgemma is built with hidden visibility; the core symbols that the CUDA backend library
// (libdgemma_cuda, see cuda_plugin.h) links against are exported with this mark, and no others.
#pragma once

#if defined(__GNUC__)
#define DG_CORE_EXPORT __attribute__((visibility("default")))
#else
#define DG_CORE_EXPORT
#endif
