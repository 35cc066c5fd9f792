// The attention code's view of the process-wide CPU thread pool (fluxattn/thread_pool.h): the
// same pool as the model's dense math, sized by the same setting.
#pragma once

#include <cstdint>
#include <functional>

#include "fluxattn/thread_pool.h"

namespace fluxattn {

// Threads of the process-wide pool (0 = hardware concurrency, the default); the same as
// SetCpuThreads / CpuThreads.
inline void SetCpuAttentionThreads(int threads) { SetCpuThreads(threads); }
inline int CpuAttentionThreads() { return CpuThreads(); }

// Calls fn(i) for every i in [0, n), spread over the pool; returns when all calls are done.
// Calls made from inside a running fn run serially on the calling thread.
inline void ParallelFor(int64_t n, const std::function<void(int64_t)>& fn) {
  CpuParallelFor(n, fn);
}

}  // namespace fluxattn
