"""Names vulture (`make lint`) reports as unused that are not dead, each group with its reason.

Regenerate candidates with `vulture contract tools packs agents pipeline stack evals web deploy bench
--make-whitelist`; add a name here only with the reason it is alive.
"""

# ruff: noqa
_ = object()  # vulture reads the attribute names below; nothing runs this file


# Set on a library's object and read by that library (tokenizer, llama.cpp, Bigtable client and sqlite settings).
_.pre_tokenizer  # unused attribute (agents/backends/hf_gemma.py:117)
_.decoder  # unused attribute (agents/backends/hf_gemma.py:118)
_.chat_template  # unused attribute (agents/backends/hf_gemma.py:123)
_.n_parallel  # unused attribute (agents/backends/llamacpp.py:110)
_.n_threads  # unused attribute (agents/backends/llamacpp.py:111)
_.n_threads  # unused attribute (agents/backends/llamacpp.py:112)
_.cache_prompt  # unused attribute (agents/backends/llamacpp.py:115)
_.embedding  # unused attribute (agents/backends/llamacpp.py:116)
_.pooling_type  # unused attribute (agents/backends/llamacpp.py:117)
_.offline  # unused attribute (agents/backends/llamacpp.py:118)
_.ui  # unused attribute (agents/backends/llamacpp.py:122)
_.api_keys  # unused attribute (agents/backends/llamacpp.py:123)
_.n_threads_http  # unused attribute (agents/backends/llamacpp.py:124)
_.row_factory  # unused attribute (packs/telco/data.py:261)
_.default_read_rows_operation_timeout  # unused attribute (pipeline/enrichment/bigtable.py:101)
_.default_read_rows_attempt_timeout  # unused attribute (pipeline/enrichment/bigtable.py:102)

# Fields of records read through serialization, formatting or generated docs, never by attribute in our code.
best_wall_s  # unused variable (bench/enrichment.py:79)
user_turns_answered  # unused variable (bench/load_player.py:37)
WORKER_GIB  # unused variable (bench/session_state.py:64)
window_turns  # unused variable (bench/soak.py:55)
tools_used  # unused variable (contract/handoff.py:31)
schema_version  # unused variable (contract/messages.py:148)
schema_version  # unused variable (contract/messages.py:79)
meaning  # unused variable (pipeline/metrics.py:63)
idpattern  # unused variable (packs/shop/policy.py:126)
warranty  # unused variable (packs/shop/policy.py:159)
plans  # unused variable (packs/shop/policy.py:161)
electronics_years  # unused variable (packs/shop/policy.py:84)
other_years  # unused variable (packs/shop/policy.py:85)
dispatch_working_days  # unused variable (packs/shop/policy.py:89)
standard_min_working_days  # unused variable (packs/shop/policy.py:90)
standard_max_working_days  # unused variable (packs/shop/policy.py:91)
plus_free_standard_over  # unused variable (packs/shop/policy.py:92)
plus_monthly  # unused variable (packs/shop/policy.py:96)
pro_monthly  # unused variable (packs/shop/policy.py:97)
payment_retry_days  # unused variable (packs/shop/policy.py:98)
_.last_active  # unused attribute (web/store.py:137)
_.evicted  # unused attribute (web/store.py:149)
_.last_active  # unused attribute (web/store.py:249)
_.evicted  # unused attribute (web/store.py:259)
last_active  # unused variable (web/store.py:120)

# Hooks a library calls: Beam's PipelineOptions, pickle's Unpickler, atexit.
_._add_argparse_args  # unused method (pipeline/options.py:504)
_.find_class  # unused method (pipeline/session_legacy.py:82)
close_all  # unused function (tools/toolbox.py:156)

# Support the tests and benchmarks share on purpose: the delivery checks of bench.harness, the v0 state writer
# behind tests/fixtures/session_state_v0, the simulator's inspection, the Dataflow job's reading helpers, the
# metric and alert tables the docs and tests check against.
replies_of  # unused function (bench/harness.py:110)
dead_letters_of  # unused function (bench/harness.py:121)
check_rejected  # unused function (bench/harness.py:222)
_.explain  # unused method (bench/harness.py:152)
_.bounded_sent_at  # unused property (contract/messages.py:111)
MONITORING_DIR  # unused variable (deploy/alerts.py:19)
POLICIES  # unused variable (deploy/alerts.py:20)
resource_hints_by_transform  # unused function (deploy/transforms.py:102)
job_environment  # unused function (deploy/transforms.py:66)
METRICS  # unused variable (pipeline/metrics.py:66)
dumps_v0  # unused function (pipeline/session_legacy.py:98)
_.open_sessions  # unused method (pipeline/session_simulator.py:93)
_.running  # unused property (stack/emulators/processes.py:174)

# The retry metric (pipeline.metrics.RETRIES) is declared but no store calls its hook yet: wire it or drop both.
retry_hook  # unused function (pipeline/metrics.py:190)

# Read by the tests and driven by the benches: why a stream's release stopped (tests/test_streaming.py), and
# the local Gemini server's chunk pause (a test server's knob, set by bench/streaming.py).
_.stop_reason  # unused attribute (agents/streaming.py:78)
_.stream_delay_s  # unused attribute (bench/streaming.py:75)
