# Included by CMakeLists.txt only when nvcc was found. Owned by the CUDA work (csrc/cuda).
message(STATUS "pysparse24: nvcc found at ${CMAKE_CUDA_COMPILER}; CUDA sources not yet added")
