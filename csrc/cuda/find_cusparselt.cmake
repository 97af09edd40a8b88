# Finds the cuSPARSELt header for the wrapper (csrc/cuda/cusparselt.cpp). Sets
#   _ps24_lt_why       why the wrapper cannot be built ("" when it can)
#   _ps24_lt_include   the folder of cusparseLt.h, _ps24_lt_version its version ("0.8.0")
#   _ps24_lt_includes  the include folders the wrapper needs (with cusparse.h's for headers < 0.10)
#   _ps24_lt_min       the oldest cuSPARSELt the wrapper works with
# Included by cuda.cmake; `cmake -DPYSPARSE24_CUSPARSELT_ROOT=... -P find_cusparselt.cmake` runs the
# search alone and prints the result (tests/test_cuda_host.py does, on fake wheel layouts).
# The header is looked for, in order, in
#   1. CUSPARSELT_INCLUDE_DIR (-D): the folder that holds cusparseLt.h;
#   2. PYSPARSE24_CUSPARSELT_ROOT (environment or -D): a site-packages folder (or install prefix)
#      whose nvidia/cu13/include (wheel >= 0.9), nvidia/cusparselt/include (wheel 0.8.x) or include
#      holds it, e.g. a scratch venv's site-packages to build against another cuSPARSELt;
#   3. the nvidia-cusparselt-cu13 wheel of the Python that builds us (either layout).
# Headers before 0.10 include <cusparse.h> unconditionally: it must be beside them, in a sibling
# nvidia/*/include (the nvidia-cusparse wheel installs nvidia/cu13/include), or in the toolkit.
# The minimum is cuSPARSELt 0.8.0: the wrapper calls cusparseLtGetErrorName/String and
# cusparseLtMatmulAlgSelectionDestroy, which 0.8.0 introduced.
set(_ps24_lt_min "0.8.0")
if(DEFINED ENV{PYSPARSE24_CUSPARSELT_ROOT})
  set(PYSPARSE24_CUSPARSELT_ROOT "$ENV{PYSPARSE24_CUSPARSELT_ROOT}")
endif()
set(_ps24_lt_roots "")
if(PYSPARSE24_CUSPARSELT_ROOT)
  list(APPEND _ps24_lt_roots "${PYSPARSE24_CUSPARSELT_ROOT}")
elseif(Python_EXECUTABLE)
  execute_process(  # the site-packages folder that holds the wheel, whichever layout it has
    COMMAND ${Python_EXECUTABLE} -c
      "import importlib.metadata as m; print(m.distribution('nvidia-cusparselt-cu13').locate_file(''))"
    OUTPUT_VARIABLE _ps24_site OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(_ps24_site)
    list(APPEND _ps24_lt_roots "${_ps24_site}")
  endif()
endif()
set(_ps24_lt_include "")
if(CUSPARSELT_INCLUDE_DIR)
  set(_ps24_lt_candidates "${CUSPARSELT_INCLUDE_DIR}")
else()
  set(_ps24_lt_candidates "")
  foreach(root ${_ps24_lt_roots})
    list(APPEND _ps24_lt_candidates "${root}/nvidia/cu13/include" "${root}/nvidia/cusparselt/include" "${root}/include")
  endforeach()
endif()
foreach(dir ${_ps24_lt_candidates})
  if(NOT _ps24_lt_include AND EXISTS "${dir}/cusparseLt.h")
    set(_ps24_lt_include "${dir}")
  endif()
endforeach()

set(_ps24_lt_why "")        # why the wrapper is not built ("" when it is)
set(_ps24_lt_version "")    # the header's version
set(_ps24_lt_includes "")   # include folders the wrapper needs
if(NOT _ps24_lt_include)
  string(REPLACE ";" ", " _ps24_tried "${_ps24_lt_candidates}")
  set(_ps24_lt_why "no cusparseLt.h found (looked in: ${_ps24_tried}); pip install nvidia-cusparselt-cu13, or set PYSPARSE24_CUSPARSELT_ROOT")
else()
  file(READ "${_ps24_lt_include}/cusparseLt.h" _ps24_header)
  foreach(part MAJOR MINOR PATCH)
    string(REGEX MATCH "#define CUSPARSELT_VER_${part} +([0-9]+)" _ps24_match "${_ps24_header}")
    list(APPEND _ps24_lt_version "${CMAKE_MATCH_1}")
  endforeach()
  string(REPLACE ";" "." _ps24_lt_version "${_ps24_lt_version}")
  list(APPEND _ps24_lt_includes "${_ps24_lt_include}")
  if(_ps24_lt_version VERSION_LESS _ps24_lt_min)
    set(_ps24_lt_why "${_ps24_lt_include}/cusparseLt.h is cuSPARSELt ${_ps24_lt_version}; pysparse24 needs ${_ps24_lt_min} or newer")
  elseif(NOT _ps24_header MATCHES "cusparseLt_cusparse_stub.h")  # < 0.10: needs a real cusparse.h
    get_filename_component(_ps24_nvidia "${_ps24_lt_include}/../.." ABSOLUTE)
    file(GLOB _ps24_wheel_includes "${_ps24_nvidia}/*/include")
    set(_ps24_cusparse "")
    foreach(dir "${_ps24_lt_include}" ${_ps24_wheel_includes} ${CUDAToolkit_INCLUDE_DIRS})
      if(NOT _ps24_cusparse AND EXISTS "${dir}/cusparse.h")
        set(_ps24_cusparse "${dir}")
      endif()
    endforeach()
    if(_ps24_cusparse)
      list(APPEND _ps24_lt_includes "${_ps24_cusparse}")
    else()
      set(_ps24_lt_why "${_ps24_lt_include}/cusparseLt.h (cuSPARSELt ${_ps24_lt_version}) includes cusparse.h, found neither beside it, in ${_ps24_nvidia}/*/include nor in the CUDA toolkit (pip install nvidia-cusparse, or nvidia-cusparselt-cu13>=0.10)")
    endif()
  endif()
endif()
list(REMOVE_DUPLICATES _ps24_lt_includes)


if(CMAKE_SCRIPT_MODE_FILE)
  message("why=${_ps24_lt_why}")
  message("include=${_ps24_lt_include}")
  message("version=${_ps24_lt_version}")
  message("includes=${_ps24_lt_includes}")
endif()
