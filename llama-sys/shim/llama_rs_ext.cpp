#include "llama_rs_ext.h"
#include "llama-ext.h"

extern "C" int32_t llama_rs_memory_breakdown(const llama_context * ctx, llama_rs_memory_entry * out, int32_t cap) {
    if (ctx == nullptr || cap < 0 || (cap > 0 && out == nullptr)) {
        return -1;
    }
    try {
        const auto mb = llama_get_memory_breakdown(ctx);
        int32_t n = 0;
        for (const auto & [buft, d] : mb) {
            if (n < cap) {
                out[n] = { buft, d.model, d.context, d.compute };
            }
            n++;
        }
        return n;
    } catch (...) {
        return -1;
    }
}

extern "C" int32_t llama_rs_model_n_devices(const llama_model * model) {
    if (model == nullptr) {
        return -1;
    }
    try {
        return llama_model_n_devices(model);
    } catch (...) {
        return -1;
    }
}

extern "C" const char * llama_rs_model_device_backend(const llama_model * model, int32_t i) {
    if (model == nullptr || i < 0) {
        return nullptr;
    }
    try {
        if (i >= llama_model_n_devices(model)) {
            return nullptr;
        }
        ggml_backend_dev_t dev = llama_model_get_device(model, i);
        ggml_backend_reg_t reg = dev ? ggml_backend_dev_backend_reg(dev) : nullptr;
        return reg ? ggml_backend_reg_name(reg) : nullptr;
    } catch (...) {
        return nullptr;
    }
}
