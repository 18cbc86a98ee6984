"""What the judge images' vLLM takes, recorded once (read from the released vLLM 0.10.0 wheel).

The MetaX image runs vLLM 0.10.0; the GPU machine that measures runs a current vLLM (0.26). The
engine checks its arguments against the vLLM it runs (vllm_engine.vllm_llm_kwargs); these sets let
`tournament images check` run the same check against 0.10.0 without vLLM installed. Data only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# dataclasses.fields(vllm.engine.arg_utils.EngineArgs) with init=True, vLLM 0.10.0
VLLM_0_10_0_ENGINE_ARGS = frozenset("""
additional_config allowed_local_media_path async_scheduling block_size calculate_kv_scales
code_revision collect_detailed_traces compilation_config config_format cpu_offload_gb
cuda_graph_sizes data_parallel_address data_parallel_backend data_parallel_hybrid_lb
data_parallel_rank data_parallel_rpc_port data_parallel_size data_parallel_size_local
data_parallel_start_rank default_mm_loras disable_async_output_proc disable_cascade_attn
disable_chunked_mm_input disable_custom_all_reduce disable_hybrid_kv_cache_manager
disable_log_stats disable_mm_preprocessor_cache disable_sliding_window distributed_executor_backend
download_dir dtype enable_chunked_prefill enable_eplb enable_expert_parallel enable_lora
enable_lora_bias enable_multimodal_encoder_data_parallel enable_prefix_caching
enable_prompt_adapter enable_prompt_embeds enable_sleep_mode enforce_eager eplb_log_balancedness
eplb_step_interval eplb_window_size fully_sharded_loras generation_config gpu_memory_utilization
guided_decoding_backend guided_decoding_disable_additional_properties
guided_decoding_disable_any_whitespace guided_decoding_disable_fallback hf_config_path
hf_overrides hf_token ignore_patterns interleave_mm_strings kv_cache_dtype kv_events_config
kv_transfer_config limit_mm_per_prompt load_format logits_processor_pattern logprobs_mode
long_prefill_token_threshold lora_dtype lora_extra_vocab_size max_cpu_loras max_logprobs
max_long_partial_prefills max_lora_rank max_loras max_model_len max_num_batched_tokens
max_num_partial_prefills max_num_seqs max_parallel_loading_workers max_seq_len_to_capture
media_io_kwargs mm_processor_kwargs model model_impl model_loader_extra_config
multi_step_stream_outputs num_gpu_blocks_override num_lookahead_slots num_redundant_experts
num_scheduler_steps otlp_traces_endpoint override_attention_dtype override_generation_config
override_neuron_config override_pooler_config pipeline_parallel_size preemption_mode
prefix_caching_hash_algo pt_load_map_location quantization ray_workers_use_nsight reasoning_parser
revision rope_scaling rope_theta scheduler_cls scheduler_delay_factor scheduling_policy seed
served_model_name show_hidden_metrics_for_version skip_tokenizer_init speculative_config
swap_space task tensor_parallel_size tokenizer tokenizer_mode tokenizer_revision
trust_remote_code use_tqdm_on_load worker_cls worker_extension_cls
""".split())

# dataclasses.fields(vllm.config.CompilationConfig) with init=True, vLLM 0.10.0 (0.10.1: the same)
VLLM_0_10_0_COMPILATION_CONFIG = frozenset("""
backend cache_dir compile_sizes cudagraph_capture_sizes cudagraph_copy_inputs
cudagraph_num_of_warmups custom_ops debug_dump_path full_cuda_graph inductor_compile_config
inductor_passes level pass_config splitting_ops use_cudagraph use_inductor
""".split())

# Arguments 0.10.0 takes and then overrides: (LLM argument, value) -> what happens instead.
VLLM_0_10_0_OVERRIDDEN = {
    ("enable_chunked_prefill", False): "vLLM 0.10.0's V1 engine always chunks prefill for a generating "
                                       "model: enable_chunked_prefill=false is ignored there",
}


@dataclass(frozen=True)
class VLLMFacts:
    """One vLLM version's argument names: what `vllm_llm_kwargs` checks a configuration against."""

    version: str
    engine_args: frozenset[str]
    compilation_config: frozenset[str]
    overridden: dict[tuple[str, object], str] = field(default_factory=dict)


# the versions known without vLLM installed, by version string (images.tracks names them)
KNOWN = {"0.10.0": VLLMFacts("0.10.0", VLLM_0_10_0_ENGINE_ARGS, VLLM_0_10_0_COMPILATION_CONFIG,
                             VLLM_0_10_0_OVERRIDDEN)}
