//! Raw declarations of the C ABI in `shim.h` (keep the two in step). Everything is `unsafe`; the
//! safe wrappers are in `../tensorrt.rs`.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

/// `JL_TRT_MAX_DIMS`.
pub const MAX_DIMS: usize = 8;
pub const IO_INPUT: i32 = 1;
pub const IO_OUTPUT: i32 = 2;

#[repr(C)]
pub struct jl_trt_runtime {
    _private: [u8; 0],
}
#[repr(C)]
pub struct jl_trt_engine {
    _private: [u8; 0],
}
#[repr(C)]
pub struct jl_trt_context {
    _private: [u8; 0],
}

/// `jl_trt_io`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct jl_trt_io {
    pub name: *const c_char,
    pub mode: i32,
    pub dtype: i32,
    pub nb_dims: i32,
    pub dims: [i64; MAX_DIMS],
}

impl Default for jl_trt_io {
    fn default() -> Self {
        jl_trt_io { name: std::ptr::null(), mode: 0, dtype: -1, nb_dims: 0, dims: [0; MAX_DIMS] }
    }
}

unsafe extern "C" {
    pub fn jl_trt_compiled_version(major: *mut i32, minor: *mut i32, patch: *mut i32);
    pub fn jl_trt_loaded_version() -> i32;

    pub fn jl_trt_log_set_threshold(severity: i32);
    pub fn jl_trt_log_pop(severity: *mut i32, buf: *mut c_char, cap: usize) -> i32;
    pub fn jl_trt_log_dropped() -> u64;

    pub fn jl_trt_runtime_create() -> *mut jl_trt_runtime;
    pub fn jl_trt_runtime_destroy(rt: *mut jl_trt_runtime);
    pub fn jl_trt_runtime_set_dla_core(rt: *mut jl_trt_runtime, core: i32) -> i32;

    pub fn jl_trt_engine_deserialize(
        rt: *mut jl_trt_runtime,
        plan: *const c_void,
        len: usize,
    ) -> *mut jl_trt_engine;
    pub fn jl_trt_engine_destroy(engine: *mut jl_trt_engine);
    pub fn jl_trt_engine_nb_io(engine: *const jl_trt_engine) -> i32;
    pub fn jl_trt_engine_io(engine: *const jl_trt_engine, index: i32, out: *mut jl_trt_io) -> i32;
    pub fn jl_trt_engine_device_memory(engine: *const jl_trt_engine) -> i64;

    pub fn jl_trt_context_create(
        engine: *mut jl_trt_engine,
        memory: *mut c_void,
        size: i64,
    ) -> *mut jl_trt_context;
    pub fn jl_trt_context_destroy(ctx: *mut jl_trt_context);
    pub fn jl_trt_context_set_input_shape(
        ctx: *mut jl_trt_context,
        name: *const c_char,
        nb_dims: i32,
        dims: *const i64,
    ) -> i32;
    pub fn jl_trt_context_tensor_shape(
        ctx: *const jl_trt_context,
        name: *const c_char,
        out: *mut jl_trt_io,
    ) -> i32;
    pub fn jl_trt_context_set_tensor_address(
        ctx: *mut jl_trt_context,
        name: *const c_char,
        ptr: *mut c_void,
    ) -> i32;
    pub fn jl_trt_context_enqueue(ctx: *mut jl_trt_context, stream: *mut c_void) -> i32;

    pub fn jl_cuda_malloc(ptr: *mut *mut c_void, bytes: usize) -> i32;
    pub fn jl_cuda_free(ptr: *mut c_void) -> i32;
    pub fn jl_cuda_malloc_host(ptr: *mut *mut c_void, bytes: usize) -> i32;
    pub fn jl_cuda_free_host(ptr: *mut c_void) -> i32;
    pub fn jl_cuda_stream_create(stream: *mut *mut c_void) -> i32;
    pub fn jl_cuda_stream_destroy(stream: *mut c_void) -> i32;
    pub fn jl_cuda_stream_synchronize(stream: *mut c_void) -> i32;
    pub fn jl_cuda_memcpy_htod_async(
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
        stream: *mut c_void,
    ) -> i32;
    pub fn jl_cuda_memcpy_dtoh_async(
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
        stream: *mut c_void,
    ) -> i32;
    pub fn jl_cuda_error_string(code: i32) -> *const c_char;
}
