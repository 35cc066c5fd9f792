// One anonymous mapping for a CPU model's weight matrices, backed by transparent huge pages
// where the kernel offers them (madvise(MADV_HUGEPAGE)). Decode streams every matrix once per
// token; with 4 KiB pages (a memory-mapped checkpoint's page cache) that stream also walks the
// page tables every 4 KiB of every row stream, with 2 MiB pages 512 times less often.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fluxattn::models {

class WeightArena {
 public:
  WeightArena() = default;
  WeightArena(const WeightArena&) = delete;
  WeightArena& operator=(const WeightArena&) = delete;
  ~WeightArena();

  // Whether CPU models copy their matrices into an arena: FLUXATTN_CPU_HUGEPAGES "1" (on), unset
  // or "0" (off: the default, as no decode gain was measured beyond the run-to-run spread and
  // the copy adds to the load time); anything else is an error naming the variable.
  static absl::StatusOr<bool> Wanted();

  // Maps `bytes` (rounded up to whole 2 MiB) and asks for huge pages; an error when the mapping
  // fails. Call once, before Take.
  absl::Status Reserve(size_t bytes);
  // The next `bytes` of the mapping, 4 KiB aligned; null when the reservation is exceeded.
  void* Take(size_t bytes);

  // Bytes of the mapping the kernel backs with huge pages now (from /proc/self/smaps), -1 when
  // that cannot be read.
  int64_t HugeBytes() const;
  size_t reserved() const { return size_; }

  // Asks the kernel to reclaim the pages under [p, p + bytes) (MADV_PAGEOUT): a memory-mapped
  // checkpoint's pages leave the process's resident set once their copy is in the arena.
  // Anonymous memory keeps its contents (it is swapped, or stays); nothing is freed that is used.
  static void PageOut(const void* p, size_t bytes);

  static constexpr size_t kAlign = 4096;

 private:
  void* base_ = nullptr;
  size_t size_ = 0;
  size_t used_ = 0;
};

}  // namespace fluxattn::models
