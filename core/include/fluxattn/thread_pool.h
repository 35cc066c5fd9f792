// A fixed set of worker threads running ParallelFor ranges. The dense math splits each matrix
// product over output features, so every call divides work the same way (results do not depend
// on timing).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fluxattn::models {

class ThreadPool {
 public:
  // `threads` <= 0: hardware concurrency. The calling thread is one of the workers.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return size_; }

  // Calls fn(begin, end) on `parts` disjoint ranges covering [0, n), ranges aligned to `align`,
  // one per worker, and waits for all of them.
  void ParallelFor(int64_t n, int64_t align, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop(int index);

  int size_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  std::vector<std::pair<int64_t, int64_t>> ranges_;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace fluxattn::models
