# FLUXATTN_CUDA=AUTO enables CUDA when a toolkit is found (default /usr/local/cuda), ON requires
# it, OFF disables it. Result: FLUXATTN_HAS_CUDA.
set(FLUXATTN_HAS_CUDA OFF)
string(TOUPPER "${FLUXATTN_CUDA}" _fa_cuda)
if(NOT _fa_cuda STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS "/usr/local/cuda/bin/nvcc")
    set(CMAKE_CUDA_COMPILER "/usr/local/cuda/bin/nvcc")
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90a)
    endif()
    enable_language(CUDA)
    # CMake 3.25 does not know nvcc's C++20 flag (nvcc >= 12 has it); teach it, so that CUDA
    # sources follow CMAKE_CXX_STANDARD like the C++ ones.
    if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(FLUXATTN_HAS_CUDA ON)
  elseif(_fa_cuda STREQUAL "ON")
    message(FATAL_ERROR "FLUXATTN_CUDA=ON but no CUDA compiler was found (looked in PATH and /usr/local/cuda/bin)")
  endif()
endif()
message(STATUS "FluxAttn CUDA support: ${FLUXATTN_HAS_CUDA}")

# cuDNN's fused attention (the dense prefill path of the CUDA attention): needs cudnn.h and the
# library from the toolkit, and the cuDNN frontend headers (tools/fetch-cudnn-frontend.sh).
# FLUXATTN_CUDNN=AUTO uses it when all three are found. Result: FLUXATTN_HAS_CUDNN.
set(FLUXATTN_CUDNN "AUTO" CACHE STRING "cuDNN attention: AUTO, ON or OFF")
set_property(CACHE FLUXATTN_CUDNN PROPERTY STRINGS AUTO ON OFF)
set(FLUXATTN_CUDNN_FRONTEND_DIR "${CMAKE_SOURCE_DIR}/.deps/cudnn-frontend/include" CACHE PATH
    "Folder holding cudnn_frontend.h")
set(FLUXATTN_HAS_CUDNN OFF)
string(TOUPPER "${FLUXATTN_CUDNN}" _fa_cudnn)
if(FLUXATTN_HAS_CUDA AND NOT _fa_cudnn STREQUAL "OFF")
  find_path(FLUXATTN_CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(FLUXATTN_CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR})
  if(FLUXATTN_CUDNN_INCLUDE_DIR AND FLUXATTN_CUDNN_LIBRARY
     AND EXISTS "${FLUXATTN_CUDNN_FRONTEND_DIR}/cudnn_frontend.h")
    set(FLUXATTN_HAS_CUDNN ON)
  endif()
endif()
if(_fa_cudnn STREQUAL "ON" AND NOT FLUXATTN_HAS_CUDNN)
  message(FATAL_ERROR "FLUXATTN_CUDNN=ON: expected CUDA, cudnn.h, libcudnn and "
          "${FLUXATTN_CUDNN_FRONTEND_DIR}/cudnn_frontend.h (tools/fetch-cudnn-frontend.sh); "
          "found include '${FLUXATTN_CUDNN_INCLUDE_DIR}', library '${FLUXATTN_CUDNN_LIBRARY}'")
endif()
message(STATUS "FluxAttn cuDNN attention: ${FLUXATTN_HAS_CUDNN}")
