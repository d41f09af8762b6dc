/* arch.c — the table of architectures (model/arch.h); each one is defined in its own file. */
#include "model/arch.h"

#include <math.h>
#include <string.h>

static const ts_arch *const all[] = {&ts_arch_llama, &ts_arch_qwen2};

const ts_arch *ts_arch_find(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strlen(all[i]->name) == len && memcmp(all[i]->name, name, len) == 0) return all[i];
    return NULL;
}

void ts_arch_llama3_rope_factors(double theta, int64_t rope_dims, double factor, double low,
                                 double high, double original, float *out) {
    for (int64_t i = 0; i < rope_dims / 2; i++) {
        double freq = 1.0 / pow(theta, (double)(2 * i) / (double)rope_dims);
        double wavelen = 2.0 * 3.14159265358979323846 / freq;
        if (wavelen < original / high) {
            out[i] = 1.0f;
        } else if (wavelen > original / low) {
            out[i] = (float)factor;
        } else {
            double smooth = (original / wavelen - low) / (high - low);
            out[i] = (float)(1.0 / ((1.0 - smooth) / factor + smooth));
        }
    }
}

const ts_arch *ts_arch_find_hf(const char *model_type) {
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->hf.model_type && !strcmp(all[i]->hf.model_type, model_type)) return all[i];
    return NULL;
}

/* The Llama shape in transformers' names (LlamaConfig, LlamaForCausalLM), as llama.cpp's
 * convert_hf_to_gguf.py maps them. Defaults of absent optional keys are the loader's
 * (head_count_kv = head_count, key_length = embedding_length / head_count, the architecture's
 * RoPE base); rms_norm_eps is required because transformers' default (1e-6) is not GGUF's. */
const ts_arch_hf_key ts_arch_hf_keys[] = {
    {"max_position_embeddings", "context_length", false, true},
    {"hidden_size", "embedding_length", false, true},
    {"num_hidden_layers", "block_count", false, true},
    {"intermediate_size", "feed_forward_length", false, true},
    {"num_attention_heads", "attention.head_count", false, true},
    {"num_key_value_heads", "attention.head_count_kv", false, false},
    {"head_dim", "attention.key_length", false, false},
    {"rms_norm_eps", "attention.layer_norm_rms_epsilon", true, true},
    {"rope_theta", "rope.freq_base", true, false},
    {"vocab_size", "vocab_size", false, false},
    {NULL, NULL, false, false},
};

const ts_arch_hf_tensor ts_arch_hf_tensors[] = {
    {"model.embed_tokens.weight", "token_embd.weight", false, TS_HF_PERMUTE_NONE},
    {"model.norm.weight", "output_norm.weight", false, TS_HF_PERMUTE_NONE},
    {"lm_head.weight", "output.weight", false, TS_HF_PERMUTE_NONE},
    {"input_layernorm.weight", "attn_norm.weight", true, TS_HF_PERMUTE_NONE},
    {"self_attn.q_proj.weight", "attn_q.weight", true, TS_HF_PERMUTE_Q},
    {"self_attn.k_proj.weight", "attn_k.weight", true, TS_HF_PERMUTE_K},
    {"self_attn.v_proj.weight", "attn_v.weight", true, TS_HF_PERMUTE_NONE},
    {"self_attn.o_proj.weight", "attn_output.weight", true, TS_HF_PERMUTE_NONE},
    {"self_attn.q_proj.bias", "attn_q.bias", true, TS_HF_PERMUTE_Q},
    {"self_attn.k_proj.bias", "attn_k.bias", true, TS_HF_PERMUTE_K},
    {"self_attn.v_proj.bias", "attn_v.bias", true, TS_HF_PERMUTE_NONE},
    {"self_attn.o_proj.bias", "attn_output.bias", true, TS_HF_PERMUTE_NONE},
    {"post_attention_layernorm.weight", "ffn_norm.weight", true, TS_HF_PERMUTE_NONE},
    {"mlp.gate_proj.weight", "ffn_gate.weight", true, TS_HF_PERMUTE_NONE},
    {"mlp.up_proj.weight", "ffn_up.weight", true, TS_HF_PERMUTE_NONE},
    {"mlp.down_proj.weight", "ffn_down.weight", true, TS_HF_PERMUTE_NONE},
    {"self_attn.rotary_emb.inv_freq", NULL, true, TS_HF_PERMUTE_NONE},
    {NULL, NULL, false, TS_HF_PERMUTE_NONE},
};

/* What no architecture here computes, as config.json says it (the GGUF list is model.c's).
 * rope_scaling and hidden_act are checked by value (model/hf.c). */
const char *const ts_arch_hf_refused_keys[] = {
    "num_experts",        "num_local_experts", "num_experts_per_tok",  "attn_logit_softcapping",
    "final_logit_softcapping", "mlp_bias",     "partial_rotary_factor", "qk_layernorm",
    "use_qk_norm",        "embedding_multiplier", "residual_multiplier", "logits_scaling",
    "attention_multiplier", "query_pre_attn_scalar", "sliding_window_pattern",
    NULL,
};

const char *ts_arch_names(void) {
    return "llama, qwen2";
}
