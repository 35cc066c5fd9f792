// The one pool of worker threads of the CPU path: the model's dense math and the attention kernel
// both run on it, and `--threads` (or the config's `model.threads`) sizes it.
//
// Work is handed out as indices of a job; the calling thread works too, so a pool of size N has
// N - 1 workers. Which thread runs an index is not fixed, so callers whose results must not
// depend on the thread count give every output element to exactly one index and compute it in a
// fixed order there (the dense kernels and the attention kernel do).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

namespace fluxattn {

class ThreadPool {
 public:
  // `threads` <= 0: hardware concurrency.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const;

  // Calls fn(i) for every i in [0, n) and returns when all calls are done. Calls made from inside
  // a running fn (of any pool) run serially on the calling thread; concurrent callers take turns.
  void ParallelFor(int64_t n, const std::function<void(int64_t)>& fn);

  // Calls fn(begin, end) on consecutive ranges covering [0, n), each a multiple of `align` long
  // (but the last), at most one range per thread.
  void ParallelForRanges(int64_t n, int64_t align, const std::function<void(int64_t, int64_t)>& fn);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// The process-wide pool, created on first use with SetCpuThreads' size (0, the default: hardware
// concurrency). Resizing waits for a running job and must not be called from inside one.
void SetCpuThreads(int threads);
int CpuThreads();

// ThreadPool::ParallelFor and ParallelForRanges on the process-wide pool.
void CpuParallelFor(int64_t n, const std::function<void(int64_t)>& fn);
void CpuParallelForRanges(int64_t n, int64_t align,
                          const std::function<void(int64_t, int64_t)>& fn);

}  // namespace fluxattn
