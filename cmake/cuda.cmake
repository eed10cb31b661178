# CUDA part (TQ_CUDA=ON): the tq_cuda library from src/cuda/*.cu (sm_90a machine code plus
# compute_80 PTX as the portable target), GoogleTest executables from tests/cuda/test_*.cu
# (they skip themselves, reported as skipped, when no GPU is present) and the device benchmark
# bench/gpu/bench_decode.cu with the experimental decode modes of bench/gpu/decode_variants.cu.
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(WARNING "TQ_CUDA=ON but no CUDA compiler found: the CUDA kernels are not built")
  return()
endif()
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "90a-real;80-virtual")
endif()
enable_language(CUDA)
# Older CMake may know no C++20 dialect flag for nvcc: tell it.
if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)

file(GLOB TQ_CUDA_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/cuda/*.cu)
add_library(tq_cuda STATIC ${TQ_CUDA_SOURCES})
target_include_directories(tq_cuda PUBLIC ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/include)
target_link_libraries(tq_cuda PUBLIC tq)
target_compile_options(tq_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xptxas=-warn-spills>)
# The GPU runtime (src/gpu: weights, forward pass, scheduler) over the cache of src/cuda;
# cuBLAS for the GEMMs (a shared library: present on the device machine with the toolkit).
find_package(CUDAToolkit REQUIRED)
file(GLOB TQ_GPU_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/gpu/*.cu
  ${PROJECT_SOURCE_DIR}/src/gpu/*.cpp)
add_library(tq_gpu STATIC ${TQ_GPU_SOURCES})
target_include_directories(tq_gpu PUBLIC ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/include)
target_link_libraries(tq_gpu PUBLIC tq_cuda CUDA::cublas CUDA::cudart_static)

# Executables that are also run on the lent GPU machine: no shared libraries beyond libc there.
set(TQ_CUDA_PORTABLE_LINK -Wl,--as-needed -static-libstdc++ -static-libgcc)

if(TQ_BUILD_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
  enable_testing()
  file(GLOB TQ_CUDA_TESTS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/cuda/test_*.cu)
  foreach(src ${TQ_CUDA_TESTS})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src})
    target_link_libraries(${name} PRIVATE tq_gpu GTest::gtest GTest::gtest_main)
    target_link_options(${name} PRIVATE ${TQ_CUDA_PORTABLE_LINK})
    gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600)
  endforeach()
endif()

add_executable(bench_gpu_decode ${PROJECT_SOURCE_DIR}/bench/gpu/bench_decode.cu
                                ${PROJECT_SOURCE_DIR}/bench/gpu/decode_variants.cu)
target_link_libraries(bench_gpu_decode PRIVATE tq_cuda)
target_link_options(bench_gpu_decode PRIVATE ${TQ_CUDA_PORTABLE_LINK})
# The decode-step linear layers: cuBLAS + unfused kernels vs the small-batch kernel (linear.h).
add_executable(bench_gpu_linear ${PROJECT_SOURCE_DIR}/bench/gpu/bench_linear.cu)
target_link_libraries(bench_gpu_linear PRIVATE tq_gpu)
target_link_options(bench_gpu_linear PRIVATE ${TQ_CUDA_PORTABLE_LINK})
