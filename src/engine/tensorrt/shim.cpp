// jetlink's TensorRT shim: the C ABI of shim.h over TensorRT's C++ runtime API and libcudart.
//
// Compiled by build.rs (cc crate) only with the `tensorrt` cargo feature, against TensorRT 8.5, 8.6
// or 10.x headers. The differences between those versions are all in this file, behind
// JL_TRT_AT_LEAST; the C ABI in shim.h is the same for every version.
//
//  - 10.x: Dims is Dims64 (int64_t extents), objects are released with `delete` (destroy() is gone),
//    contexts with caller-owned memory come from createExecutionContext(kUSER_MANAGED), and from 10.1
//    the device memory size/pointer calls have V2 (int64_t) forms.
//  - 8.5/8.6: Dims is Dims32; `delete` already works (destroy() is deprecated since 8.0);
//    createExecutionContextWithoutDeviceMemory() + setDeviceMemory().

#include "shim.h"

#include <NvInferVersion.h>
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <type_traits>

#define JL_TRT_AT_LEAST(maj, min) \
    (NV_TENSORRT_MAJOR > (maj) || (NV_TENSORRT_MAJOR == (maj) && NV_TENSORRT_MINOR >= (min)))

#if !JL_TRT_AT_LEAST(8, 5)
#error "jetlink's TensorRT shim needs TensorRT 8.5 or newer (the name-based IO tensor API and enqueueV3)"
#endif

static_assert(nvinfer1::Dims::MAX_DIMS == JL_TRT_MAX_DIMS, "shim.h JL_TRT_MAX_DIMS must match nvinfer1::Dims");
static_assert(static_cast<int32_t>(nvinfer1::TensorIOMode::kINPUT) == JL_TRT_IO_INPUT, "TensorIOMode numbering");
static_assert(static_cast<int32_t>(nvinfer1::TensorIOMode::kOUTPUT) == JL_TRT_IO_OUTPUT, "TensorIOMode numbering");
// The element-size table in tensorrt.rs (`dtype`) relies on this numbering.
#define JL_DT(name, value) \
    static_assert(static_cast<int32_t>(nvinfer1::DataType::name) == (value), "DataType numbering (tensorrt.rs)")
JL_DT(kFLOAT, 0);
JL_DT(kHALF, 1);
JL_DT(kINT8, 2);
JL_DT(kINT32, 3);
JL_DT(kBOOL, 4);
JL_DT(kUINT8, 5);
#if JL_TRT_AT_LEAST(8, 6)
JL_DT(kFP8, 6);
#endif
#if NV_TENSORRT_MAJOR >= 10
JL_DT(kBF16, 7);
JL_DT(kINT64, 8);
JL_DT(kINT4, 9);
#endif
#undef JL_DT

namespace {

// ---- the log ring ------------------------------------------------------------------------------

constexpr int kLogSlots = 64;
constexpr size_t kLogLen = 512;

struct LogEntry {
    int32_t severity;
    char msg[kLogLen];
};

class RingLogger final : public nvinfer1::ILogger {
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override {
        push(static_cast<int32_t>(severity), msg);
    }

    void push(int32_t severity, char const* msg) noexcept {
        if (severity > threshold_.load(std::memory_order_relaxed)) {
            return;
        }
        try {
            std::lock_guard<std::mutex> lock(mu_);
            if (count_ == kLogSlots) {
                head_ = (head_ + 1) % kLogSlots;
                count_ -= 1;
                dropped_ += 1;
            }
            LogEntry& e = slots_[(head_ + count_) % kLogSlots];
            e.severity = severity;
            std::snprintf(e.msg, kLogLen, "%s", msg != nullptr ? msg : "(null)");
            count_ += 1;
        } catch (...) {
            // A logger must not throw into TensorRT; a lost message is the lesser harm.
        }
    }

    bool pop(int32_t* severity, char* buf, size_t cap) noexcept {
        try {
            std::lock_guard<std::mutex> lock(mu_);
            if (count_ == 0) {
                return false;
            }
            LogEntry const& e = slots_[head_];
            if (severity != nullptr) {
                *severity = e.severity;
            }
            if (buf != nullptr && cap > 0) {
                std::snprintf(buf, cap, "%s", e.msg);
            }
            head_ = (head_ + 1) % kLogSlots;
            count_ -= 1;
            return true;
        } catch (...) {
            return false;
        }
    }

    uint64_t dropped() noexcept {
        try {
            std::lock_guard<std::mutex> lock(mu_);
            return dropped_;
        } catch (...) {
            return 0;
        }
    }

    void set_threshold(int32_t severity) noexcept { threshold_.store(severity, std::memory_order_relaxed); }

private:
    std::mutex mu_;
    LogEntry slots_[kLogSlots] = {};
    int head_ = 0;
    int count_ = 0;
    uint64_t dropped_ = 0;
    std::atomic<int32_t> threshold_{static_cast<int32_t>(Severity::kINFO)};
};

// TensorRT keeps the logger of the first runtime for the whole process, so there is exactly one, and
// it lives until exit (after every runtime).
RingLogger& logger() {
    static RingLogger instance;
    return instance;
}

void shim_error(char const* what) noexcept {
    char buf[kLogLen];
    std::snprintf(buf, sizeof buf, "jetlink shim: %s", what);
    logger().push(static_cast<int32_t>(nvinfer1::ILogger::Severity::kERROR), buf);
}

void shim_exception(char const* where) noexcept {
    char buf[kLogLen];
    try {
        throw;
    } catch (std::exception const& e) {
        std::snprintf(buf, sizeof buf, "%s: C++ exception: %s", where, e.what());
    } catch (...) {
        std::snprintf(buf, sizeof buf, "%s: unknown C++ exception", where);
    }
    shim_error(buf);
}

// ---- handles -----------------------------------------------------------------------------------

nvinfer1::IRuntime* rt_of(jl_trt_runtime* p) { return reinterpret_cast<nvinfer1::IRuntime*>(p); }
nvinfer1::ICudaEngine* engine_of(jl_trt_engine* p) { return reinterpret_cast<nvinfer1::ICudaEngine*>(p); }
nvinfer1::ICudaEngine const* engine_of(jl_trt_engine const* p) {
    return reinterpret_cast<nvinfer1::ICudaEngine const*>(p);
}
nvinfer1::IExecutionContext* ctx_of(jl_trt_context* p) { return reinterpret_cast<nvinfer1::IExecutionContext*>(p); }
nvinfer1::IExecutionContext const* ctx_of(jl_trt_context const* p) {
    return reinterpret_cast<nvinfer1::IExecutionContext const*>(p);
}

void dims_out(nvinfer1::Dims const& d, jl_trt_io* out) {
    out->nb_dims = d.nbDims;
    for (int32_t i = 0; i < JL_TRT_MAX_DIMS; ++i) {
        out->dims[i] = (i < d.nbDims) ? static_cast<int64_t>(d.d[i]) : 0;
    }
}

// One element of nvinfer1::Dims: int32_t before 10.0 (Dims32), int64_t from 10.0 (Dims64).
using DimT = std::remove_reference<decltype(nvinfer1::Dims{}.d[0])>::type;

} // namespace

extern "C" {

// ---- versions ----------------------------------------------------------------------------------

void jl_trt_compiled_version(int32_t* major, int32_t* minor, int32_t* patch) {
    if (major != nullptr) *major = NV_TENSORRT_MAJOR;
    if (minor != nullptr) *minor = NV_TENSORRT_MINOR;
    if (patch != nullptr) *patch = NV_TENSORRT_PATCH;
}

int32_t jl_trt_loaded_version(void) { return getInferLibVersion(); }

// ---- log ---------------------------------------------------------------------------------------

void jl_trt_log_set_threshold(int32_t severity) { logger().set_threshold(severity); }

int32_t jl_trt_log_pop(int32_t* severity, char* buf, size_t cap) { return logger().pop(severity, buf, cap) ? 1 : 0; }

uint64_t jl_trt_log_dropped(void) { return logger().dropped(); }

// ---- runtime and engine ------------------------------------------------------------------------

jl_trt_runtime* jl_trt_runtime_create(void) {
    try {
        nvinfer1::IRuntime* rt = nvinfer1::createInferRuntime(logger());
        if (rt == nullptr) {
            shim_error("createInferRuntime returned null (header/library version mismatch?)");
        }
        return reinterpret_cast<jl_trt_runtime*>(rt);
    } catch (...) {
        shim_exception("jl_trt_runtime_create");
        return nullptr;
    }
}

void jl_trt_runtime_destroy(jl_trt_runtime* rt) { delete rt_of(rt); }

int32_t jl_trt_runtime_set_dla_core(jl_trt_runtime* rt, int32_t core) {
    if (rt == nullptr) {
        return -1;
    }
    int32_t const n = rt_of(rt)->getNbDLACores();
    if (core < 0 || core >= n) {
        char buf[128];
        std::snprintf(buf, sizeof buf, "DLA core %d requested, the device has %d", static_cast<int>(core), static_cast<int>(n));
        shim_error(buf);
        return -1;
    }
    rt_of(rt)->setDLACore(core);
    return 0;
}

jl_trt_engine* jl_trt_engine_deserialize(jl_trt_runtime* rt, const void* plan, size_t len) {
    if (rt == nullptr || plan == nullptr || len == 0) {
        shim_error("jl_trt_engine_deserialize: null runtime or empty plan");
        return nullptr;
    }
    try {
        nvinfer1::ICudaEngine* e = rt_of(rt)->deserializeCudaEngine(plan, len);
        if (e == nullptr) {
            shim_error("deserializeCudaEngine failed (plan from another TensorRT version or GPU?)");
        }
        return reinterpret_cast<jl_trt_engine*>(e);
    } catch (...) {
        shim_exception("jl_trt_engine_deserialize");
        return nullptr;
    }
}

void jl_trt_engine_destroy(jl_trt_engine* engine) { delete engine_of(engine); }

int32_t jl_trt_engine_nb_io(const jl_trt_engine* engine) {
    return engine == nullptr ? -1 : engine_of(engine)->getNbIOTensors();
}

int32_t jl_trt_engine_io(const jl_trt_engine* engine, int32_t index, jl_trt_io* out) {
    if (engine == nullptr || out == nullptr) {
        return -1;
    }
    nvinfer1::ICudaEngine const* e = engine_of(engine);
    if (index < 0 || index >= e->getNbIOTensors()) {
        shim_error("jl_trt_engine_io: index out of range");
        return -1;
    }
    char const* name = e->getIOTensorName(index);
    if (name == nullptr) {
        return -1;
    }
    out->name = name;
    out->mode = static_cast<int32_t>(e->getTensorIOMode(name));
    out->dtype = static_cast<int32_t>(e->getTensorDataType(name));
    dims_out(e->getTensorShape(name), out);
    return 0;
}

int64_t jl_trt_engine_device_memory(const jl_trt_engine* engine) {
    if (engine == nullptr) {
        return -1;
    }
#if JL_TRT_AT_LEAST(10, 1)
    return engine_of(engine)->getDeviceMemorySizeV2();
#else
    return static_cast<int64_t>(engine_of(engine)->getDeviceMemorySize());
#endif
}

// ---- execution context -------------------------------------------------------------------------

jl_trt_context* jl_trt_context_create(jl_trt_engine* engine, void* memory, int64_t size) {
    if (engine == nullptr) {
        return nullptr;
    }
    try {
        nvinfer1::ICudaEngine* e = engine_of(engine);
        int64_t const need = jl_trt_engine_device_memory(engine);
        if (size < need || (memory == nullptr && need > 0)) {
            shim_error("jl_trt_context_create: device memory smaller than the engine needs");
            return nullptr;
        }
#if NV_TENSORRT_MAJOR >= 10
        nvinfer1::IExecutionContext* c =
            e->createExecutionContext(nvinfer1::ExecutionContextAllocationStrategy::kUSER_MANAGED);
#else
        nvinfer1::IExecutionContext* c = e->createExecutionContextWithoutDeviceMemory();
#endif
        if (c == nullptr) {
            shim_error("createExecutionContext failed");
            return nullptr;
        }
        if (memory != nullptr) {
#if JL_TRT_AT_LEAST(10, 1)
            c->setDeviceMemoryV2(memory, size);
#else
            c->setDeviceMemory(memory);
#endif
        }
        return reinterpret_cast<jl_trt_context*>(c);
    } catch (...) {
        shim_exception("jl_trt_context_create");
        return nullptr;
    }
}

void jl_trt_context_destroy(jl_trt_context* ctx) { delete ctx_of(ctx); }

int32_t jl_trt_context_set_input_shape(jl_trt_context* ctx, const char* name, int32_t nb_dims, const int64_t* dims) {
    if (ctx == nullptr || name == nullptr || nb_dims < 0 || nb_dims > JL_TRT_MAX_DIMS || (nb_dims > 0 && dims == nullptr)) {
        shim_error("jl_trt_context_set_input_shape: bad arguments");
        return -1;
    }
    nvinfer1::Dims d{};
    d.nbDims = nb_dims;
    for (int32_t i = 0; i < nb_dims; ++i) {
        d.d[i] = static_cast<DimT>(dims[i]);
    }
    return ctx_of(ctx)->setInputShape(name, d) ? 0 : -1;
}

int32_t jl_trt_context_tensor_shape(const jl_trt_context* ctx, const char* name, jl_trt_io* out) {
    if (ctx == nullptr || name == nullptr || out == nullptr) {
        return -1;
    }
    nvinfer1::Dims const d = ctx_of(ctx)->getTensorShape(name);
    if (d.nbDims < 0) {
        return -1;
    }
    dims_out(d, out);
    return 0;
}

int32_t jl_trt_context_set_tensor_address(jl_trt_context* ctx, const char* name, void* device_ptr) {
    if (ctx == nullptr || name == nullptr) {
        return -1;
    }
    return ctx_of(ctx)->setTensorAddress(name, device_ptr) ? 0 : -1;
}

int32_t jl_trt_context_enqueue(jl_trt_context* ctx, void* stream) {
    if (ctx == nullptr) {
        return -1;
    }
    return ctx_of(ctx)->enqueueV3(static_cast<cudaStream_t>(stream)) ? 0 : -1;
}

// ---- CUDA runtime ------------------------------------------------------------------------------

int32_t jl_cuda_malloc(void** ptr, size_t bytes) { return static_cast<int32_t>(cudaMalloc(ptr, bytes)); }

int32_t jl_cuda_free(void* ptr) { return static_cast<int32_t>(cudaFree(ptr)); }

int32_t jl_cuda_malloc_host(void** ptr, size_t bytes) { return static_cast<int32_t>(cudaMallocHost(ptr, bytes)); }

int32_t jl_cuda_free_host(void* ptr) { return static_cast<int32_t>(cudaFreeHost(ptr)); }

int32_t jl_cuda_stream_create(void** stream) {
    cudaStream_t s = nullptr;
    cudaError_t const err = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    *stream = static_cast<void*>(s);
    return static_cast<int32_t>(err);
}

int32_t jl_cuda_stream_destroy(void* stream) {
    return static_cast<int32_t>(cudaStreamDestroy(static_cast<cudaStream_t>(stream)));
}

int32_t jl_cuda_stream_synchronize(void* stream) {
    return static_cast<int32_t>(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

int32_t jl_cuda_memcpy_htod_async(void* dst, const void* src, size_t bytes, void* stream) {
    return static_cast<int32_t>(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)));
}

int32_t jl_cuda_memcpy_dtoh_async(void* dst, const void* src, size_t bytes, void* stream) {
    return static_cast<int32_t>(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream)));
}

const char* jl_cuda_error_string(int32_t code) {
    char const* s = cudaGetErrorName(static_cast<cudaError_t>(code));
    return s != nullptr ? s : "cudaErrorUnknown";
}

} // extern "C"
