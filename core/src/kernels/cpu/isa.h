// The x86-64 level the CPU kernels run at, detected once (FLUXATTN_CPU_ISA=avx2|baseline in the
// environment caps it).
#pragma once

namespace fluxattn::cpu::internal {

enum class Isa { kBaseline, kAvx2, kAvx512 };

Isa CurrentIsa();

}  // namespace fluxattn::cpu::internal
