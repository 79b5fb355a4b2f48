/* jetlink's TensorRT shim: a small C ABI over TensorRT's C++ runtime and the few CUDA runtime calls
 * the TensorRT engine backend needs. TensorRT has no C API; this file is the whole contract between
 * shim.cpp and src/engine/tensorrt/ffi.rs, and the two must change together.
 *
 * Supported: TensorRT 8.5, 8.6 and 10.x (the name-based IO tensor API: getNbIOTensors,
 * getIOTensorName, getTensorShape, setTensorAddress, enqueueV3).
 *
 * Conventions
 *  - Handles are opaque pointers; a NULL return means failure, and the reason is in the log ring.
 *  - Functions returning int32_t return 0 on success. jl_trt_* failures return -1 (details in the
 *    log ring); jl_cuda_* return the cudaError_t code (jl_cuda_error_string names it).
 *  - Nothing here throws: every entry point catches C++ exceptions and reports them as failures.
 *  - Streams and device pointers are raw `void*` so other CUDA users (cudarc link kernels) can share
 *    them.
 */
#ifndef JETLINK_TRT_SHIM_H
#define JETLINK_TRT_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct jl_trt_runtime jl_trt_runtime;
typedef struct jl_trt_engine jl_trt_engine;
typedef struct jl_trt_context jl_trt_context;

/* Most dimensions a tensor shape can have (TensorRT's Dims::MAX_DIMS). */
#define JL_TRT_MAX_DIMS 8

/* TensorIOMode values (same numbering as nvinfer1::TensorIOMode). */
#define JL_TRT_IO_NONE 0
#define JL_TRT_IO_INPUT 1
#define JL_TRT_IO_OUTPUT 2

/* One IO tensor of an engine. `name` points into the engine and lives as long as it does.
 * `dtype` is nvinfer1::DataType's value (0 = kFLOAT, 1 = kHALF, 2 = kINT8, 3 = kINT32, ...).
 * A dimension of -1 is dynamic (set it with jl_trt_context_set_input_shape). */
typedef struct jl_trt_io {
    const char* name;
    int32_t mode;
    int32_t dtype;
    int32_t nb_dims;
    int64_t dims[JL_TRT_MAX_DIMS];
} jl_trt_io;

/* ---- versions ---- */

/* NV_TENSORRT_MAJOR / MINOR / PATCH of the headers this shim was compiled against. */
void jl_trt_compiled_version(int32_t* major, int32_t* minor, int32_t* patch);
/* getInferLibVersion() of the libnvinfer loaded at run time. Encoded as the library encodes it:
 * major*1000 + minor*100 + patch before 10.0, major*10000 + minor*100 + patch from 10.0. */
int32_t jl_trt_loaded_version(void);

/* ---- log ring ----
 * One process-wide logger receives every TensorRT message of severity <= the threshold
 * (0 internal error, 1 error, 2 warning, 3 info, 4 verbose; default 3) into a ring of 64 entries;
 * the oldest is overwritten when full. Messages longer than 511 bytes are cut. */
void jl_trt_log_set_threshold(int32_t severity);
/* Pop the oldest message into `buf` (NUL-terminated, cut to `cap`). Returns 1 if one was popped,
 * 0 if the ring is empty. */
int32_t jl_trt_log_pop(int32_t* severity, char* buf, size_t cap);
/* Messages overwritten before they were popped, since the start. */
uint64_t jl_trt_log_dropped(void);

/* ---- runtime and engine ---- */

jl_trt_runtime* jl_trt_runtime_create(void);
void jl_trt_runtime_destroy(jl_trt_runtime* rt);
/* Select the DLA core the next deserialised engine runs on (IRuntime::setDLACore); needed before
 * deserialising a plan built with --useDLACore. -1 if the device has no such core. */
int32_t jl_trt_runtime_set_dla_core(jl_trt_runtime* rt, int32_t core);

/* Deserialise a plan. The bytes may be freed after the call. */
jl_trt_engine* jl_trt_engine_deserialize(jl_trt_runtime* rt, const void* plan, size_t len);
void jl_trt_engine_destroy(jl_trt_engine* engine);
int32_t jl_trt_engine_nb_io(const jl_trt_engine* engine);
int32_t jl_trt_engine_io(const jl_trt_engine* engine, int32_t index, jl_trt_io* out);
/* Device memory (bytes) an execution context of this engine needs for activations and scratch:
 * getDeviceMemorySizeV2() on TensorRT 10.1+, getDeviceMemorySize() before. -1 on failure. */
int64_t jl_trt_engine_device_memory(const jl_trt_engine* engine);

/* ---- execution context ---- */

/* A context whose device memory the caller provides (`memory`, `size` >= jl_trt_engine_device_memory;
 * NULL allowed when that is 0) and keeps alive until the context is destroyed.
 * TensorRT 10: createExecutionContext(kUSER_MANAGED) + setDeviceMemory(V2);
 * TensorRT 8.5/8.6: createExecutionContextWithoutDeviceMemory() + setDeviceMemory(). */
jl_trt_context* jl_trt_context_create(jl_trt_engine* engine, void* memory, int64_t size);
void jl_trt_context_destroy(jl_trt_context* ctx);
/* Fix the shape of a dynamic input (setInputShape). */
int32_t jl_trt_context_set_input_shape(jl_trt_context* ctx, const char* name, int32_t nb_dims, const int64_t* dims);
/* The shape of a tensor as the context sees it (after input shapes are set), into `out`
 * (only nb_dims and dims are written). */
int32_t jl_trt_context_tensor_shape(const jl_trt_context* ctx, const char* name, jl_trt_io* out);
int32_t jl_trt_context_set_tensor_address(jl_trt_context* ctx, const char* name, void* device_ptr);
/* enqueueV3 on `stream` (a cudaStream_t). Returns when the work is queued, not done. */
int32_t jl_trt_context_enqueue(jl_trt_context* ctx, void* stream);

/* ---- CUDA runtime (libcudart) ---- */

int32_t jl_cuda_malloc(void** ptr, size_t bytes);
int32_t jl_cuda_free(void* ptr);
/* Page-locked host memory, so the asynchronous copies really are asynchronous. */
int32_t jl_cuda_malloc_host(void** ptr, size_t bytes);
int32_t jl_cuda_free_host(void* ptr);
/* A non-blocking stream (cudaStreamNonBlocking). */
int32_t jl_cuda_stream_create(void** stream);
int32_t jl_cuda_stream_destroy(void* stream);
int32_t jl_cuda_stream_synchronize(void* stream);
int32_t jl_cuda_memcpy_htod_async(void* dst, const void* src, size_t bytes, void* stream);
int32_t jl_cuda_memcpy_dtoh_async(void* dst, const void* src, size_t bytes, void* stream);
/* cudaGetErrorName: static string, never NULL. */
const char* jl_cuda_error_string(int32_t code);

#ifdef __cplusplus
}
#endif

#endif /* JETLINK_TRT_SHIM_H */
