"""Every default number in one place, each with where it comes from.

References are to the research notes in the project's ``shared/reference`` folder.
"""

from __future__ import annotations

# --- timeouts (seconds) -------------------------------------------------------------------------
# Connecting, or waiting for a free pooled connection. aiohttp counts the pool wait against
# ``connect``; with no bound a saturated pool would wait forever (sdk_design.md 2.3).
CONNECT_TIMEOUT = 10.0
# Idle time allowed between two reads (bytes of a body, or SSE events). A managed online endpoint
# answers 408 after ``request_timeout_ms`` (at most 180 s, 300 s for prompt flow), so a healthy
# non-streaming call always sends its first byte within 300 s (azure_protocol.md 1.4).
READ_TIMEOUT = 300.0
# One whole attempt, body included. The vendor SDKs use 600 s (sdk_design.md 1.2).
TOTAL_TIMEOUT = 600.0

# --- retries ------------------------------------------------------------------------------------
# Retries after the first attempt: openai-python and anthropic use 2, i.e. 3 attempts in total.
MAX_RETRIES = 2
# Backoff base and cap, as in the Stainless SDKs: 0.5 s doubling up to 8 s (sdk_design.md 1.1).
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
# The longest server-demanded wait (Retry-After family) we sleep through; a longer demand is raised
# at once. anthropic caps at 60 s, openai at 120 s; 60 s keeps a blocked caller's wait bounded.
MAX_RETRY_AFTER = 60.0

# --- connection pool ----------------------------------------------------------------------------
# aiohttp's own default. An endpoint answers 429 above 2 x max_concurrent_requests_per_instance x
# instances in flight (azure_protocol.md 1.5), usually far below this, so the pool is never the
# limit a user hits first; set ``max_connections`` to match your deployment.
MAX_CONNECTIONS = 100
# DNS answers are cached this long. Finite so a blue/green swap is picked up (sdk_design.md 2.2).
DNS_CACHE_TTL = 60

# --- protocol limits ----------------------------------------------------------------------------
# The platform keeps 40 characters of x-ms-client-request-id (azure_protocol.md 1.5).
MAX_CLIENT_REQUEST_ID = 40
# How much of an error body an exception keeps and shows.
ERROR_BODY_EXCERPT = 2_000
# How much of the endpoint's own error message goes into an exception's one-line message.
ERROR_MESSAGE_EXCERPT = 500
# How much of a 2xx body that is not the expected shape a ResponseFormatError shows: enough to recognise it.
RESPONSE_EXCERPT = 300
# How much of an error body we read at all, so a huge error page cannot exhaust memory.
MAX_ERROR_BODY = 64 * 1024
# Largest SSE event accepted; large tool-call arguments fit easily (sdk_design.md 2.6).
MAX_SSE_EVENT_BYTES = 16 * 1024 * 1024

# --- Entra ID -----------------------------------------------------------------------------------
# A token is refreshed this long before it expires, so no call leaves with a token that dies in flight
# (azure-identity itself refreshes 5 minutes early).
TOKEN_REFRESH_MARGIN = 300.0

# --- batches ------------------------------------------------------------------------------------
# Calls in flight in chat_many / `azureml-chat batch`. Enough to keep a serverless deployment busy,
# well under the pool (MAX_CONNECTIONS); a dedicated deployment answers 429 above 2 x
# max_concurrent_requests_per_instance (default 1) x instances in flight (azure_protocol.md 1.5), so
# small deployments want less.
BATCH_CONCURRENCY = 8

# --- several endpoints (endpoints=[...]) ---
# Consecutive failures (5xx, 408, connection errors, timeouts) that open an endpoint's circuit: a few, so one
# slow answer does not move traffic, as in Portkey's and LiteLLM's defaults (allowed_fails 3-5).
FAILURES_TO_OPEN = 5
# How long an open circuit keeps calls away before its probe; doubled after each failed probe, up to the cap.
CIRCUIT_COOLDOWN = 5.0
CIRCUIT_COOLDOWN_CAP = 300.0
# A 401/403/404 endpoint is set aside this long before a probe (a rotated key or redeployed model comes back).
UNHEALTHY_COOLDOWN = 60.0
# A 429 that gives no wait (no Retry-After, no reset header) cools its endpoint this long: Azure's quota
# windows are a minute, and a second is the shortest wait the services ask for.
POOL_THROTTLE_COOLDOWN = 1.0
# How often a call that waits for another call's probe of the same endpoint looks at its verdict: small
# against a probe's own round trip, large against the loop's overhead.
PROBE_POLL = 0.05

# --- the Azure AI Model Inference API (issue 15) ---
# The api-version added to a model-inference URL (.../chat/completions, .../models/chat/completions,
# .../completions) that carries none: the service answers 400 without one. The GA version of Microsoft Learn's
# "Azure AI Model Inference REST API reference" (reference-model-inference-api.md, whose requests are
# POST /chat/completions?api-version=2025-04-01) and of azure-rest-api-specs
# specification/ai/data-plane/ModelInference/stable/2025-04-01. The specs also hold a later stable 2025-05-01,
# whose chat request adds only user_security_context; the docs do not use it yet. azure-ai-inference still
# sends 2024-05-01-preview (azure_protocol.md 2.1).
MODEL_INFERENCE_API_VERSION = "2025-04-01"

# --- rate-limit headers and the release after a cooldown (issue 15) ---
# An answer whose x-ratelimit-remaining-requests/-tokens is 0 but that gives no reset pauses the client (or
# sets its pool member aside) this long. Azure OpenAI sends remaining-* without reset-* and meters requests over
# 1 s or 10 s slices (fleet.md 5.1); a second is its shortest slice, and the probe after it finds out the rest.
SPENT_QUOTA_PAUSE = 1.0
# The gradual release after a cooldown (_release.py) ends once a stage this large was answered without a 429,
# 255 calls since the cooldown (or twice what the last interrupted release got answered, when more): a window
# with that much room is past a herd's reach (a 10 s slice of the serverless default of 1,000 RPM holds 167,
# fleet.md 5.2), and a client under steady load is back on its fast path after 8 round trips.
RELEASE_OPEN = 128

# --- a rate limit shared through Redis (RateLimit(store="redis://...", name=...), issue 18) ---
# Each store operation's own timeout: a store round trip on one network is about 0.1 ms (fleet.md 2.1), so a
# quarter second means the store is down or frozen, and a call is delayed at most this long before the local
# limits take over.
STORE_TIMEOUT = 0.25
# While the store is unreachable, calls go on under the local limits, and the store is tried again this often.
STORE_RETRY = 5.0
# Connections to the store per event loop: admissions wait for one (up to STORE_TIMEOUT) rather than fail,
# as the async pool's default does when it is exhausted (fleet.md 2.4).
STORE_CONNECTIONS = 32
# A stage of a shared release that made no progress for this long (no place claimed, no answer) gives its
# unanswered places again: a process that died while admitted never answers, nor does one whose admission timed
# out on its side (a frozen Redis) and was then run by Redis. Longer than most answers take, short against a
# minute's quota; an answer slower than this only lets one more request go before its verdict.
STORE_STAGE_LAPSE = 5.0
# The state of a shared release that made no progress for this long is forgotten (its key expires).
STORE_RELEASE_TTL = 60.0

# --- batch runs on a distributed engine (azureml_chat.rows, azureml_chat.ray, issue 18) ---
# Calls in flight per worker: twice the batch helpers' default (BATCH_CONCURRENCY), since a worker is usually
# one of several sharing a quota, and well under the connection pool (MAX_CONNECTIONS).
PER_WORKER_CONCURRENCY = 16
# Rows per Ray Data batch: an actor that dies repeats the calls of the batches it had in flight (up to four per
# task), so small batches bound the repeats; 32 still keeps the per-worker semaphore (16) busy.
RAY_BATCH_SIZE = 32
# CPUs reserved per Ray actor: the work is waiting on the network, and a 2-CPU machine must keep Ray Data's read
# and write tasks running beside the actors.
RAY_NUM_CPUS = 0.25
