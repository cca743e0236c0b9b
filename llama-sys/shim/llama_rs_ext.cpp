#include <regex>
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

// ----------------------------------------------------------------- split greedy

#include <algorithm>
#include <cstdlib>
#include <new>
#include <numeric>
#include <vector>

#include "ggml-alloc.h"
#include "ggml-backend.h"

namespace {

// llama.cpp probes a chain's device graph with this many logits.
constexpr int64_t PROBE_LOGITS = 128 * 1024;

struct split_sampler {
    int32_t n_vocab;
    ggml_context * ids_ctx = nullptr;
    ggml_backend_buffer_t ids_buf = nullptr;
    ggml_tensor * ids = nullptr; // ids[i] = i, on the output device
};

const char * split_name(const llama_sampler *) {
    return "rs-split-greedy";
}

// On the host (a chain that did not offload): a plain argmax.
void split_apply(llama_sampler *, llama_token_data_array * cur_p) {
    if (cur_p->size == 0) {
        return;
    }
    auto by_logit = [](const llama_token_data & a, const llama_token_data & b) { return a.logit > b.logit; };
    cur_p->selected = std::min_element(cur_p->data, cur_p->data + cur_p->size, by_logit) - cur_p->data;
}

void split_free(llama_sampler * smpl) {
    auto * st = (split_sampler *) smpl->ctx;
    if (st->ids_buf) {
        ggml_backend_buffer_free(st->ids_buf);
    }
    if (st->ids_ctx) {
        ggml_free(st->ids_ctx);
    }
    delete st;
}

llama_sampler * split_clone(const llama_sampler * smpl) {
    return llama_rs_sampler_init_split_greedy(((const split_sampler *) smpl->ctx)->n_vocab);
}

// Greedy: the argmax of each of r rows of w (one thread block per row, in parallel),
// then the best of the r maxima. `ids` null: the single argmax.
ggml_tensor * split_argmax(ggml_context * ctx, ggml_tensor * logits, ggml_tensor * ids) {
    const int64_t n = ggml_nelements(logits);
    ggml_tensor * flat = ggml_reshape_1d(ctx, logits, n);
    const int64_t w = llama_rs_split_width(n);
    if (w == 0 || ids == nullptr || n > ggml_nelements(ids)) {
        return ggml_argmax(ctx, flat);
    }
    const int64_t r = n / w;
    ggml_tensor * pick = ggml_reshape_2d(ctx, ggml_argmax(ctx, ggml_reshape_2d(ctx, flat, w, r)), 1, r);
    // Each row's maximum, and its id in the whole row (from the id table, laid out alike).
    ggml_tensor * maxima = ggml_get_rows(ctx, ggml_reshape_3d(ctx, flat, 1, w, r), pick);                          // [1,1,r]
    ggml_tensor * gids = ggml_get_rows(ctx, ggml_reshape_3d(ctx, ggml_view_1d(ctx, ids, n, 0), 1, w, r), pick); // [1,1,r] i32
    ggml_tensor * best = ggml_argmax(ctx, ggml_reshape_2d(ctx, maxima, r, 1));
    ggml_tensor * tok = ggml_get_rows(ctx, ggml_reshape_2d(ctx, gids, 1, r), best);                               // [1,1] i32
    ggml_set_name(tok, "rs_split_argmax");
    return ggml_reshape_1d(ctx, tok, 1);
}

void split_build(const split_sampler *, ggml_context * ctx, llama_sampler_data * data, ggml_tensor * ids) {
    data->sampled = split_argmax(ctx, data->logits, ids);
}

bool split_backend_init(llama_sampler * smpl, ggml_backend_buffer_type_t buft, uint32_t) {
    auto * st = (split_sampler *) smpl->ctx;
    try {
        const int64_t n_ids = std::max<int64_t>(st->n_vocab, PROBE_LOGITS);
        ggml_init_params ip = { 2 * ggml_tensor_overhead(), nullptr, true };
        ggml_context * ctx = ggml_init(ip);
        if (ctx == nullptr) {
            return false;
        }
        ggml_tensor * ids = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_ids);
        ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors_from_buft(ctx, buft);
        if (buf == nullptr) {
            ggml_free(ctx);
            return false;
        }
        std::vector<int32_t> iota((size_t) n_ids);
        std::iota(iota.begin(), iota.end(), 0);
        ggml_backend_tensor_set(ids, iota.data(), 0, iota.size() * sizeof(int32_t));

        // Every op must run on the device: the two-stage graph, else the single argmax.
        auto supported = [&](ggml_tensor * with_ids) {
            ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
            if (dev == nullptr) {
                return true;
            }
            ggml_init_params pp = { 64 * ggml_tensor_overhead() + ggml_graph_overhead(), nullptr, true };
            ggml_context * probe = ggml_init(pp);
            if (probe == nullptr) {
                return false;
            }
            llama_sampler_data data = { ggml_new_tensor_1d(probe, GGML_TYPE_F32, st->n_vocab), nullptr, nullptr, nullptr };
            split_build(st, probe, &data, with_ids);
            ggml_cgraph * gf = ggml_new_graph(probe);
            for (ggml_tensor * t : { data.sampled, data.candidates, data.logits }) {
                if (t != nullptr) {
                    ggml_build_forward_expand(gf, t);
                }
            }
            bool ok = true;
            for (int i = 0; i < ggml_graph_n_nodes(gf) && ok; i++) {
                ok = ggml_backend_dev_supports_op(dev, ggml_graph_node(gf, i));
            }
            ggml_free(probe);
            return ok;
        };
        if (!supported(ids)) {
            ggml_backend_buffer_free(buf);
            ggml_free(ctx);
            return supported(nullptr);
        }
        st->ids_ctx = ctx;
        st->ids_buf = buf;
        st->ids = ids;
        return true;
    } catch (...) {
        return false;
    }
}

void split_backend_apply(llama_sampler * smpl, ggml_context * ctx, ggml_cgraph *, llama_sampler_data * data) {
    const auto * st = (const split_sampler *) smpl->ctx;
    split_build(st, ctx, data, st->ids);
}

llama_sampler_i split_i = {
    /* .name              = */ split_name,
    /* .accept            = */ nullptr,
    /* .apply             = */ split_apply,
    /* .reset             = */ nullptr,
    /* .clone             = */ split_clone,
    /* .free              = */ split_free,
    /* .backend_init      = */ split_backend_init,
    /* .backend_accept    = */ nullptr,
    /* .backend_apply     = */ split_backend_apply,
    /* .backend_set_input = */ nullptr,
    /* .backend_reset     = */ nullptr,
    /* .copy_state        = */ nullptr,
};

llama_sampler * split_init(int32_t n_vocab) {
    if (n_vocab <= 0) {
        return nullptr;
    }
    try {
        return llama_sampler_init(&split_i, new split_sampler{ n_vocab });
    } catch (...) {
        return nullptr;
    }
}

} // namespace

extern "C" int32_t llama_rs_split_width(int64_t n) {
    // The divisor of n in [256, 4096] closest to 1024 (one element per thread of a
    // 1024-thread block), with at least 16 rows.
    int64_t best = 0;
    for (int64_t w = 256; w <= 4096; ++w) {
        if (n % w == 0 && n / w >= 16 && (best == 0 || std::llabs(w - 1024) < std::llabs(best - 1024))) {
            best = w;
        }
    }
    return (int32_t) best;
}

extern "C" llama_sampler * llama_rs_sampler_init_split_greedy(int32_t n_vocab) {
    return split_init(n_vocab);
}

extern "C" llama_sampler * llama_rs_sampler_init_grammar_lazy_patterns(
    const llama_vocab * vocab, const char * grammar_str, const char * grammar_root,
    const char ** trigger_patterns, size_t num_trigger_patterns,
    const llama_token * trigger_tokens, size_t num_trigger_tokens) {
    try {
        // llama.cpp compiles each pattern (std::regex, ECMAScript) after it has allocated
        // the grammar, and leaks it when one throws (found with LeakSanitizer): compile
        // them here first, so a bad pattern fails before llama.cpp allocates anything.
        for (size_t i = 0; i < num_trigger_patterns; i++) {
            std::regex check(trigger_patterns[i]);
            (void) check;
        }
        return llama_sampler_init_grammar_lazy_patterns(vocab, grammar_str, grammar_root, trigger_patterns,
                                                        num_trigger_patterns, trigger_tokens, num_trigger_tokens);
    } catch (...) {
        return nullptr;
    }
}

extern "C" int32_t llama_rs_sampler_accept(llama_sampler * smpl, llama_token token) {
    try {
        llama_sampler_accept(smpl, token);
        return 0;
    } catch (...) {
        return -1;
    }
}

namespace {
thread_local std::string last_error;

// Runs `f`; an exception's message goes to last_error and `fallback` is returned.
template <typename T, typename F> T guarded(T fallback, F && f) {
    try {
        return f();
    } catch (const std::exception & e) {
        last_error = e.what();
    } catch (...) {
        last_error = "unknown exception";
    }
    return fallback;
}

constexpr int32_t CAUGHT = -100;
} // namespace

extern "C" const char * llama_rs_last_error(void) {
    return last_error.c_str();
}

extern "C" int32_t llama_rs_decode(llama_context * ctx, llama_batch batch) {
    return guarded(CAUGHT, [&] { return llama_decode(ctx, batch); });
}

extern "C" int32_t llama_rs_encode(llama_context * ctx, llama_batch batch) {
    return guarded(CAUGHT, [&] { return llama_encode(ctx, batch); });
}

extern "C" int32_t llama_rs_synchronize(llama_context * ctx) {
    return guarded(CAUGHT, [&] {
        llama_synchronize(ctx);
        return int32_t{0};
    });
}

extern "C" int32_t llama_rs_dev_memory(ggml_backend_dev_t dev, size_t * free, size_t * total) {
    const int32_t r = guarded(CAUGHT, [&] {
        ggml_backend_dev_memory(dev, free, total);
        return int32_t{0};
    });
    if (r != 0) {
        *free = 0;
        *total = 0;
    }
    return r;
}

extern "C" ggml_backend_reg_t llama_rs_call_reg_fn(void * fn, const char * arg) {
    return guarded(ggml_backend_reg_t{nullptr}, [&] { return ((ggml_backend_reg_t (*)(const char *)) fn)(arg); });
}

extern "C" int32_t llama_rs_tokenize(const llama_vocab * vocab, const char * text, int32_t text_len,
                                     llama_token * tokens, int32_t n_tokens_max, bool add_special, bool parse_special,
                                     bool * threw) {
    *threw = false;
    try {
        return llama_tokenize(vocab, text, text_len, tokens, n_tokens_max, add_special, parse_special);
    } catch (...) {
        *threw = true;
        return 0;
    }
}

extern "C" int32_t llama_rs_set_embeddings_nextn(llama_context * ctx, bool value, bool masked) {
    if (ctx == nullptr) {
        return -1;
    }
    try {
        llama_set_embeddings_nextn(ctx, value, masked);
        return 0;
    } catch (...) {
        return -1;
    }
}

extern "C" float * llama_rs_get_embeddings_nextn_ith(llama_context * ctx, int32_t i) {
    if (ctx == nullptr || i < 0) {
        return nullptr;
    }
    try {
        return llama_get_embeddings_nextn_ith(ctx, i);
    } catch (...) {
        return nullptr;
    }
}
