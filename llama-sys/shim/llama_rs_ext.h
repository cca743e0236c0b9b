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

// A greedy sampler whose device step is a two-stage argmax: the logits row is viewed as
// R rows of W (W divides n_vocab), the R row maxima are found in parallel and then the
// best of them. llama.cpp's own greedy step is one argmax over the whole row, which a
// GPU runs in a single thread block (measured ~50 us for 262k logits on an H100, ~5 % of
// a token of a 270M model). The result is the same token (up to exactly tied logits).
// Needs a vocabulary size with a divisor in [256, 4096]; otherwise (and in llama.cpp's
// op-support probe) it builds the single argmax. The device step keeps an id table of
// max(n_vocab, 131072) int32 in the output device's memory. Returns NULL on error.
struct llama_sampler * llama_rs_sampler_init_split_greedy(int32_t n_vocab);

// (Measured the same way, a staged top-k — per-row top-k of 1024, then the survivors —
// was slower than llama.cpp's single top-k on CUDA, so top-k stays llama.cpp's.)

// The row width the split greedy step uses for `n` logits, 0 for a single argmax.
int32_t llama_rs_split_width(int64_t n);

// Exception barriers. These llama.cpp entry points let C++ exceptions cross the C API
// (std::regex_error from a lazy grammar's trigger pattern, std::runtime_error from a
// grammar fed its trigger, std::out_of_range from a tokenizer), which is an abort in a
// Rust caller. The same calls, with every exception caught:
// - NULL on any exception (as on llama.cpp's own failures):
struct llama_sampler * llama_rs_sampler_init_grammar_lazy_patterns(
    const struct llama_vocab * vocab, const char * grammar_str, const char * grammar_root,
    const char ** trigger_patterns, size_t num_trigger_patterns,
    const llama_token * trigger_tokens, size_t num_trigger_tokens);
// - 0 when accepted, -1 when an exception was caught (the sampler's state is then unknown):
int32_t llama_rs_sampler_accept(struct llama_sampler * smpl, llama_token token);
// - llama_tokenize's result; `*threw` is set when an exception was caught (result 0):
int32_t llama_rs_tokenize(const struct llama_vocab * vocab, const char * text, int32_t text_len,
    llama_token * tokens, int32_t n_tokens_max, bool add_special, bool parse_special, bool * threw);

// - llama_decode / llama_encode, whose backends throw (an RPC server that failed, a
//   malformed reply): their result, or -100 when an exception was caught; the
//   exception's message is then in llama_rs_last_error():
int32_t llama_rs_decode(struct llama_context * ctx, struct llama_batch batch);
int32_t llama_rs_encode(struct llama_context * ctx, struct llama_batch batch);
// - llama_synchronize: 0, or -100 when an exception was caught:
int32_t llama_rs_synchronize(struct llama_context * ctx);
// - ggml_backend_dev_memory: 0, or -100 (free and total then 0):
int32_t llama_rs_dev_memory(ggml_backend_dev_t dev, size_t * free, size_t * total);
// - a `ggml_backend_reg_t (*)(const char *)` such as ggml-rpc's add_server (reached
//   through the registry: a module's functions are not linked): its result, or NULL
//   with the message in llama_rs_last_error():
ggml_backend_reg_t llama_rs_call_reg_fn(void * fn, const char * arg);
// The message of the last exception these barriers caught on this thread ("" if none).
const char * llama_rs_last_error(void);

// Multi-token prediction (MTP): the target context's hidden state feeds the model's MTP
// head (a context made with LLAMA_CONTEXT_TYPE_MTP).
// - whether `ctx` outputs the hidden state ("nextn embeddings") after each decode, for
//   every token of the batch (masked = false) or only those with an output (masked = true);
//   0, or -1 when an exception was caught:
int32_t llama_rs_set_embeddings_nextn(struct llama_context * ctx, bool value, bool masked);
// - row `i` of the last decode's hidden state (n_embd floats; the batch index when
//   unmasked, the output index when masked), NULL when there is none:
float * llama_rs_get_embeddings_nextn_ith(struct llama_context * ctx, int32_t i);

#ifdef __cplusplus
}
#endif
