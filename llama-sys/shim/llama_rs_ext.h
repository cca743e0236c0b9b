// C entry points for llama.cpp functionality that upstream exposes only as C++
// (src/llama-ext.h). Every function catches all exceptions: nothing unwinds into Rust.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

// Memory of one buffer type (one device's VRAM, host memory, ...), in bytes.
struct llama_rs_memory_entry {
    ggml_backend_buffer_type_t buft;
    size_t model;   // weights
    size_t context; // KV cache / recurrent state
    size_t compute; // compute buffers
};

// Fills up to `cap` entries of the context's memory breakdown (also valid for a model
// loaded with no_alloc, where it is the planned allocation). Returns the number of
// entries that exist (may exceed `cap`), or -1 on error.
int32_t llama_rs_memory_breakdown(const struct llama_context * ctx, struct llama_rs_memory_entry * out, int32_t cap);

// Number of accelerator devices (GPUs, RPC servers) the model's layers were assigned
// to; 0 means everything runs on the CPU. -1 on error.
int32_t llama_rs_model_n_devices(const struct llama_model * model);

// Name of the backend ("CUDA", "Vulkan", "ROCm", "RPC", ...) of the model's device
// `i` (0 <= i < llama_rs_model_n_devices), or NULL.
const char * llama_rs_model_device_backend(const struct llama_model * model, int32_t i);

#ifdef __cplusplus
}
#endif
