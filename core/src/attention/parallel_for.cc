#include "fluxattn/attention/parallel_for.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace fluxattn {
namespace {

// Workers sleep on a condition variable and claim indices of the current job with an atomic
// counter; the calling thread claims indices too, so a pool of N-1 workers gives N threads.
class WorkerPool {
 public:
  explicit WorkerPool(int threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }
  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  void Run(int64_t n, const std::function<void(int64_t)>& fn) {
    std::unique_lock<std::mutex> lock(mutex_);
    fn_ = &fn;
    n_ = n;
    next_.store(0);
    active_ = static_cast<int>(workers_.size());
    ++generation_;
    lock.unlock();
    wake_.notify_all();
    Drain();
    lock.lock();
    done_.wait(lock, [this] { return active_ == 0; });
    fn_ = nullptr;
  }

 private:
  void Drain() {
    in_job_ = true;
    for (int64_t i = next_.fetch_add(1); i < n_; i = next_.fetch_add(1)) (*fn_)(i);
    in_job_ = false;
  }
  void WorkerLoop() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      lock.unlock();
      Drain();
      lock.lock();
      if (--active_ == 0) done_.notify_one();
    }
  }

 public:
  static thread_local bool in_job_;

 private:
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  std::atomic<int64_t> next_{0};
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

thread_local bool WorkerPool::in_job_ = false;

std::mutex& PoolMutex() {
  static std::mutex mutex;
  return mutex;
}
int requested_threads = 0;
WorkerPool* pool = nullptr;

int ResolveThreads(int requested) {
  if (requested > 0) return requested;
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

void SetCpuAttentionThreads(int threads) {
  std::lock_guard<std::mutex> lock(PoolMutex());
  requested_threads = std::max(0, threads);
  if (pool != nullptr && pool->threads() != ResolveThreads(requested_threads)) {
    delete pool;
    pool = nullptr;
  }
}

int CpuAttentionThreads() {
  std::lock_guard<std::mutex> lock(PoolMutex());
  return ResolveThreads(requested_threads);
}

void ParallelFor(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (n == 1 || WorkerPool::in_job_) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  // One job at a time; concurrent callers queue here rather than oversubscribing the cores.
  std::lock_guard<std::mutex> lock(PoolMutex());
  const int threads = ResolveThreads(requested_threads);
  if (threads == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  if (pool == nullptr) pool = new WorkerPool(threads);  // lives until exit, like the CPU device
  pool->Run(n, fn);
}

}  // namespace fluxattn
