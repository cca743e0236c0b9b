// The headers llama-sys binds. Kept independent of cargo features so the committed
// bindings (src/pregenerated.rs) fit every build; backend-specific entry points are
// reached through the generic ggml-backend device registry instead.
#include "llama.h"
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml-rpc.h"
#include "gguf.h"
#include "mtmd.h"
#include "mtmd-helper.h"
#include "shim/llama_rs_ext.h"
