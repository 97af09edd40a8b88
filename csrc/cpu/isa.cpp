#include "cpu/isa.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace ps24::cpu {
namespace {

Isa detect() {
  __builtin_cpu_init();
  // The AVX-512 kernels use F, BW, VL, DQ, VBMI2 (compress) and VNNI together (Ice Lake, Zen 4 and
  // later). bfloat16 products also need BF16 (Zen 4, Sapphire Rapids); the matmul checks it itself.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx512vnni"))
    return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
    return Isa::Avx2;
  return Isa::Scalar;
}

Isa parse(const std::string& name) {
  if (name == "auto") return best_isa();
  Isa wanted;
  if (name == "scalar") wanted = Isa::Scalar;
  else if (name == "avx2") wanted = Isa::Avx2;
  else if (name == "avx512") wanted = Isa::Avx512;
  else throw std::invalid_argument("unknown ISA '" + name + "': expected scalar, avx2, avx512 or auto");
  if (static_cast<int>(wanted) > static_cast<int>(best_isa()))
    throw std::invalid_argument(std::string("this CPU does not support ") + name);
  return wanted;
}

std::atomic<int>& forced() {
  static std::atomic<int> value = [] {
    const char* env = std::getenv("PYSPARSE24_ISA");
    return static_cast<int>(env && *env ? parse(env) : best_isa());
  }();
  return value;
}

}  // namespace

Isa best_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa active_isa() { return static_cast<Isa>(forced().load()); }

void force_isa(const std::string& name) { forced().store(static_cast<int>(parse(name))); }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

}  // namespace ps24::cpu
