# Included by CMakeLists.txt only when nvcc was found. Builds the GPU kernels (csrc/cuda/*.cu)
# into a static library linked into _C, and the cuSPARSELt wrapper when its header is found.
#
# - The CUDA runtime is linked statically and cuSPARSELt is dlopen'ed at first use, so _C imports
#   on machines without a driver, a GPU or the cuSPARSELt wheel.
# - Machine code for sm_80 (A100), sm_86 (RTX 30xx, A10), sm_89 (L4, RTX 40xx) and sm_90
#   (H100/H200), plus compute_90 PTX that newer GPUs JIT-compile. There is no Hopper-only code
#   (wgmma/TMA) to build for sm_90a: the kernels are memory-bound and use plain 16-byte accesses.
# - PYSPARSE24_CUDA_ARCHS (CMake variable or environment) overrides the list.

set(CMAKE_CUDA_ARCHITECTURES OFF)  # explicit -gencode flags below
set(CMAKE_CUDA_RUNTIME_LIBRARY Static)
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)

set(_ps24_default_archs "80;86;89;90")
if(DEFINED ENV{PYSPARSE24_CUDA_ARCHS})  # e.g. PYSPARSE24_CUDA_ARCHS=90 for a quick build on an H100
  set(_ps24_default_archs "$ENV{PYSPARSE24_CUDA_ARCHS}")
endif()
set(PYSPARSE24_CUDA_ARCHS "${_ps24_default_archs}" CACHE STRING "SM versions to build machine code for")
set(_ps24_gencode "")
foreach(arch ${PYSPARSE24_CUDA_ARCHS})
  list(APPEND _ps24_gencode "-gencode=arch=compute_${arch},code=sm_${arch}")
endforeach()
list(APPEND _ps24_gencode "-gencode=arch=compute_90,code=compute_90")

file(GLOB PS24_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/csrc/cuda/*.cu)
add_library(ps24_cuda STATIC ${PS24_CUDA_SOURCES} ${CMAKE_SOURCE_DIR}/csrc/cuda/gemm_spec.cpp)
target_include_directories(ps24_cuda PUBLIC ${CMAKE_SOURCE_DIR}/csrc)
target_compile_options(ps24_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:${_ps24_gencode} -Xcompiler=-fvisibility=hidden --expt-relaxed-constexpr>
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -fvisibility=hidden>)
set_target_properties(ps24_cuda PROPERTIES POSITION_INDEPENDENT_CODE ON CUDA_RUNTIME_LIBRARY Static)
target_link_libraries(ps24_cuda PUBLIC CUDA::cudart_static)

# cuSPARSELt: only its header is needed at build time (nvidia-cusparselt-cu13 wheel, found through
# the Python that builds us, or CUSPARSELT_INCLUDE_DIR). The header falls back to a bundled stub
# when the toolkit has no cusparse.h (cuSPARSELt >= 0.10); older wheels need a cusparse.h.
if(NOT CUSPARSELT_INCLUDE_DIR)
  execute_process(
    COMMAND ${Python_EXECUTABLE} -c
      "import importlib.metadata as m; print(m.distribution('nvidia-cusparselt-cu13').locate_file('nvidia/cu13/include'))"
    OUTPUT_VARIABLE CUSPARSELT_INCLUDE_DIR OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
endif()
set(_ps24_cusparselt_usable OFF)
if(CUSPARSELT_INCLUDE_DIR AND EXISTS "${CUSPARSELT_INCLUDE_DIR}/cusparseLt.h")
  # Headers before 0.10 include <cusparse.h> unconditionally: it must be beside them (the
  # nvidia-cusparse wheel installs it into the same nvidia/cu13/include) or in the toolkit.
  file(READ "${CUSPARSELT_INCLUDE_DIR}/cusparseLt.h" _ps24_header)
  if(_ps24_header MATCHES "cusparseLt_cusparse_stub.h" OR EXISTS "${CUSPARSELT_INCLUDE_DIR}/cusparse.h")
    set(_ps24_cusparselt_usable ON)
  else()
    foreach(dir ${CUDAToolkit_INCLUDE_DIRS})
      if(EXISTS "${dir}/cusparse.h")
        set(_ps24_cusparselt_usable ON)
      endif()
    endforeach()
  endif()
  if(NOT _ps24_cusparselt_usable)
    message(STATUS "pysparse24: ${CUSPARSELT_INCLUDE_DIR}/cusparseLt.h needs cusparse.h, found nowhere "
                   "(pip install 'nvidia-cusparselt-cu13>=0.10' or nvidia-cusparse)")
  endif()
endif()
set(_ps24_cusparselt_sources "")
if(_ps24_cusparselt_usable)
  message(STATUS "pysparse24: cuSPARSELt header in ${CUSPARSELT_INCLUDE_DIR} (library loaded at run time)")
  set(_ps24_cusparselt_sources ${CMAKE_SOURCE_DIR}/csrc/cuda/cusparselt.cpp)
  target_include_directories(_C PRIVATE ${CUSPARSELT_INCLUDE_DIR})
  target_compile_definitions(_C PRIVATE PYSPARSE24_WITH_CUSPARSELT)
else()
  message(STATUS "pysparse24: cuSPARSELt wrapper not built (no usable cusparseLt.h: pip install 'nvidia-cusparselt-cu13>=0.10')")
endif()

target_sources(_C PRIVATE ${CMAKE_SOURCE_DIR}/csrc/cuda/bindings_cuda.cpp ${_ps24_cusparselt_sources})
target_compile_definitions(_C PRIVATE PYSPARSE24_WITH_CUDA)
target_link_libraries(_C PRIVATE ps24_cuda ${CMAKE_DL_LIBS})
message(STATUS "pysparse24: CUDA kernels for sm_${PYSPARSE24_CUDA_ARCHS} + compute_90 PTX (nvcc ${CMAKE_CUDA_COMPILER_VERSION})")
