// A small process-wide pool of worker threads for the CPU attention code.
#pragma once

#include <cstdint>
#include <functional>

namespace fluxattn {

// Threads used by CPU attention (0 = hardware concurrency, the default).
void SetCpuAttentionThreads(int threads);
int CpuAttentionThreads();

// Calls fn(i) for every i in [0, n), spread over the pool; returns when all calls are done.
// Calls made from inside a running fn run serially on the calling thread.
void ParallelFor(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace fluxattn
