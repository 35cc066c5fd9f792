#include "thread_pool.h"

#include <algorithm>

namespace fluxattn::models {

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  size_ = threads;
  for (int i = 1; i < size_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  while (true) {
    std::pair<int64_t, int64_t> range;
    const std::function<void(int64_t, int64_t)>* job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      range = ranges_[index];
      job = job_;
    }
    if (range.first < range.second) (*job)(range.first, range.second);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t align,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  align = std::max<int64_t>(align, 1);
  const int64_t units = (n + align - 1) / align;
  if (size_ == 1 || units == 1) {
    fn(0, n);
    return;
  }
  std::vector<std::pair<int64_t, int64_t>> ranges(size_);
  const int64_t per = units / size_;
  const int64_t extra = units % size_;
  int64_t unit = 0;
  for (int i = 0; i < size_; ++i) {
    const int64_t count = per + (i < extra ? 1 : 0);
    ranges[i] = {std::min(n, unit * align), std::min(n, (unit + count) * align)};
    unit += count;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ranges_ = std::move(ranges);
    job_ = &fn;
    pending_ = size_ - 1;
    ++generation_;
  }
  start_cv_.notify_all();
  if (ranges_[0].first < ranges_[0].second) fn(ranges_[0].first, ranges_[0].second);
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return pending_ == 0; });
}

}  // namespace fluxattn::models
