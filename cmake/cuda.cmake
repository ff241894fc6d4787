# The CUDA backend: libdgemma_cuda, a separate library the core loads only when a CUDA device is
# asked for (native/src/cuda_loader.cpp), so the core imports and runs where there is no CUDA.
#   DGEMMA_CUDA=AUTO (default: build when nvcc is found) | ON (required) | OFF
#   DGEMMA_CUDA_ARCHS: the GPU architectures to compile for (CMake CUDA_ARCHITECTURES syntax).
# The CUDA runtime is linked statically: the library needs only the driver at run time.
set(DGEMMA_CUDA AUTO CACHE STRING "Build the CUDA backend: AUTO (when nvcc is found), ON or OFF")
set_property(CACHE DGEMMA_CUDA PROPERTY STRINGS AUTO ON OFF)
# Turing, Ampere, Ada, Hopper and Blackwell (data centre and consumer) machine code, and PTX of the
# newest for later cards. Hopper's is sm_90a (90a), the target that has the warpgroup instructions of
# cuda/wgmma.cu; its code runs on compute capability 9.0 only, which is every Hopper card. CI builds
# one architecture (90a) to stay fast.
set(DGEMMA_CUDA_ARCHS "75-real;80-real;86-real;89-real;90a-real;100-real;120" CACHE STRING
    "CUDA architectures of libdgemma_cuda")

set(_dgemma_cuda_build OFF)
if(DGEMMA_CUDA STREQUAL "ON")
  set(_dgemma_cuda_build ON)
elseif(DGEMMA_CUDA STREQUAL "AUTO")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(_dgemma_cuda_build ON)
  else()
    message(STATUS "dgemma: no CUDA compiler found; building without the CUDA backend")
  endif()
elseif(NOT DGEMMA_CUDA STREQUAL "OFF")
  message(FATAL_ERROR "DGEMMA_CUDA must be AUTO, ON or OFF, got '${DGEMMA_CUDA}'")
endif()

if(_dgemma_cuda_build)
  set(CMAKE_CUDA_ARCHITECTURES "${DGEMMA_CUDA_ARCHS}")
  set(CMAKE_CUDA_RUNTIME_LIBRARY Static)
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  message(STATUS "dgemma: CUDA backend for architectures ${DGEMMA_CUDA_ARCHS}")

  file(GLOB DGEMMA_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/native/src/cuda/*.cu)
  list(FILTER DGEMMA_CUDA_SOURCES EXCLUDE REGEX "plugin\\.cu$")
  add_library(dgemma_cuda_kernels OBJECT ${DGEMMA_CUDA_SOURCES})
  target_include_directories(dgemma_cuda_kernels PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/native/include
                                                         ${CMAKE_CURRENT_SOURCE_DIR}/native/src)
  set_target_properties(dgemma_cuda_kernels PROPERTIES POSITION_INDEPENDENT_CODE ON CUDA_VISIBILITY_PRESET hidden
                                                       CXX_VISIBILITY_PRESET hidden)
  # Every warning is an error: the CUDA build stays warning-free.
  target_compile_options(dgemma_cuda_kernels PRIVATE --Werror all-warnings -Xcompiler=-Wall,-Wextra,-Wno-unused-parameter)
  # The sampler's arithmetic is the contract (sampler.h): no fused multiply-add, as on the CPU.
  set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/native/src/cuda/sampler.cu PROPERTIES COMPILE_OPTIONS "-fmad=false")

  add_library(dgemma_cuda SHARED $<TARGET_OBJECTS:dgemma_cuda_kernels> ${CMAKE_CURRENT_SOURCE_DIR}/native/src/cuda/plugin.cu)
  target_include_directories(dgemma_cuda PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/native/include
                                                 ${CMAKE_CURRENT_SOURCE_DIR}/native/src)
  target_compile_options(dgemma_cuda PRIVATE --Werror all-warnings)
  # The plugin takes type_traits, make_tensor, sampler_temperature and dg::Error from the core.
  target_link_libraries(dgemma_cuda PRIVATE dgemma)
  set_target_properties(dgemma_cuda PROPERTIES CUDA_VISIBILITY_PRESET hidden BUILD_RPATH "$ORIGIN" INSTALL_RPATH "$ORIGIN")

  # The op-by-op check of bench/gpu_check.sh: the CPU and CUDA backends side by side in one program.
  add_executable(dgemma_cuda_opcheck ${CMAKE_CURRENT_SOURCE_DIR}/bench/cuda_opcheck.cpp
                 $<TARGET_OBJECTS:dgemma_core> $<TARGET_OBJECTS:dgemma_cuda_kernels>)
  target_include_directories(dgemma_cuda_opcheck PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/native/include
                                                         ${CMAKE_CURRENT_SOURCE_DIR}/native/src)
  target_link_libraries(dgemma_cuda_opcheck PRIVATE Threads::Threads ${CMAKE_DL_LIBS})
  set_target_properties(dgemma_cuda_opcheck PROPERTIES LINKER_LANGUAGE CUDA)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(dgemma_cuda_opcheck PRIVATE -Wall -Wextra -Wno-unused-parameter)
  endif()

  if(SKBUILD)
    install(TARGETS dgemma_cuda LIBRARY DESTINATION dgemma)
    install(TARGETS dgemma_cuda_opcheck RUNTIME DESTINATION dgemma)
  else()
    install(TARGETS dgemma_cuda LIBRARY DESTINATION lib)
  endif()
endif()
