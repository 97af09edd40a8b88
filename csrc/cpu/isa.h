// Runtime SIMD dispatch. Kernels come in one translation unit per instruction set
// (foo.cpp = scalar, foo_avx2.cpp, foo_avx512.cpp, each compiled with its own -m flags), and the
// caller picks with active_isa(). Every path must give the same results; tests force each one.
#pragma once
#include <string>

namespace ps24::cpu {

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

Isa best_isa();                 // the widest instruction set this CPU supports
Isa active_isa();               // best_isa(), or the one forced by force_isa / PYSPARSE24_ISA
void force_isa(const std::string& name);  // "scalar" | "avx2" | "avx512" | "auto"; throws if unsupported
const char* isa_name(Isa isa);

}  // namespace ps24::cpu
