"""Compile-check CUDA sources with NVRTC through ctypes, without a GPU or a CUDA toolkit.

Usage: nvrtc_check.py LIBNVRTC ARCH[,ARCH...] FILE.cu [FILE.cu ...]
Each file is compiled for each virtual architecture (e.g. compute_72) with the options the
runtime uses (src/gpu/cuda.rs); the compiler log is printed on failure and the exit code is 1.
"""

import ctypes
import sys


def compile_one(lib, src, name, arch):
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), src, name, 0, None, None)
    if rc != 0:
        return f"nvrtcCreateProgram failed ({rc})"
    opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++14"]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    ptx_size = ctypes.c_size_t()
    if rc == 0:
        lib.nvrtcGetPTXSize(prog, ctypes.byref(ptx_size))
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    text = log.value.decode(errors="replace").strip()
    if rc != 0:
        return f"nvrtcCompileProgram failed ({rc}):\n{text}"
    if text:
        print(f"  warnings:\n{text}")
    print(f"  ok: {ptx_size.value} bytes of PTX")
    return None


def main():
    lib = ctypes.CDLL(sys.argv[1])
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    print(f"NVRTC {major.value}.{minor.value}")
    failed = False
    for path in sys.argv[3:]:
        src = open(path, "rb").read()
        for arch in sys.argv[2].split(","):
            print(f"{path} for {arch}")
            err = compile_one(lib, src, path.encode(), arch)
            if err:
                print(err)
                failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
