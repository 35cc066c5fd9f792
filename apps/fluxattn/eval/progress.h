// Progress of long work on stderr: a bar redrawn in place when stderr is a terminal, otherwise
// one plain line per step (readable in logs and CI).
#pragma once

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>

namespace fluxattn::eval {

class Progress {
 public:
  // `interactive`: draw a bar (normally: stderr is a TTY, see StderrIsTerminal()).
  Progress(std::ostream& out, std::string title, int64_t total, bool interactive);
  ~Progress();

  // Marks the running step (if any) done and announces the next one: shown next to the bar, or
  // printed as its own line.
  void Next(const std::string& detail);
  // Marks the running step done and ends the bar's line (called by the destructor too).
  void Finish();

 private:
  void Draw();

  std::ostream& out_;
  std::string title_;
  int64_t total_;
  int64_t done_ = 0;
  bool interactive_;
  bool running_ = false;
  bool finished_ = false;
  std::string detail_;
  std::chrono::steady_clock::time_point start_;
};

bool StderrIsTerminal();

}  // namespace fluxattn::eval
